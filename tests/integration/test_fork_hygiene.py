"""What a forked worker inherits from the master, and what becomes of processes the app forks.

Real servers on TCP ports of 127.0.0.1 (a listening socket held by the wrong process is the
point), real signals, bounded waits; only processes the test started are killed.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
from tests.helpers import ServerProcess, pid_alive, wait_until

pytestmark = pytest.mark.timeout(90)


def _free_ports(count: int) -> list[int]:
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _tcp_args(front: int, back: int) -> tuple[str, ...]:
    return ("--frontend", f"tcp://127.0.0.1:{front}", "--backend", f"tcp://127.0.0.1:{back}")


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port`` (/proc/net/tcp: state 0A is LISTEN)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def _fd_links(pid: int) -> list[str]:
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue  # closed meanwhile
    return links


def _request(server: ServerProcess, ctx: zmq.Context, payload: bytes, timeout: float = 10.0):
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.frontend)
    try:
        sock.send(payload)
        if not sock.poll(timeout * 1000):
            pytest.fail(f"no reply within {timeout}s (log:\n{server.log()})")
        return sock.recv_multipart()
    finally:
        sock.close()


def test_restart_binds_at_once_after_kill_9_of_the_master_mid_job(
    start_server: Callable[..., ServerProcess],
    ctx: zmq.Context[zmq.Socket[bytes]],
    short_tmp: Path,
) -> None:
    """A worker busy with a long job when the master is SIGKILLed must not hold its ports: a new
    server on the same ports binds at once and serves."""
    front, back = _free_ports(2)
    first = start_server("tests.apps:mark_then_sleep", *_tcp_args(front, back), workers=1)
    first.frontend = f"tcp://127.0.0.1:{front}"
    _request(first, ctx, b"0 %s" % bytes(short_tmp / "warm"), timeout=15)
    (worker,) = first.wait_workers(1)
    marker = short_tmp / "started"
    client = ctx.socket(zmq.REQ)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(first.frontend)
    try:
        client.send(b"60 %s" % bytes(marker))
        wait_until(marker.exists, 10, "the long job to start")
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(5)
        second = start_server("tests.apps:pid", *_tcp_args(front, back), workers=1)
        second.frontend = f"tcp://127.0.0.1:{front}"
        started = time.monotonic()
        reply = _request(second, ctx, b"hello", timeout=15)
        print(f"measured: the restarted server answered in {time.monotonic() - started:.2f} s")
        assert reply == [str(second.worker_pids()[0]).encode()]
        assert "Address already in use" not in second.log()
        # The old worker may still run its job (it exits after): it is the job's business, not
        # the port's. It is killed at teardown (started_pids).
        assert worker in first.started_pids
    finally:
        client.close()


def test_a_worker_holds_no_socket_of_the_master(
    start_server: Callable[..., ServerProcess],
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    """A worker forked while clients are connected holds neither the frontend's listening
    socket nor their connections: a small, bounded number of fds."""
    front, back = _free_ports(2)
    server = start_server("tests.apps:pid", *_tcp_args(front, back), workers=1)
    server.frontend = f"tcp://127.0.0.1:{front}"
    _request(server, ctx, b"warm", timeout=15)
    clients = []
    try:
        for _ in range(100):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(server.frontend)
            clients.append(sock)
        master_fds = len(os.listdir(f"/proc/{server.pid}/fd"))
        wait_until(
            lambda: len(os.listdir(f"/proc/{server.pid}/fd")) >= 100,
            10,
            "the clients to connect",
        )
        (first,) = server.worker_pids()
        server.signal(signal.SIGTTIN)  # a worker forked now, with 100 clients connected
        wait_until(lambda: len(server.worker_pids()) == 2, 10, "a second worker")
        (new,) = set(server.worker_pids()) - {first}
        _request(server, ctx, b"again")
        links = _fd_links(new)
        listening = {f"socket:[{inode}]" for inode in _listening_inodes(front)}
        assert listening, "the frontend's listening socket is not in /proc/net/tcp"
        master_fds = len(os.listdir(f"/proc/{server.pid}/fd"))
        print(f"measured: master {master_fds} fds, new worker {len(links)} fds")
        assert not listening & set(links)
        # Its own: stdio, its context (eventfds, epoll), its DEALER, the wake-up socketpair.
        assert len(links) <= 20, links
    finally:
        for sock in clients:
            sock.close()


def test_a_child_the_app_forks_that_returns_exits(
    start_server: Callable[..., ServerProcess],
    ctx: zmq.Context[zmq.Socket[bytes]],
    short_tmp: Path,
) -> None:
    """A process the app forks that returns into the worker exits at once; the worker keeps
    serving, and nothing of the test is left once the server stops."""
    server = start_server("tests.apps:fork_and_return", workers=1)
    children = []
    for n in range(3):
        marker = short_tmp / f"child{n}"
        reply = _request(server, ctx, bytes(marker), timeout=15)
        assert reply == [b"parent"]
        child = int(marker.read_bytes())
        children.append(child)
        server.started_pids.add(child)  # killed at teardown if the test fails
        wait_until(lambda c=child: not pid_alive(c), 5, f"the app's child {child} to exit")
    assert len(server.worker_pids()) == 1
    assert "forked by the app in worker" in server.log()
    server.stop()
    assert not any(pid_alive(pid) for pid in server.started_pids)
