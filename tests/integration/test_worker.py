"""The worker loop seen from outside: what it does when its master dies under it."""

from __future__ import annotations

import os
import signal
import socket
import time

from tests.helpers import pid_alive, wait_until


def test_workers_of_a_killed_master_exit_at_once(start_server):
    """Not after the 2 s exit linger: a worker that sent DISCONNECT to a dead broker would wait
    that long, holding the backend's listening socket it inherited, so a new master could not
    bind the port (the remote pool's broker-restart test met exactly this)."""
    with socket.socket() as s:  # tcp, like a remote pool's broker: where the port matters
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_server("examples.echo:app", "--backend", f"tcp://127.0.0.1:{port}", workers=2)
    pids = server.wait_workers(2)
    server.wait_ready()
    assert server.request(b"x") == [b"x"]  # a job has run: the heartbeat thread exists
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    killed_at = time.monotonic()
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), 5, "the workers to exit")
    assert time.monotonic() - killed_at < 1.0
