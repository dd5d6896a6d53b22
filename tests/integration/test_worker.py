"""The worker loop seen from outside: what it does when its master dies under it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from tests.helpers import REPO, pid_alive, wait_until

pytestmark = pytest.mark.timeout(60)


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
    assert time.monotonic() - killed_at < 1.5  # well under the linger, with room for a slow box


#: A master whose main thread exits while another of its threads lives on: the state a SIGKILLed
#: master's workers see while its last threads exit, held still so that it can be looked at.
_HALF_DEAD_MASTER = textwrap.dedent(
    """
    import ctypes, os, threading, time
    from tests.helpers import pid_alive
    from zmqserver._process import parent_alive

    master = os.getpid()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        print(os.getppid() == master, parent_alive(master), flush=True)
        os.write(w, b"1")  # the master may go now
        deadline = time.monotonic() + 10
        # Until the master's main thread is a zombie (pid_alive reads its state in /proc).
        while pid_alive(master) and time.monotonic() < deadline:
            time.sleep(0.01)
        print(os.getppid() == master, parent_alive(master), flush=True)
        os._exit(0)
    os.read(r, 1)
    threading.Thread(target=os.waitpid, args=(pid, 0)).start()  # keeps the process going
    ctypes.CDLL(None).pthread_exit(None)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and pthread_exit: Linux")
def test_a_master_whose_threads_are_still_exiting_is_not_alive():
    """The race that let workers of a SIGKILLed master wait out the exit linger (seen in CI):
    the parent-death signal came while getppid() still named the master, because Linux had
    reparented the worker to one of its threads that was still exiting. parent_alive sees it."""
    out = subprocess.run(
        [sys.executable, "-c", _HALF_DEAD_MASTER],
        cwd=REPO,
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert out == [b"True", b"True", b"True", b"False"]
