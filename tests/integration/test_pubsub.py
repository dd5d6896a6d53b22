"""Pub-sub (CHP, RFC 12) against a real server: snapshots, live updates, gaps, ttl, HUGZ."""

from __future__ import annotations

import struct

import pytest
import zmq
from tests.helpers import wait_until
from tests.integration.pubsub_helpers import start_pubsub

from zmqserver import Publisher, Subscriber

pytestmark = pytest.mark.timeout(90)


def drain(sub: Subscriber, until: object, timeout: float = 10.0) -> list:
    """Updates from ``sub`` until ``until(update)`` is true; fails after ``timeout``."""
    got = []
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        update = sub.recv(timeout=0.5)
        if update is None:
            continue
        got.append(update)
        if until(update):
            return got
    pytest.fail(f"timed out; got {got}")


def test_late_joiner_gets_the_snapshot_then_live_updates_in_order(start_server, ctx):
    server, endpoint = start_pubsub(start_server)
    with Publisher(endpoint, context=ctx) as pub:
        for i in range(50):
            pub.publish(f"/cfg/k{i}", f"v{i}")
        pub.publish("/other/x", "no")
        with Subscriber(endpoint, "/cfg/", context=ctx) as first:
            wait_until(lambda: first.recv(0.1) is not None and len(first.state) == 50, 10)
        with Subscriber(endpoint, "/cfg/", context=ctx) as sub:
            snap = drain(sub, lambda u: len(sub.state) == 50)
            assert all(u.snapshot for u in snap)
            assert sub.state[b"/cfg/k7"] == b"v7"
            assert b"/other/x" not in sub.state
            for i in range(100):
                pub.publish("/cfg/live", str(i))
            live = drain(sub, lambda u: u.value == b"99")
            values = [int(u.value) for u in live if u.key == b"/cfg/live"]
            assert values == list(range(values[0], 100))
            seqs = [u.sequence for u in live]
            assert seqs == sorted(seqs)
            assert sub.gaps == 0


def test_delete_and_ttl_expiry_publish_deletes(start_server, ctx):
    server, endpoint = start_pubsub(start_server)
    with Publisher(endpoint, context=ctx) as pub, Subscriber(endpoint, "", context=ctx) as sub:
        pub.publish("/a", "1")
        pub.publish("/short", "lived", ttl=0.5)
        drain(sub, lambda u: u.key == b"/short" and not u.deleted)
        pub.delete("/a")
        drain(sub, lambda u: u.key == b"/a" and u.deleted)
        drain(sub, lambda u: u.key == b"/short" and u.deleted, timeout=5)
        assert b"/a" not in sub.state
        assert b"/short" not in sub.state
    # A late joiner sees neither.
    with Subscriber(endpoint, "/", context=ctx) as late:
        assert late.recv(1.0) is None or b"/a" not in late.state
        assert b"/short" not in late.state


def test_a_plain_sub_socket_gets_kvpub_frames_and_hugz(start_server, ctx):
    server, endpoint = start_pubsub(start_server)
    base = int(endpoint.rsplit(":", 1)[1])
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{base + 1}")
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(f"tcp://127.0.0.1:{base + 2}")
    keys = []
    for i in range(100):  # a raw PUB drops until connected: resend until one arrives
        pub.send_multipart([b"plain", b"", b"", b"", b"hello %d" % i])
        if sub.poll(100):
            frames = sub.recv_multipart()
            keys.append(frames[0])
            if frames[0] == b"plain":
                break
    assert frames[0] == b"plain"
    assert len(frames) == 5
    (sequence,) = struct.unpack("!q", frames[1])
    assert sequence > 0
    assert frames[4].startswith(b"hello")
    while frames[0] != b"HUGZ":
        assert sub.poll(3000), "no HUGZ within 3 s"
        frames = sub.recv_multipart()
    assert frames[1] == b"\0" * 8
    sub.close()
    pub.close()
