"""The three set-ups the suite compares, each started fresh on ipc:// endpoints in a temp dir.

* ``direct``: no broker. N REP workers each bind their own endpoint; every client connects to
  all N and ZeroMQ round-robins its requests over them.
* ``proxy``: pyzmq's C device ``zmq.proxy(ROUTER frontend, DEALER backend)`` (bench/_proxy.py),
  N REP workers connected to the backend; the DEALER round-robins jobs over them.
* ``zmqserver``: ``python -m zmqserver serve APP --min-servers N --max-servers N`` (pinned, so
  no autoscaling changes the worker count during a run); least-recently-used dispatch, with
  credit behind the prefetch gate (docs/protocol.md §6.3).
* ``zmqserver-lru`` (opt-in: not in the default run): the same with ``--worker-credit 1``: strict
  LRU, one job per worker (the default before the prefetch gate; what credit buys).
* ``zmqserver-info`` (opt-in): the same with ``--pass-client-info`` (what the request context's
  client info costs).

The baselines' workers run the same app as zmqserver's (``examples.echo:app`` or
``bench.apps:uneven``), through a plain REP loop (bench/_rep_worker.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import zmq

import zmqserver
from bench import procs
from bench.procs import REPO, BenchError, Launcher

SYSTEMS = ("direct", "proxy", "zmqserver", "zmqserver-py")
#: Systems run only when named with --systems.
OPT_IN_SYSTEMS = ("zmqserver-lru", "zmqserver-info")
#: zmqserver systems that differ from the default only in serve options.
_SERVE_OPTIONS = {
    "zmqserver-lru": ("--worker-credit", "1"),
    "zmqserver-info": ("--pass-client-info",),  # the cost of the request context's client info
}
#: zmqserver runs compiled code when it is built (its socket I/O extension, and the per-job modules
#: mypyc compiles); this forces its pure-Python fallback (the "zmqserver-py" system).
PURE_PYTHON_ENV = {"ZMQSERVER_PURE_PYTHON": "1"}
STARTUP_TIMEOUT = 30.0


@dataclass
class System:
    name: str
    endpoints: list[str]  # where clients connect
    broker_pid: int | None = None
    worker_pids: list[int] = field(default_factory=list)
    log: Path | None = None
    compiled: bool | None = None  # zmqserver: does the broker run its compiled code?
    proc: subprocess.Popen[bytes] | None = None  # the broker process, if there is one

    def check_workers(self) -> None:
        """Fail if a worker died or was replaced during the run (the count is part of the test)."""
        if self.broker_pid is not None and self.name.startswith("zmqserver"):
            now = procs.children_of(self.broker_pid)
            if now != self.worker_pids:
                raise BenchError(
                    f"zmqserver's workers changed during the run: {self.worker_pids} -> {now}"
                )
        dead = [p for p in self.worker_pids if not procs.alive(p)]
        if dead:
            raise BenchError(f"{self.name}: worker(s) {dead} died during the run")


def round_trip(endpoint: str, timeout: float, is_alive: Callable[[], bool]) -> None:
    """Block until one echo round trip through ``endpoint`` succeeds (bounded)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not is_alive():
                raise BenchError(f"the server behind {endpoint} exited during start-up")
            sock = ctx.socket(zmq.REQ)
            sock.linger = 0
            sock.rcvtimeo = 250
            sock.connect(endpoint)
            try:
                sock.send(b"ping")
                if sock.recv_multipart() == [b"ping"]:
                    return
                raise BenchError(f"readiness probe to {endpoint} got a wrong reply")
            except zmq.Again:
                pass
            finally:
                sock.close()
        raise BenchError(f"no round trip through {endpoint} within {timeout:.0f}s")
    finally:
        ctx.term()


