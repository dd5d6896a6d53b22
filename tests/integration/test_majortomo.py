"""Majordomo code nobody here wrote, against the real server (issue 20).

majortomo (PyPI, a dev dependency) is the most used Python MDP library: its Client numbers its
MDP/0.2 commands as the worker side's and its Worker heartbeats every 2.5 s, never while busy,
and exits when dropped. ``GuideWorker`` is an RFC 7 worker as the ZeroMQ guide writes one.

Timings are scaled where the point allows: ServerProcess runs the broker at 0.25 s x 3, so a
peer beating every 0.625 s stands for the guide's 2.5 s against the default 1 s x 3, and a
2.5 s job for a 10 s one. One test runs the real defaults (1 s x 3 against 2.5 s; ~12 s).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from majortomo import Client as MajortomoClient
from tests.helpers import REPO, ServerProcess, wait_until

from zmqserver import Client
from zmqserver.errors import DeadlineExpired, Status
from zmqserver.protocol import encode_status_header

pytestmark = [pytest.mark.timeout(60), pytest.mark.compiled_pass]

WORKER = Path(__file__).parents[1] / "majortomo_worker.py"
#: ServerProcess's broker interval (0.25 s) in the guide's proportion: 2.5 s against 1 s.
SCALED_CADENCE = 0.625


def mmi_has(server: ServerProcess, service: bytes, timeout: float = 10.0) -> None:
    """Wait until the broker knows ``service`` (a worker's READY arrived)."""
    sock = server.socket(zmq.DEALER)
    try:

        def known() -> bool:
            sock.send_multipart([b"MDPC02", b"\x01", b"mmi.service", service])
            return sock.poll(2000) and sock.recv_multipart()[3:] == [b"200"]

        wait_until(known, timeout, f"{service!r} registered")
    finally:
        sock.close()


@pytest.fixture
def majortomo_worker() -> Iterator[object]:
    """Start ``tests/majortomo_worker.py`` processes; kill those still running at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(endpoint: str, service: str, heartbeat: float) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), endpoint, service, str(heartbeat)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_majortomo_client_gets_replies_and_errors_in_its_numbering(start_server) -> None:
    server = start_server("tests.apps:stream", "--unknown-service-wait", "0.5", workers=1)
    server.wait_ready()
    client = MajortomoClient(server.frontend)
    client.connect()
    try:
        client.send(b"default", b"abc")
        parts = list(client.recv_all(timeout=10))  # PARTIALs (0x03), then a FINAL (0x04)
        assert parts == [[b"default", b"a"], [b"default", b"b"], [b"default", b"c"], [b"default"]]
        client.send(b"x" * 256, b"body")  # bad_request: once read as a PARTIAL, then a hang
        (error,) = list(client.recv_all(timeout=10))
        assert error[1] == encode_status_header(Status.BAD_REQUEST)
        assert b"255 bytes" in error[2]
        client.send(b"nope", b"body")
        (error,) = list(client.recv_all(timeout=10))
        assert error[1:] == [
            encode_status_header(Status.UNKNOWN_SERVICE),
            b"no such service: 'nope'",
        ]
    finally:
        client.close()


def test_majortomo_worker_serves_majortomo_and_our_clients_and_stays_registered(
    start_server, majortomo_worker, ctx
) -> None:
    """Idle for four of the broker's old patiences, it is still there: no drop, no exit."""
    server = start_server("examples.upper:app", workers=1)
    server.wait_ready()
    proc = majortomo_worker(server.backend, "mt", SCALED_CADENCE)
    mmi_has(server, b"mt")
    time.sleep(4 * 0.75)
    assert proc.poll() is None, "the majortomo worker exited: it was dropped"
    client = MajortomoClient(server.frontend)
    client.connect()
    try:
        client.send(b"mt", b"one", b"two")
        assert client.recv_all_as_list(timeout=10) == [b"mt", b"ONE", b"TWO"]
    finally:
        client.close()
    with Client(server.frontend, service="mt", timeout=10, context=ctx) as ours:
        assert ours.request(b"three") == b"THREE"
    assert proc.poll() is None
    assert "missed" not in server.log()


def test_busy_majortomo_worker_finishes_a_long_job(start_server, majortomo_worker, ctx) -> None:
    """A job of four of its heartbeat intervals (10 s for the guide's 2.5 s), during which it
    says nothing, ends with its reply: the job's deadline governs, not the silence."""
    server = start_server("examples.upper:app", workers=1)
    server.wait_ready()
    proc = majortomo_worker(server.backend, "mt", SCALED_CADENCE)
    mmi_has(server, b"mt")
    started = time.monotonic()
    with Client(server.frontend, service="mt", timeout=20, retries=1, context=ctx) as ours:
        assert ours.request(b"sleep 2.5") == b"SLEEP 2.5"
    assert time.monotonic() - started >= 2.5
    assert proc.poll() is None
    assert "missed" not in server.log()


def test_majortomo_worker_past_its_deadline_is_dropped_and_exits(
    start_server, majortomo_worker, ctx
) -> None:
    server = start_server("examples.upper:app", "--kill-grace", "0.5", workers=1)
    server.wait_ready()
    proc = majortomo_worker(server.backend, "mt", SCALED_CADENCE)
    mmi_has(server, b"mt")
    with (
        Client(server.frontend, service="mt", timeout=1, retries=1, context=ctx) as ours,
        pytest.raises(DeadlineExpired),
    ):
        ours.request(b"sleep 3")
    assert proc.wait(15) == 0  # DISCONNECT read once its job ended: it exits, as designed
    assert proc.stdout is not None
    assert b"dropped" in proc.stdout.read()


class GuideWorker(threading.Thread):
    """An RFC 7 worker as the guide's mdwrkapi writes it: REQ-less DEALER, ``''`` first, a
    HEARTBEAT (0x04) on the first wake-up 2.5 s past the last one, nothing while busy; every
    broker message counts as life; DISCONNECT (0x05) means reconnect and READY again."""

    def __init__(self, ctx: zmq.Context, endpoint: str, service: bytes) -> None:
        super().__init__(daemon=True)
        self.ctx, self.endpoint, self.service = ctx, endpoint, service
        self.stop = threading.Event()
        self.readies = 0  # READYs sent: 1 unless it was dropped
        self.served = 0

    def run(self) -> None:
        sock = self._connect()
        heartbeat_at = time.monotonic() + 2.5
        try:
            while not self.stop.is_set():
                if sock.poll(2500 if not self.stop.is_set() else 0):
                    frames = sock.recv_multipart()
                    command = frames[2]
                    if command == b"\x02":  # REQUEST: '' MDPW01 0x02 client '' body...
                        client, body = frames[3], frames[5:]
                        self.served += 1
                        sock.send_multipart([b"", b"MDPW01", b"\x03", client, b"", *body[::-1]])
                    elif command == b"\x05":  # DISCONNECT
                        sock.close(linger=0)
                        sock = self._connect()
                if time.monotonic() > heartbeat_at:
                    sock.send_multipart([b"", b"MDPW01", b"\x04"])
                    heartbeat_at = time.monotonic() + 2.5
        finally:
            sock.close(linger=0)

    def _connect(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        sock.send_multipart([b"", b"MDPW01", b"\x01", self.service])
        self.readies += 1
        return sock


@pytest.mark.timeout(90)
def test_rfc7_worker_with_the_guide_s_cadence_stays_registered_with_default_settings(
    start_server, ctx
) -> None:
    """The real defaults: the broker at 1 s x 3, the worker at 2.5 s. Before, it was dropped
    and re-registered every 3-4 s; now it keeps its one registration."""
    server = start_server("examples.upper:app", "--heartbeat-interval", "1", workers=1)
    server.wait_ready()
    worker = GuideWorker(ctx, server.backend, b"guide")
    worker.start()
    try:
        mmi_has(server, b"guide")
        time.sleep(10)
        with Client(server.frontend, service="guide", timeout=10, context=ctx) as ours:
            assert ours.request([b"a", b"b"]) == [b"b", b"a"]
        assert worker.readies == 1
        assert "missed" not in server.log()
    finally:
        worker.stop.set()
        worker.join(10)
    assert not worker.is_alive()
