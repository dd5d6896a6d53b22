"""Test helpers: real servers, bounded waits, process inspection through /proc.

Servers run as real ``python -m zmqserver serve`` processes in their own session
(``start_new_session=True``), bound to ``ipc://`` endpoints in a private temp dir (or to free
loopback ports), and are stopped by signalling only the processes the test started.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import zmq

from zmqserver._process import proc_state
from zmqserver.broker import Limits
from zmqserver.config import Config
from zmqserver.control_client import ask, find_endpoint
from zmqserver.scaling import Policy

REPO = Path(__file__).resolve().parent.parent


def limits(**overrides: Any) -> Limits:
    """The routing limits of a server with the default options, with ``overrides``.

    Limits has no defaults of its own: a test states what it changes from the schema's.
    """
    return dataclasses.replace(Limits.from_config(Config()), **overrides)


def scaling_policy(**overrides: Any) -> Policy:
    """The autoscaling policy of a pool with the default options, with ``overrides``."""
    return dataclasses.replace(Policy.from_config(Config()), **overrides)


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, message: str = "condition"
) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(0.02)


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (read from /proc, no psutil)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] != b"Z" and int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state != b"Z"


class ServerProcess:
    """A ``zmqserver serve`` process started by a test, with helpers to talk to it.

    By default the pool is fixed at ``workers`` (no spare-server autoscaling, no scaling on
    queue wait), which is what a test that counts workers expects; ``autoscale=True`` leaves
    the scaling options to the server's defaults, the test's flags or its config file.
    ``workers=None`` passes no ``--min-servers``. ``ZMQSERVER_*`` variables of the calling
    environment are not passed on (``env`` adds variables).
    """

    def __init__(
        self,
        workdir: Path,
        app: str | None,
        *args: str,
        workers: int | None = 2,
        ctx: zmq.Context[zmq.Socket[bytes]],
        autoscale: bool = False,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.frontend = f"ipc://{workdir}/front"
        self.backend = f"ipc://{workdir}/back"
        self.log_path = workdir / "server.log"
        self.ctx = ctx
        # ``prefix`` runs the server under a command that execs it (``ip netns exec NS``).
        argv = [*prefix, sys.executable, "-m", "zmqserver", "serve"]
        if app is not None:
            argv.append(app)
        argv += [
            "--frontend",
            self.frontend,
            "--backend",
            self.backend,
            *(["--min-servers", str(workers)] if workers is not None else []),
            "--heartbeat-interval",
            "0.25",
            *([] if autoscale else ["--min-spare-servers", "0", "--queue-wait-threshold", "0"]),
            *args,
        ]
        env = {
            **clean_env(),
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.started_pids: set[int] = {self.pid}

    # -- observation --------------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        pids = children_of(self.pid)
        self.started_pids.update(pids)
        return sorted(pids)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_workers(self, count: int, timeout: float = 15.0) -> list[int]:
        wait_until(
            lambda: len(self.worker_pids()) == count,
            timeout,
            f"{count} workers (log:\n{self.log()})",
        )
        return self.worker_pids()

    # -- talking ------------------------------------------------------------------------------

    def socket(self, kind: int = zmq.REQ) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.frontend)
        return sock

    def request(self, *frames: bytes, timeout: float = 10.0) -> list[bytes]:
        """One plain REQ round trip; fails the test if no reply comes within ``timeout``."""
        sock = self.socket()
        try:
            sock.send_multipart(list(frames))
            if not sock.poll(timeout * 1000):
                pytest.fail(f"no reply within {timeout}s (log:\n{self.log()})")
            return sock.recv_multipart()
        finally:
            sock.close()

    def status(self) -> dict[str, Any]:
        """The server's status document, asked of its control endpoint (found as ``zmqserver
        status`` finds it), in this process: what ``zmqserver status --json`` prints."""
        endpoint, _ = find_endpoint(endpoint=None, pid_file=None, frontend=self.frontend)
        reply = ask(endpoint, {"command": "stats"})
        assert reply.get("ok"), reply
        return reply

    def control(self, command: str, **args: Any) -> dict[str, Any]:
        """One control command (``scale``, ``incr``...), as ``zmqserver control`` sends it."""
        endpoint, _ = find_endpoint(endpoint=None, pid_file=None, frontend=self.frontend)
        reply = ask(endpoint, {"command": command, **args})
        assert reply.get("ok"), reply
        return reply

    def workers_by_state(self, service: str | None = None) -> dict[str, list[int]]:
        """Pids of the server's workers (of ``service``, or all) by state (status)."""
        found: dict[str, list[int]] = {}
        for worker in self.status()["workers"]:
            if service is None or worker["service"] == service:
                found.setdefault(worker["state"], []).append(worker["pid"])
        return found

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until a job makes the round trip (a worker is up and registered)."""
        self.request(b"ping", timeout=timeout)

    # -- stopping -----------------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server did not exit within {timeout}s (log:\n{self.log()})")

    def stop(self) -> None:
        """TERM, bounded wait, then KILL: only the processes this test started."""
        self.worker_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in self.started_pids:
            if pid != self.pid and pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


def clean_env(*, keep_pure: bool = True) -> dict[str, str]:
    """This process's environment without its ``ZMQSERVER_*`` variables, which would configure
    the server a test starts behind the test's back (a developer's shell may set some).
    ``keep_pure`` keeps ``ZMQSERVER_PURE_PYTHON``: not a server option but the build make test's
    second pass runs, which the server must run too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQSERVER_")}
    if keep_pure and "ZMQSERVER_PURE_PYTHON" in os.environ:
        env["ZMQSERVER_PURE_PYTHON"] = os.environ["ZMQSERVER_PURE_PYTHON"]
    return env


def zmqserver_cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """``python -m zmqserver ARGS`` from the repository, its output captured: the caller's
    ``ZMQSERVER_*`` variables dropped but ``ZMQSERVER_PURE_PYTHON`` (make test's second pass)."""
    env = clean_env()
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "zmqserver", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
