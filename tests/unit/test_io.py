"""The broker's socket I/O, compiled and pure-Python paths alike (real inproc sockets)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
import zmq

from zmqserver import _io


@pytest.fixture
def pair(ctx):
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.setsockopt(zmq.LINGER, 0)
    router.bind("inproc://io-test")
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.ROUTING_ID, b"peer")
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect("inproc://io-test")
    yield router, dealer
    router.close()
    dealer.close()


def test_compiled_path_is_built_here():
    """CI has a C compiler: a silently failed optional build must not go unnoticed."""
    if os.environ.get("ZMQSERVER_PURE_PYTHON"):
        pytest.skip("pure-Python path forced by ZMQSERVER_PURE_PYTHON")
    assert _io.COMPILED


def test_batch_receive_and_send_round_trip(pair):
    router, dealer = pair
    assert _io.recv_batch(router, 10) == []
    big = os.urandom(70_000)
    for i in range(3):
        dealer.send_multipart([b"", b"n%d" % i, big])
    assert router.poll(5000)
    batch = []
    while len(batch) < 3:
        assert router.poll(5000)
        batch += _io.recv_batch(router, 2)
    for i, frames in enumerate(batch):
        assert frames[:3] == [b"peer", b"", b"n%d" % i]
        assert len(frames[3]) == len(big)
        assert bytes(frames[3]) == big
        assert frames[3] == big
        assert frames[3][:4] == big[:4]
    # A large received frame is sent back as is.
    assert not _io.send_batch((router,), [(0, b"peer", batch[0][1:])])
    assert dealer.poll(5000)
    assert dealer.recv_multipart() == [b"", b"n0", big]


def test_send_to_unknown_peer_is_reported_without_sending(pair):
    router, dealer = pair
    assert _io.send_batch((router,), [(0, b"nobody", [b"x"])]) == [(0, zmq.EHOSTUNREACH)]
    assert not dealer.poll(50)


@pytest.fixture
def two_routers(ctx):
    """Two ROUTERs (ports 0 and 1) with one DEALER peer each, as the broker has."""
    sockets = []
    for port in range(2):
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(f"inproc://io-batch-{port}")
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.ROUTING_ID, b"peer%d" % port)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"inproc://io-batch-{port}")
        sockets.append((router, dealer))
    # A ROUTER learns a peer's routing id from its first message.
    for router, dealer in sockets:
        dealer.send(b"hello")
        assert router.poll(5000)
        assert router.recv_multipart() == [dealer.getsockopt(zmq.ROUTING_ID), b"hello"]
    yield sockets
    for router, dealer in sockets:
        router.close()
        dealer.close()


def test_send_batch_sends_in_order_on_each_port_and_reports_the_undeliverable(two_routers):
    (front, front_peer), (back, back_peer) = two_routers
    big = os.urandom(70_000)
    dealer = back_peer
    dealer.send_multipart([b"big", big])
    assert back.poll(5000)
    [received] = _io.recv_batch(back, 1)
    outbox = [
        (0, b"peer0", [b"", b"a"]),
        (1, b"nobody", [b"lost"]),
        (1, b"peer1", [b"b", b"c"]),
        (0, b"gone", [b"", b"x"]),
        (0, b"peer0", [b"", bytearray(b"d")]),
        (1, b"peer1", received[1:]),  # a large received frame goes back without a copy
    ]
    failed = _io.send_batch((front, back), outbox)
    assert failed == [(1, zmq.EHOSTUNREACH), (3, zmq.EHOSTUNREACH)]
    assert front_peer.poll(5000)
    assert front_peer.recv_multipart() == [b"", b"a"]
    assert front_peer.recv_multipart() == [b"", b"d"]
    assert back_peer.poll(5000)
    assert back_peer.recv_multipart() == [b"b", b"c"]
    assert back_peer.recv_multipart() == [b"big", big]
    assert not front_peer.poll(50)
    assert not _io.send_batch((front, back), [])


def test_send_batch_reports_a_full_pipe_as_eagain(ctx):
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.setsockopt(zmq.SNDHWM, 1)
    router.setsockopt(zmq.LINGER, 0)
    router.bind("inproc://io-full")
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.ROUTING_ID, b"slow")
    dealer.setsockopt(zmq.RCVHWM, 1)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect("inproc://io-full")
    try:
        dealer.send(b"hello")
        assert router.poll(5000)
        router.recv_multipart()
        failed = _io.send_batch((router,), [(0, b"slow", [b"%d" % i]) for i in range(10)])
        assert failed, "the peer never reads: some messages must meet a full pipe"
        assert all(err == zmq.EAGAIN for _, err in failed)
        sent = 10 - len(failed)
        assert [index for index, _ in failed] == list(range(sent, 10))
        assert [dealer.recv_multipart() for _ in range(sent)] == [[b"%d" % i] for i in range(sent)]
    finally:
        router.close()
        dealer.close()


def test_send_batch_raises_on_a_frame_that_is_not_bytes(pair):
    router, _ = pair
    with pytest.raises(TypeError):
        _io.send_batch((router,), [(0, b"peer", ["text"])])


def test_receiver_returns_none_then_whole_messages_of_bytes(pair):
    router, dealer = pair
    recv = _io.receiver(dealer)
    assert recv() is None  # nothing waiting: a value, not an exception
    big = os.urandom(70_000)  # over INLINE_MAX: a worker still gets bytes, not a Frame
    router.send_multipart([b"peer", b"", b"job", big])
    router.send_multipart([b"peer", b"second"])
    assert dealer.poll(1000)
    first = recv()
    assert first == [b"", b"job", big]
    assert first is not None
    assert all(type(frame) is bytes for frame in first)
    assert recv() == [b"second"]
    assert recv() is None


def test_sender_sends_whole_messages_in_order(pair):
    router, dealer = pair
    send = _io.sender(dealer)
    big = os.urandom(70_000)
    send([b"", b"reply", big])
    send([b"one"])
    assert router.poll(1000)
    assert router.recv_multipart() == [b"peer", b"", b"reply", big]
    assert router.recv_multipart() == [b"peer", b"one"]


def test_sender_waits_for_a_peer_rather_than_dropping_the_message(ctx):
    """A worker's reply must not be lost to a momentary EAGAIN (a full pipe, no peer yet)."""
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.IMMEDIATE, 1)  # no pipe, so a DONTWAIT send fails, until connected
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect("inproc://io-late")
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    timer = threading.Timer(0.2, router.bind, ("inproc://io-late",))
    timer.start()
    try:
        _io.sender(dealer)([b"", b"reply"])  # blocks until the bind above
        timer.join()  # the router is the timer thread's until its bind returns
        assert router.poll(2000)
        assert router.recv_multipart()[1:] == [b"", b"reply"]
    finally:
        timer.join()
        dealer.close()
        router.close()


