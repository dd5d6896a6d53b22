"""Pub-sub (CHP, RFC 12) against a real server: snapshots, live updates, gaps, ttl, HUGZ."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from tests.helpers import wait_until
from tests.integration.pubsub_helpers import start_pubsub

import zmqserver
from zmqserver import AsyncSubscriber, Publisher, Subscriber

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.timeout(90), pytest.mark.compiled_pass]


def drain(sub: Subscriber, until: object, timeout: float = 10.0) -> list:
    """Updates from ``sub`` until ``until(update)`` is true; fails after ``timeout``."""
    got = []
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


def test_a_stopped_subscriber_past_its_hwm_sees_the_gap_and_resyncs(start_server, ctx, tmp_path):
    server, endpoint = start_pubsub(start_server, "--pubsub-hwm", "20")
    out = tmp_path / "snail.json"
    snail = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.pubsub_snail", endpoint, "/s/", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert snail.stdout is not None
        assert snail.stdout.readline().strip() == b"ready"
        os.kill(snail.pid, signal.SIGSTOP)
        with Publisher(endpoint, context=ctx) as pub:
            blob = "x" * 4096
            for i in range(5000):  # 20 MB: more than the socket buffers and both HWMs
                pub.publish(f"/s/k{i % 97}", f"{i}:{blob}")
            pub.publish("/s/deleted", "soon")
            pub.publish("/s/deleted", "")
            os.kill(snail.pid, signal.SIGCONT)
            deadline = time.monotonic() + 30
            while snail.poll() is None and time.monotonic() < deadline:
                pub.publish("/s/done", "1")
                time.sleep(0.2)
        assert snail.wait(10) == 0
    finally:
        if snail.poll() is None:
            snail.kill()
            snail.wait(5)
        if snail.stdout is not None:
            snail.stdout.close()
    result = json.loads(out.read_text())
    assert result["gaps"] >= 1
    assert result["snapshots"] >= 2
    with Subscriber(endpoint, "/s/", context=ctx) as fresh:
        wait_until(lambda: fresh.recv(0.2) is not None and fresh.snapshots, 10)
        while fresh.recv(0.3) is not None:
            pass
        broker_state = {k.decode(): v.decode() for k, v in fresh.state.items()}
    assert result["state"] == broker_state
    assert "/s/deleted" not in broker_state
    assert len(broker_state) == 98  # 97 keys and done


def test_apps_publish_from_forked_workers_and_worker_events_are_published(start_server, ctx):
    server, endpoint = start_pubsub(start_server, workers=2)
    # Both registered (idle at the broker), or one alone may take all 40 jobs (LRU).
    wait_until(lambda: server.status()["services"][0]["workers"]["idle"] == 2, 15, "2 idle workers")
    with Subscriber(endpoint, "", context=ctx) as sub:
        pids = set()
        client = zmqserver.Client(server.frontend, context=ctx, timeout=10)
        try:
            for i in range(40):
                pids.add(client.request(b"/app/k%d=v%d" % (i, i)))
            client.request(b"/app/ttl=x;0.3")
        finally:
            client.close()
        assert len(pids) == 2  # both workers published
        wait_until(lambda: sub.recv(0.1) is not None and b"/app/k39" in sub.state, 10)
        assert sub.state[b"/app/k0"] == b"v0"
        workers = [key for key in sub.state if key.startswith(b"$zmqserver/workers/default/")]
        assert sorted(int(key.rsplit(b"/", 1)[1]) for key in workers) == sorted(
            int(pid) for pid in pids
        )
        assert all(json.loads(sub.state[key])["event"] == "registered" for key in workers)
        wait_until(lambda: sub.recv(0.1) is not None and b"/app/ttl" not in sub.state, 5)
        wait_until(
            lambda: (
                sub.recv(0.1) is not None
                and json.loads(sub.state.get(b"$zmqserver/jobs/*/replied", b"{}")).get("total", 0)
                >= 41
            ),
            5,
        )


def test_a_silent_server_is_noticed_and_the_subscriber_resyncs_after(start_server, ctx):
    server, endpoint = start_pubsub(start_server)
    with (
        Publisher(endpoint, context=ctx) as pub,
        Subscriber(endpoint, "/h/", silence=1.5, context=ctx) as sub,
    ):
        pub.publish("/h/a", "1")
        wait_until(lambda: sub.recv(0.1) is not None and b"/h/a" in sub.state, 10)
        time.sleep(2.5)  # idle: only HUGZ keep the subscriber content
        sub.recv(0.1)
        assert sub.silences == 0
        server.signal(signal.SIGSTOP)
        try:
            wait_until(lambda: sub.recv(0.1) is None and sub.silences >= 1, 10)
        finally:
            server.signal(signal.SIGCONT)
        pub.publish("/h/b", "2")
        wait_until(lambda: sub.recv(0.1) is not None or b"/h/b" in sub.state, 10)
        assert sub.state == {b"/h/a": b"1", b"/h/b": b"2"}


def test_a_client_written_from_rfc_12_with_raw_sockets(start_server, ctx):
    """The guide's clonecli5, in raw frames: subscribe, ICANHAZ?, KVSYNC... KTHXBAI, then KVPUB
    above the snapshot's sequence; publish with a PUB and a 16-byte uuid, ttl property."""
    server, endpoint = start_pubsub(start_server)
    base = int(endpoint.rsplit(":", 1)[1])
    with Publisher(endpoint, context=ctx) as seed:
        seed.publish("/clone/a", "1")
        seed.publish("/clone/b", "2")
    sub = ctx.socket(zmq.SUB)
    snapshot = ctx.socket(zmq.DEALER)
    pub = ctx.socket(zmq.PUB)
    for sock in (sub, snapshot, pub):
        sock.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"/clone/")
    sub.connect(f"tcp://127.0.0.1:{base + 1}")
    snapshot.connect(f"tcp://127.0.0.1:{base}")
    pub.connect(f"tcp://127.0.0.1:{base + 2}")
    try:
        raw_clone_client(sub, snapshot, pub)
    finally:
        for sock in (sub, snapshot, pub):
            sock.close()


