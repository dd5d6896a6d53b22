"""The broker's I/O shell on real inproc sockets: sending the dispatcher's outbox, logging drops."""

from __future__ import annotations

import logging
import math
import socket
import time
from collections import deque

import pytest
import zmq
from tests.helpers import limits

from zmqserver._wakeup import Wake
from zmqserver.broker import Dispatcher, Port
from zmqserver.broker import shell as broker_module
from zmqserver.broker.shell import REPEAT_LOG_INTERVAL, Broker


@pytest.fixture
def broker(ctx, request):
    name = request.node.name
    shell = Broker(
        ctx, Dispatcher(b"echo", limits=limits()), f"inproc://{name}-front", f"inproc://{name}-back"
    )
    shell.frontend.setsockopt(zmq.LINGER, 0)
    shell.backend.setsockopt(zmq.LINGER, 0)
    yield shell
    shell.close()


def drop_lines(caplog):
    return [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]


def test_replies_to_vanished_clients_are_logged_once_then_counted(broker, caplog):
    """The first drop is logged at once with its client; the next ones as one count per
    interval, so a crowd of vanished clients cannot flood the log (or the broker's CPU)."""
    caplog.set_level(logging.INFO, logger="zmqserver.broker")
    assert broker.next_deadline() == math.inf
    for i in range(3):
        broker.dispatcher.outbox.append((Port.FRONTEND, b"gone%d" % i, [b"", b"reply"]))
    broker.flush()
    assert broker.dropped_replies == 3
    assert drop_lines(caplog) == [f"reply to client {b'gone0'.hex()} dropped: No route to host"]

    due = broker.next_deadline()
    assert due < math.inf
    broker.on_tick(due - 0.001)
    assert len(drop_lines(caplog)) == 1
    broker.on_tick(due)
    assert drop_lines(caplog)[1:] == [
        f"2 more replies to vanished clients dropped in the last {REPEAT_LOG_INTERVAL:.0f}s "
        "(3 in all)"
    ]
    assert broker.next_deadline() == math.inf

    # Within the next interval, drops are still counted, and what is left is logged on close.
    broker.dispatcher.outbox.append((Port.FRONTEND, b"gone3", [b"", b"reply"]))
    broker.flush()
    assert len(drop_lines(caplog)) == 2
    assert broker.next_deadline() == pytest.approx(due + REPEAT_LOG_INTERVAL, abs=1.0)
    broker.close()
    assert drop_lines(caplog)[2].startswith("1 more replies to vanished clients dropped")


def test_a_drop_after_a_quiet_interval_is_logged_at_once(broker, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="zmqserver.broker")
    clock = [1000.0]
    monkeypatch.setattr(broker_module.time, "monotonic", lambda: clock[0])
    broker.dispatcher.outbox.append((Port.FRONTEND, b"a", [b"", b"reply"]))
    broker.flush()
    clock[0] += REPEAT_LOG_INTERVAL
    broker.dispatcher.outbox.append((Port.FRONTEND, b"b", [b"", b"reply"]))
    broker.flush()
    assert [line.split(" dropped")[0] for line in drop_lines(caplog)] == [
        f"reply to client {b'a'.hex()}",
        f"reply to client {b'b'.hex()}",
    ]
    assert broker.next_deadline() == math.inf


def test_flush_sends_a_job_and_its_reply_through_both_ports(broker, ctx):
    client = ctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.setsockopt(zmq.ROUTING_ID, b"client")
    client.connect(broker.endpoints()[0])
    worker = ctx.socket(zmq.DEALER)
    worker.setsockopt(zmq.LINGER, 0)
    worker.setsockopt(zmq.ROUTING_ID, b"worker")
    worker.connect(broker.endpoints()[1])
    try:
        worker.send_multipart([b"MDPW02", b"\x01", b"echo"])  # READY
        assert broker.backend.poll(5000)
        assert broker.read_backend(0.0) == 1
        client.send_multipart([b"", b"hello"])
        assert broker.frontend.poll(5000)
        assert broker.read_frontend(0.0) == 1
        broker.flush()
        assert worker.poll(5000)
        request = worker.recv_multipart()
        assert request[:2] == [b"MDPW02", b"\x02"]
        assert request[-1] == b"hello"
        worker.send_multipart([b"MDPW02", b"\x04", *request[2:]])  # FINAL, echoing the body
        assert broker.backend.poll(5000)
        assert broker.read_backend(0.0) == 1
        broker.flush()
        assert client.poll(5000)
        assert client.recv_multipart()[-1] == b"hello"
    finally:
        client.close()
        worker.close()


# -- Broker.serve: the event loop's message-only turns, and when they hand back -------------------