def test_a_libzmq_failure_other_than_undeliverable_raises_zmq_error(ctx):
    """A REQ socket must read before it sends again (EFSM): not a peer that is gone or a full
    pipe, so not reported in the list but raised, as pyzmq would, on both paths."""
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    rep.bind("inproc://io-efsm")
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect("inproc://io-efsm")
    try:
        assert not _io.send_batch((req,), [(0, b"first", [])])
        with pytest.raises(zmq.ZMQError) as caught:
            _io.send_batch((req,), [(0, b"second", [])])
        assert caught.value.errno == zmq.EFSM
    finally:
        req.close()
        rep.close()


@pytest.mark.parametrize("with_user_id", [False, True])
def test_batch_receiver_is_recv_batch_bound_to_its_socket(pair, with_user_id):
    router, dealer = pair
    receive = _io.batch_receiver(router, with_user_id=with_user_id)
    assert receive(10) == []
    for i in range(3):
        dealer.send_multipart([b"m", b"%d" % i])
    batch = []
    while len(batch) < 3:
        router.poll(5000)
        batch += receive(2)
    if with_user_id:
        assert [user_id for _, user_id in batch] == [None] * 3  # a NULL-mechanism connection
        batch = [frames for frames, _ in batch]
    assert batch == [[b"peer", b"m", b"%d" % i] for i in range(3)]