def _alive(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: proc.poll() is None


@contextlib.contextmanager
def direct_system(launcher: Launcher, tag: str, workers: int, app: str) -> Iterator[System]:
    workdir = launcher.workdir
    endpoints = [f"ipc://{workdir}/{tag}-w{i}" for i in range(workers)]
    started = [
        launcher.start("bench._rep_worker", ["--bind", e, "--app", app], log=workdir / f"{tag}.log")
        for e in endpoints
    ]
    try:
        for proc, endpoint in zip(started, endpoints, strict=True):
            round_trip(endpoint, STARTUP_TIMEOUT, _alive(proc))
        yield System("direct", endpoints, None, [p.pid for p in started])
    finally:
        for proc in started:
            launcher.stop(proc)


@contextlib.contextmanager
def proxy_system(launcher: Launcher, tag: str, workers: int, app: str) -> Iterator[System]:
    workdir = launcher.workdir
    frontend, backend = f"ipc://{workdir}/{tag}-front", f"ipc://{workdir}/{tag}-back"
    log = workdir / f"{tag}.log"
    proxy = launcher.start("bench._proxy", [frontend, backend], log=log)
    started: list[subprocess.Popen[bytes]] = []
    try:
        started = [
            launcher.start("bench._rep_worker", ["--connect", backend, "--app", app], log=log)
            for _ in range(workers)
        ]
        try:
            round_trip(frontend, STARTUP_TIMEOUT, _alive(proxy))
        except BenchError as exc:
            raise BenchError(f"{exc}\n{procs.log_tail(log)}") from None
        # The DEALER backend only round-robins over workers that are connected: wait for all.
        time.sleep(0.2)
        yield System("proxy", [frontend], proxy.pid, [p.pid for p in started], log, None, proxy)
    finally:
        launcher.stop(proxy)
        for proc in started:
            launcher.stop(proc)


@cache
def serve_help() -> str:
    """``zmqserver serve --help``, to pin options that only some versions have."""
    out = subprocess.run(
        [sys.executable, "-m", "zmqserver", "serve", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout


def zmqserver_argv(app: str, frontend: str, backend: str, workers: int, *extra: str) -> list[str]:
    """The ``serve`` arguments with the worker count pinned to ``workers``.

    min = max = N leaves no room to scale; if this version has spare-server options (which
    start or retire workers to keep some idle), they get values that validate and hold N too:
    no minimum of idle workers, and a maximum of N - 1 (it must be below max_servers).
    """
    argv = ["serve", app, "--frontend", frontend, "--backend", backend]
    argv += ["--min-servers", str(workers), "--max-servers", str(workers)]
    argv += ["--graceful-timeout", "5"]
    flags = set(re.findall(r"--[a-z-]*spare[a-z-]*", serve_help()))
    for flag in sorted(flags):
        if flag.startswith("--min"):
            argv += [flag, "0"]
        elif flag.startswith("--max"):
            argv += [flag, str(workers - 1)]
    return [*argv, *extra]


@contextlib.contextmanager
def store_server(
    app: str, workers: int, *extra: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, Path]]:
    """A fresh ``serve APP --store`` (ipc:// endpoints and the store in a temp dir), up with a
    worker registered: yields (frontend, temp dir) and stops it (TERM, then KILL) after."""
    tmp = Path(tempfile.mkdtemp(prefix="zs-store-"))
    front, back = f"ipc://{tmp}/front", f"ipc://{tmp}/back"
    argv = zmqserver_argv(app, front, back, workers, "--store", str(tmp / "jobs.db"), *extra)
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "zmqserver", *argv],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with zmqserver.Client(front, timeout=2, retries=10) as client:
            client.request(b"ping")  # up, with a worker registered
        yield front, tmp
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def zmqserver_system(
    launcher: Launcher,
    tag: str,
    workers: int,
    app: str,
    *extra: str,
    pure: bool = False,
    name: str = "zmqserver",
    endpoints: tuple[str, str] | None = None,
) -> Iterator[System]:
    """Start ``zmqserver serve``; wait until it echoes and has all its workers.

    ``pure``: force the pure-Python path (the name becomes ``zmqserver-py``).
    ``extra``: more serve options, for a system called ``name``.
    ``endpoints``: (frontend, backend) instead of ipc:// ones in the launcher's directory.
    """
    workdir = launcher.workdir
    frontend, backend = endpoints or (f"ipc://{workdir}/{tag}-front", f"ipc://{workdir}/{tag}-back")
    log = workdir / f"{tag}.log"
    argv = zmqserver_argv(app, frontend, backend, workers, *extra)
    proc = launcher.start("zmqserver", argv, log=log, env=PURE_PYTHON_ENV if pure else None)
    kids: list[int] = []
    try:
        try:
            round_trip(frontend, STARTUP_TIMEOUT, _alive(proc))
        except BenchError as exc:
            raise BenchError(f"{exc}\n{procs.log_tail(log)}") from None
        kids = procs.wait_children(proc.pid, workers, STARTUP_TIMEOUT, "zmqserver workers", log)
        # Registration (READY) follows the fork within milliseconds; the warmup covers the rest.
        time.sleep(0.2)
        # Both compiled parts: the socket I/O and the per-job modules (a stale build of those runs
        # the source, and so does not map their library).
        compiled = procs.maps_library(proc.pid, "_fastio") and procs.maps_library(
            proc.pid, "_core__mypyc"
        )
        name = "zmqserver-py" if pure else name
        yield System(name, [frontend], proc.pid, kids, log, compiled, proc)
    finally:
        launcher.stop(proc, kids or procs.children_of(proc.pid))


def start_system(
    name: str, launcher: Launcher, tag: str, workers: int, app: str
) -> contextlib.AbstractContextManager[System]:
    if name == "direct":
        return direct_system(launcher, tag, workers, app)
    if name == "proxy":
        return proxy_system(launcher, tag, workers, app)
    if name == "zmqserver":
        return zmqserver_system(launcher, tag, workers, app)
    if name == "zmqserver-py":
        return zmqserver_system(launcher, tag, workers, app, pure=True)
    if name in _SERVE_OPTIONS:
        return zmqserver_system(launcher, tag, workers, app, *_SERVE_OPTIONS[name], name=name)
    raise ValueError(f"unknown system {name!r}")