@pytest.fixture
def wake():
    r, w = socket.socketpair()
    r.setblocking(False)
    yield r, w
    r.close()
    w.close()


def _items(broker, fd):
    """The master's other items: here, the signal wake-up fd."""
    return [(fd, zmq.POLLIN)]


def _serve(broker, items, until, pending, seen, watch_load):
    """Broker.serve with ``pending`` signals (the Wake flag) and the autoscaler's last look
    ``seen`` (watching idle/queued changes too if ``watch_load``), as the master sets them."""
    wake = Wake()
    wake.pending = bool(pending)
    broker.dispatcher.scale_seen, broker.dispatcher.watch_load = seen, watch_load
    return broker.serve(items, until, wake)


def test_serve_answers_requests_and_returns_at_its_deadline(broker, ctx, wake):
    """Messages are handled inside serve (here: a plain request queued for a worker that does
    not exist yet, then answered by one that registers); only the deadline ends it."""
    r, _ = wake
    client = ctx.socket(zmq.REQ)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(broker.frontend.getsockopt_string(zmq.LAST_ENDPOINT))
    client.send(b"hi")
    seen = broker.dispatcher.scale_inputs()
    started = time.monotonic()
    assert _serve(broker, _items(broker, r.fileno()), started + 0.2, deque(), seen, False) == []
    assert time.monotonic() - started >= 0.2
    assert broker.dispatcher.waiting() == 1  # read and queued while serve ran
    client.close()


def test_serve_hands_back_at_once_for_signals_kills_and_new_workers(broker, ctx, wake):
    r, _ = wake
    items = _items(broker, r.fileno())
    seen = broker.dispatcher.scale_inputs()
    far = time.monotonic() + 30
    # A signal already pending (its handler ran between two turns).
    assert _serve(broker, items, far, deque([15]), seen, True) == []
    # The autoscaler's last look saw another worker count.
    assert _serve(broker, items, far, deque(), (seen[0] + 1, *seen[1:]), False) == []
    # Idle/queued changes only while the autoscaler is not already due to look (watch_load).
    other = (seen[0], seen[1] + 1, seen[2])
    assert _serve(broker, items, far, deque(), other, True) == []
    # A worker registers while serve runs: it returns for the autoscaler.
    worker = ctx.socket(zmq.DEALER)
    worker.setsockopt(zmq.LINGER, 0)
    worker.connect(broker.backend.getsockopt_string(zmq.LAST_ENDPOINT))
    worker.send_multipart([b"MDPW02", b"\x01", b"echo"])
    assert _serve(broker, items, far, deque(), seen, False) == []
    assert time.monotonic() < far  # it returned for the registration, not at the end of its wait
    assert broker.dispatcher.scale_inputs()[0] == seen[0] + 1
    assert len(broker.dispatcher.workers) == 1
    worker.close()


def test_serve_returns_what_else_became_readable(broker, wake):
    r, w = wake
    w.send(b"\x0f")  # what signal.set_wakeup_fd writes
    seen = broker.dispatcher.scale_inputs()
    others = _serve(broker, _items(broker, r.fileno()), time.monotonic() + 30, deque(), seen, True)
    assert others == [r.fileno()]


def test_serve_handles_inline_sockets_itself_and_takes_their_deadline(broker, ctx, wake):
    """An inline socket's messages are handled inside serve (no return to the master); the
    deadline its handler returns ends the wait early; the master's other items still return."""
    r, w = wake
    pull = ctx.socket(zmq.PULL)
    push = ctx.socket(zmq.PUSH)
    for sock in (pull, push):
        sock.setsockopt(zmq.LINGER, 0)
    pull.bind("inproc://inline-test")
    push.connect("inproc://inline-test")
    got = []
    stop_at = [math.inf]

    def handle(now):
        while True:
            try:
                got.append(pull.recv(zmq.NOBLOCK))
            except zmq.Again:
                return stop_at[0]

    seen = broker.dispatcher.scale_inputs()
    wake_flag = Wake()
    broker.dispatcher.scale_seen, broker.dispatcher.watch_load = seen, False
    for i in range(3):
        push.send(b"%d" % i)
    started = time.monotonic()
    assert (
        broker.serve(_items(broker, r.fileno()), started + 0.3, wake_flag, [(pull, handle)]) == []
    )
    assert got == [b"0", b"1", b"2"]
    assert time.monotonic() - started >= 0.3  # handled inline: only the deadline ended it
    stop_at[0] = time.monotonic() + 0.05  # e.g. a ttl that runs out before the master's deadline
    push.send(b"3")
    started = time.monotonic()
    assert broker.serve(_items(broker, r.fileno()), started + 30, wake_flag, [(pull, handle)]) == []
    assert got[-1] == b"3"
    assert time.monotonic() - started < 10
    w.send(b"\x0f")
    assert broker.serve(
        _items(broker, r.fileno()), time.monotonic() + 30, wake_flag, [(pull, handle)]
    ) == [r.fileno()]
    pull.close()
    push.close()