def test_batch_receiver_with_peer_address_over_tcp(ctx):
    """pass_client_info: each message comes with its User-Id and Peer-Address, the client's IP
    address on tcp (both paths; inproc has none, so this uses loopback tcp)."""
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.ROUTING_ID, b"peer")
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    try:
        receive = _io.batch_receiver(router, max_frames=4, with_peer_address=True)
        for i in range(3):
            dealer.send_multipart([b"m", b"%d" % i, b"x", b"y", b"z"])
        batch = []
        while len(batch) < 3:
            assert router.poll(5000)
            batch += receive(2)
        assert batch == [([b"peer", b"m", b"%d" % i, b"x"], None, b"127.0.0.1") for i in range(3)]
    finally:
        router.close()
        dealer.close()


# -- max_frames: a long message is cut, its rest discarded unread (issue 18, item 6) ------------


@pytest.mark.parametrize("with_user_id", [False, True])
def test_recv_batch_keeps_max_frames_and_discards_the_rest(pair, with_user_id):
    router, dealer = pair
    dealer.send_multipart([b"short", b"1"])
    dealer.send_multipart([b"f%d" % i for i in range(10_000)])
    dealer.send_multipart([b"after", b"2"])
    dealer.send_multipart([b"a", b"b", b"c", b"d"])  # exactly the limit: whole
    receive = _io.batch_receiver(router, with_user_id=with_user_id, max_frames=4)
    batch = []
    while len(batch) < 4:
        assert router.poll(5000)
        batch += receive(10)
    if with_user_id:
        assert [user_id for _, user_id in batch] == [None] * 4
        batch = [frames for frames, _ in batch]
    # The routing id counts: the caller asks for one frame more than it accepts.
    assert batch == [
        [b"peer", b"short", b"1"],
        [b"peer", b"f0", b"f1", b"f2"],  # cut: the other 9,997 frames were read and dropped
        [b"peer", b"after", b"2"],  # the next message is whole: the cut kept the framing
        [b"peer", b"a", b"b", b"c"],
    ]
    assert receive(10) == []
    assert _io.recv_batch(router, 10) == []


