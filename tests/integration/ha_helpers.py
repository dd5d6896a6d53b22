"""A Binary Star pair of real servers for the HA tests (docs/ha.md): two port sets on ipc://.

Each server has its own directory (its frontend is ``ipc://DIR/front``); the peer link's two
endpoints are in the pair's directory, so a server restarted in the same directory takes its
old place in the pair.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from tests.helpers import ServerProcess, wait_until

#: Short heartbeats keep the tests quick: failover is two heartbeats and a client's timeout.
HEARTBEAT = 0.25


class Pair:
    """The primary and the backup, started and stopped together."""

    def __init__(self, root: Path, ctx: zmq.Context[zmq.Socket[bytes]], app: str) -> None:
        self.root, self.ctx, self.app = root, ctx, app
        self.servers: dict[str, ServerProcess] = {}
        self.stopped: list[ServerProcess] = []

    def link(self, role: str) -> str:
        return f"ipc://{self.root}/ha-{role}"

    def start(self, role: str, *args: str, workers: int = 1) -> ServerProcess:
        other = "backup" if role == "primary" else "primary"
        workdir = self.root / role
        workdir.mkdir(exist_ok=True)
        server = ServerProcess(
            workdir,
            self.app,
            "--ha-role",
            role,
            "--ha-bind",
            self.link(role),
            "--ha-peer",
            self.link(other),
            "--ha-heartbeat",
            str(HEARTBEAT),
            *args,
            workers=workers,
            ctx=self.ctx,
        )
        self.servers[role] = server
        return server

    def kill(self, role: str) -> None:
        """SIGKILL the server's master (its workers follow it: they see their parent go)."""
        server = self.servers[role]
        server.worker_pids()  # remembered, so that stop() can kill any that linger
        server.proc.kill()
        server.proc.wait(10)
        self.stopped.append(server)

    def endpoints(self) -> list[str]:
        return [f"ipc://{self.root / role}/front" for role in ("primary", "backup")]

    def stop(self) -> None:
        for server in [*self.servers.values(), *self.stopped]:
            server.stop()


def answer(server: ServerProcess, payload: bytes, timeout: float) -> bytes | None:
    """One plain REQ request to ``server``; its reply, or None if none came within ``timeout``."""
    sock = server.socket()
    try:
        sock.send(payload)
        if not sock.poll(timeout * 1000):
            return None
        return sock.recv()
    finally:
        sock.close()


def wait_answered(server: ServerProcess, timeout: float = 15.0) -> float:
    """Send plain REQ requests (a fresh socket per attempt, as bstarcli does) until one is
    answered; the seconds it took."""
    started = time.monotonic()
    wait_until(
        lambda: answer(server, b"ping", 4 * HEARTBEAT) is not None,
        timeout,
        f"an answer from {server.frontend} (log:\n{server.log()})",
    )
    return time.monotonic() - started


def wait_logged(server: ServerProcess, text: str, timeout: float = 10.0) -> None:
    wait_until(lambda: text in server.log(), timeout, f"{text!r} in the log:\n{server.log()}")


@pytest.fixture
def pair(short_tmp: Path, ctx: zmq.Context[zmq.Socket[bytes]]) -> Iterator[Pair]:
    pair = Pair(short_tmp, ctx, "examples.upper:app")
    yield pair
    pair.stop()


def active_of(pair: Pair) -> str:
    """The role of the server that answers now (one REQ each, a short wait)."""
    for role, server in pair.servers.items():
        if server.proc.poll() is None and answer(server, b"who", 4 * HEARTBEAT) is not None:
            return role
    pytest.fail("neither server of the pair answers")


def kill_and_fail_over(pair: Pair, request: object, cycles: int) -> list[float]:
    """``cycles`` times: kill -9 the active server, time ``request()`` (a client call that
    must succeed through the other one), then restart the killed server (it comes back
    passive). The failover times, in seconds."""
    times = []
    for _ in range(cycles):
        role = active_of(pair)
        other = "backup" if role == "primary" else "primary"
        wait_logged(pair.servers[other], "-> passive")
        pair.kill(role)
        started = time.monotonic()
        request()  # type: ignore[operator]
        times.append(time.monotonic() - started)
        restarted = pair.start(role)
        wait_logged(restarted, "-> passive")
    return times