# -- the dispatcher's events: logged by the shell, repeats throttled -----------------------------


def bad_request_lines(caplog):
    return [r.getMessage() for r in caplog.records if "bad request" in r.getMessage()]


def test_the_dispatchers_events_are_logged_by_the_shell(broker, caplog):
    caplog.set_level(logging.INFO, logger="zmqserver.broker")
    broker.dispatcher.on_client(b"bad", [b"", b"MDPC02", b"\x09"], 0.0)  # not a request
    assert broker.dispatcher.events  # reported, not logged, by the core
    assert not caplog.records
    broker.flush()
    assert broker.dispatcher.events == []
    (line,) = bad_request_lines(caplog)  # and its error reply's drop: the client is not there
    assert line.startswith(f"bad request from client {b'bad'.hex()}: ")


def broke_lines(caplog):
    return [r.getMessage() for r in caplog.records if "broke the protocol" in r.getMessage()]


def test_repeats_about_one_peer_are_counted_others_logged(broker, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="zmqserver.broker")
    clock = [1000.0]
    monkeypatch.setattr(broker_module.time, "monotonic", lambda: clock[0])
    for _ in range(5):
        broker.dispatcher.on_worker(b"noisy", [b"", b"MDPW02", b"\x09"], 0.0)  # no such command
        broker.flush()
    broker.dispatcher.on_worker(b"other", [b"", b"MDPW02", b"\x09"], 0.0)
    broker.flush()
    assert [line.split(" broke")[0] for line in broke_lines(caplog)] == [
        "worker b'noisy'",
        "worker b'other'",
    ]
    assert broker.next_deadline() == 1000.0 + REPEAT_LOG_INTERVAL
    clock[0] += REPEAT_LOG_INTERVAL
    broker.on_tick(clock[0])
    assert broke_lines(caplog)[-1].startswith(
        f"4 more in the last {REPEAT_LOG_INTERVAL:.0f}s like: worker b'noisy' broke the protocol"
    )
    assert broker.next_deadline() == math.inf


def test_bad_requests_from_many_clients_are_one_flood(caplog):
    """Issue 18, item 11: 100,000 malformed requests wrote 100,000 WARNING lines, as each came
    from another routing id and the throttle was per peer. Now: the first line of an interval
    as is, then one count line per interval, whoever sent them."""
    from zmqserver.broker.events import BadRequest
    from zmqserver.broker.shell import EventLog

    caplog.set_level(logging.INFO, logger="zmqserver.broker")
    events = EventLog(logging.getLogger("zmqserver.broker"), interval=10.0)
    for i in range(1000):
        events.record(BadRequest(b"c%d" % i, "empty message"), 100.0 + i / 1000)
    assert [r.getMessage() for r in caplog.records] == [
        f"bad request from client {b'c0'.hex()}: empty message"
    ]
    assert events.next_deadline() == 110.0
    events.on_tick(109.9)
    assert len(caplog.records) == 1
    events.on_tick(110.0)
    assert caplog.records[-1].getMessage() == (
        "999 more bad requests in the last 10s (1000 in all); "
        f"the last: bad request from client {b'c999'.hex()}: empty message"
    )
    assert caplog.records[-1].levelno == logging.WARNING
    # The flood goes on: a line per interval, never one per request.
    for i in range(500):
        events.record(BadRequest(b"d%d" % i, "empty message"), 111.0 + i / 100)
    events.on_tick(120.0)
    assert len(caplog.records) == 3
    assert caplog.records[-1].getMessage().startswith("500 more bad requests in the last 10s")
    # Quiet for an interval: the next one is logged at once again.
    events.on_tick(130.0)
    events.record(BadRequest(b"late", "empty message"), 131.0)
    assert caplog.records[-1].getMessage().startswith("bad request from client")
    assert len(caplog.records) == 4


def test_a_jobs_own_events_are_never_throttled(caplog):
    from zmqserver.broker.events import JobRetried
    from zmqserver.broker.shell import EventLog

    caplog.set_level(logging.INFO, logger="zmqserver.broker")
    events = EventLog(logging.getLogger("zmqserver.broker"))
    for attempt in (2, 3):
        events.record(JobRetried(7, "it disconnected", attempt), 0.0)
    assert [r.getMessage() for r in caplog.records] == [
        "job 7: worker lost (it disconnected); retrying (attempt 2)",
        "job 7: worker lost (it disconnected); retrying (attempt 3)",
    ]
    assert events.next_deadline() == math.inf