def test_recv_batch_makes_no_object_for_a_discarded_frame(pair):
    """A million empty frames must cost the broker what a message of max_frames does: the
    frames past the limit are freed by libzmq as they are read, nothing is made of them."""
    import tracemalloc

    router, dealer = pair
    count = 200_000
    dealer.send_multipart([b"ab"] * count)  # 2 bytes: not a cached 0- or 1-byte bytes object
    assert router.poll(5000)
    tracemalloc.start()
    try:
        [frames] = _io.recv_batch(router, 1, max_frames=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == [b"peer"] + [b"ab"] * 9
    # A bytes object and a list slot are about 45 bytes a frame: 9 MB had they been made.
    assert peak < 64 * 1024, f"{peak} bytes allocated for a message cut at 10 frames"


def test_compiled_recv_batch_checks_its_arguments(pair):
    """The C function reads its (vectorcall) arguments by hand: a mistake must be a TypeError,
    never a read of whatever is in memory."""
    if not _io.COMPILED:
        pytest.skip("the compiled path only")
    router, dealer = pair
    recv_batch = _io._fast.recv_batch
    handle = router.underlying
    dealer.send(b"m")
    router.poll(5000)
    assert recv_batch(max=5, handle=handle, with_user_id=True) == [([b"peer", b"m"], None)]
    for args, kwargs in [
        ((handle,), {}),
        ((), {"max": 1}),
        ((handle, 1), {"max": 1}),
        ((handle, 1), {"nonsense": 1}),
        ((handle, 1, False, 4, False, 6), {}),
        ((handle, 1, False, 4, False), {"with_peer_address": True}),
        ((handle, "x"), {}),
        ((handle, 1), {"max_frames": "x"}),
        ((handle, 1, False, 2), {"max_frames": 2}),
    ]:
        with pytest.raises(TypeError):
            recv_batch(*args, **kwargs)
    with pytest.raises(ValueError, match="max_frames"):
        recv_batch(handle, 1, max_frames=-1)
    with pytest.raises(TypeError):
        _io._fast.send_batch([handle], [])  # handles must be a tuple


def test_signals_during_socket_calls_are_not_errors(pair):
    """A signal landing while libzmq reads its command pipe makes a call fail with EINTR; pyzmq
    retries, and so must we: the broker's loop must not die of a SIGCHLD during a stop."""
    router, dealer = pair
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
    try:
        received = 0
        for i in range(20_000):
            dealer.send(b"%d" % i)
            while True:
                batch = _io.recv_batch(router, 10)
                received += len(batch)
                if received > i:
                    break
            assert not _io.send_batch((router,), [(0, b"peer", [b"x"])])
            assert dealer.recv() == b"x"
        assert received == 20_000
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    assert fired  # the signals did arrive during the calls


def test_poller_names_what_is_readable_by_bit(pair):
    router, dealer = pair
    r, w = socket.socketpair()
    try:
        poll = _io.poller([router], [r.fileno()])
        assert poll(0) == 0
        started = time.monotonic()
        assert poll(50) == 0  # the timeout passed
        assert time.monotonic() - started >= 0.04
        dealer.send(b"m")
        assert poll(5000) == 0b01
        w.send(b"x")
        assert poll(5000) == 0b11
        router.recv_multipart()
        assert poll(5000) == 0b10
    finally:
        r.close()
        w.close()


def test_poller_returns_when_a_signal_comes(pair):
    """As the broker waits: a signal's handler runs, and the wait ends (through EINTR, or the
    wake-up fd the supervisor registers) instead of sleeping out its timeout."""
    router, _ = pair
    r, w = socket.socketpair()
    r.setblocking(False)
    w.setblocking(False)
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    old_fd = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
    try:
        poll = _io.poller([router], [r.fileno()])
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        started = time.monotonic()
        wait = 10.0
        mask = poll(int(wait * 1000))
        assert time.monotonic() - started < wait / 2  # the signal ended it, not its timeout
        assert fired
        assert mask in (0, 0b10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.set_wakeup_fd(old_fd)
        signal.signal(signal.SIGALRM, previous)
        r.close()
        w.close()


def test_a_signal_pending_before_the_poll_ends_it_at_once(pair):
    """A signal that came while compiled code ran has not had its handler run yet (that waits
    for a bytecode boundary): the poll must run it first, not block its whole timeout (Ctrl-C
    in a compiled client waiting for a reply). Here the signal comes during a C loop that
    checks no signals (PBKDF2), and ``map``/``operator.call`` go on to the poll with no
    bytecode in between."""
    import functools
    import hashlib
    import operator

    router, _ = pair
    poll = _io.poller([router], [])

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupted)
    steps = [
        functools.partial(hashlib.pbkdf2_hmac, "sha256", b"p", b"s", 400_000),  # about 0.3 s
        functools.partial(poll, 20_000),
    ]
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            list(map(operator.call, steps))
        assert time.monotonic() - started < 10.0  # the handler ran before the wait, not after
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_compiled_poll_checks_its_arguments(pair):
    if not _io.COMPILED:
        pytest.skip("the compiled path only")
    router, _ = pair
    poll = _io._fast.poll
    for args in [([router.underlying], (), 0), ((router.underlying,), (), "x"), ((), ())]:
        with pytest.raises(TypeError):
            poll(*args)
    with pytest.raises(ValueError, match="at most"):
        poll((router.underlying,) * 17, (), 0)