def raw_clone_client(sub, snapshot, pub):
    snapshot.send_multipart([b"ICANHAZ?", b"/clone/"])
    kvmap = {}
    while True:
        assert snapshot.poll(5000)
        key, seq, _uuid, _props, body = snapshot.recv_multipart()
        if key == b"KTHXBAI":
            (sequence,) = struct.unpack("!q", seq)
            assert body == b"/clone/"
            break
        kvmap[key] = body
    assert kvmap == {b"/clone/a": b"1", b"/clone/b": b"2"}
    deadline = time.monotonic() + 10
    while b"/clone/c" not in kvmap and time.monotonic() < deadline:
        pub.send_multipart(
            [b"/clone/c", struct.pack("!q", 0), uuid.uuid4().bytes, b"ttl=0\n", b"3"]
        )
        while sub.poll(100):
            key, seq, _uuid, _props, body = sub.recv_multipart()
            (number,) = struct.unpack("!q", seq)
            if number > sequence:
                sequence = number
                kvmap[key] = body
    assert kvmap[b"/clone/c"] == b"3"


def test_the_asyncio_subscriber_gets_the_snapshot_and_updates(start_server, ctx):
    server, endpoint = start_pubsub(start_server)

    async def main() -> dict:
        actx = zmq.asyncio.Context()
        try:
            with Publisher(endpoint, context=ctx) as pub:
                pub.publish("/aio/a", "1")
                # Applied before the subscriber asks: the update and the snapshot request come in
                # on different sockets, and an update published before this subscriber's SUB is
                # connected reaches it only through a snapshot (or, after a gap, a resync).
                wait_until(lambda: _in_snapshot(endpoint, b"/aio/a", ctx), 10, "the update held")
                async with AsyncSubscriber(endpoint, "/aio/", context=actx) as sub:
                    first = await sub.recv(10)
                    assert first is not None
                    assert first.snapshot
                    pub.publish("/aio/b", "2")
                    second = await sub.recv(10)
                    assert second is not None
                    assert not second.snapshot
                    return dict(sub.state)
        finally:
            actx.destroy(linger=0)

    assert asyncio.run(main()) == {b"/aio/a": b"1", b"/aio/b": b"2"}


def zmq_client(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmqserver.client.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_zmq_client_pub_then_sub_json(start_server):
    server, endpoint = start_pubsub(start_server)
    done = zmq_client("pub", "/cli/greeting", "hello", "-e", endpoint)
    assert done.returncode == 0, done.stderr
    done = zmq_client("sub", "/cli/", "--json", "-n", "1", "-e", endpoint)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    assert line["key"] == "/cli/greeting"
    assert line["value"] == "hello"
    assert line["snapshot"] is True
    done = zmq_client("sub", "/nothing/", "-t", "0.5", "-e", endpoint)
    assert done.returncode == 2
    assert not done.stderr  # a snapshot came (empty): only no update
    done = zmq_client("sub", "/x/", "-t", "0.5", "-e", "tcp://127.0.0.1:1")
    assert done.returncode == 2
    assert "no snapshot from tcp://127.0.0.1:1 within 0.5s" in done.stderr


def _server_events(sub: Subscriber, until: object, timeout: float = 15.0) -> list:
    """The ``$zmqserver/`` updates ``sub`` hears until ``until(updates)``, values decoded."""
    got: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        update = sub.recv(timeout=0.2)
        if update is not None and update.value:
            got.append((update.key, json.loads(update.value)))
        if until(got):
            return got
    pytest.fail(f"timed out; heard {got}")


def test_each_job_has_an_event_and_a_recycled_worker_says_why(start_server, ctx):
    """pubsub_job_events = all: ``$zmqserver/jobs/<service>/<outcome>`` per job, with its id,
    client, worker, times and attempts; a worker at max_requests is ``recycled`` (not
    ``exited``) with the reason, and a worker killed is ``exited``."""
    server, endpoint = start_pubsub(
        start_server, "--pubsub-job-events", "all", "--max-requests", "3", workers=1
    )
    with Subscriber(endpoint, "$zmqserver/", context=ctx) as sub:
        _server_events(sub, lambda got: any(v.get("event") == "registered" for _, v in got))
        client = zmqserver.Client(server.frontend, context=ctx, timeout=10)
        try:
            for i in range(3):
                client.request(b"/app/j%d=v" % i)
        finally:
            client.close()
        got = _server_events(sub, lambda got: any(v.get("event") == "recycled" for _, v in got))
        jobs = [v for k, v in got if k == b"$zmqserver/jobs/default/ok"]
        assert len(jobs) == 3
        assert {"job", "client", "worker", "queued", "ran", "attempts", "at"} <= jobs[0].keys()
        assert all(job["attempts"] == 1 and job["ran"] >= 0 for job in jobs)
        assert len({job["job"] for job in jobs}) == 3
        (recycled,) = [v for _, v in got if v.get("event") == "recycled"]
        assert recycled["reason"] == "max_requests"
        assert recycled["exit"] == "exited with status 0"
        assert str(recycled["pid"]) == jobs[0]["worker"]
        # The replacement registers; SIGKILL it: an end the server did not mean.
        got = _server_events(sub, lambda got: any(v.get("event") == "registered" for _, v in got))
        (pid,) = [v["pid"] for _, v in got if v.get("event") == "started"] or [None]
        if pid is None:  # started came before registered, both after the recycle: look back
            pid = int(next(k for k, v in got if v.get("event") == "registered").rsplit(b"/", 1)[1])
        os.kill(pid, signal.SIGKILL)
        got = _server_events(sub, lambda got: any(v.get("event") == "exited" for _, v in got))
        (exited,) = [v for _, v in got if v.get("event") == "exited"]
        assert exited["pid"] == pid
        assert exited["reason"] == "killed by SIGKILL"


def test_sampled_job_events_keep_to_their_budget(start_server, ctx):
    """pubsub_job_events = sample: at most N job events per service a second."""
    server, endpoint = start_pubsub(
        start_server,
        "--pubsub-job-events",
        "sample",
        "--pubsub-job-events-per-second",
        "2",
        workers=1,
    )
    with Subscriber(endpoint, "$zmqserver/jobs/default/", context=ctx) as sub:
        client = zmqserver.Client(server.frontend, context=ctx, timeout=10)
        started = time.monotonic()
        try:
            for i in range(30):
                client.request(b"/app/s%d=v" % i)
        finally:
            client.close()
        seconds = int(time.monotonic() - started) + 2  # the whole seconds the jobs touched
        got = _server_events(sub, lambda got: len(got) >= 2)
        quiet_until = time.monotonic() + 1.0  # then whatever else comes
        while time.monotonic() < quiet_until:
            update = sub.recv(timeout=0.1)
            if update is not None and update.value:
                got.append((update.key, json.loads(update.value)))
        assert 2 <= len(got) <= 2 * seconds < 30


def test_a_worker_retired_by_ttou_or_a_reload_is_recycled_with_the_reason(start_server, ctx):
    server, endpoint = start_pubsub(start_server, workers=2)
    server.wait_workers(2)
    with Subscriber(endpoint, "$zmqserver/workers/", context=ctx) as sub:
        server.signal(signal.SIGTTOU)
        got = _server_events(sub, lambda got: any(v.get("event") == "recycled" for _, v in got))
        (ttou,) = [v for _, v in got if v.get("event") == "recycled"]
        assert ttou["reason"].startswith("scale-down: ")
        server.wait_workers(1)
        server.signal(signal.SIGHUP)
        got = _server_events(
            sub, lambda got: any(v.get("reason", "").startswith("reload") for _, v in got)
        )
        (hup,) = [v for _, v in got if v.get("event") == "recycled"]
        assert hup["reason"] == "reload: generation 1 is ready"
        assert not [v for _, v in got if v.get("event") == "exited"]


def _in_snapshot(endpoint: str, key: bytes, ctx: zmq.Context[zmq.Socket[bytes]]) -> bool:
    """Whether the server's snapshot (a fresh one each call) holds ``key``."""
    with Subscriber(endpoint, key, context=ctx) as sub:
        update = sub.recv(0.5)
    return update is not None and update.key == key and update.snapshot
