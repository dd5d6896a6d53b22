"""The systems bench/compare.py puts beside zmqserver, each started fresh and stopped by PID.

Every system listens on TCP on 127.0.0.1 (free ports), as its users would run it between
machines, and runs 2 server-side processes doing the job (the echo of examples/echo.py):

* ``zmqserver``: ``zmqserver serve examples.echo:app``, 2 workers (bench/systems.py).
* ``celery``: ``redis-server`` (Debian's package; ``--save '' --appendonly no`` unless told
  otherwise) as broker and result backend, and ``celery worker --pool prefork --concurrency 2``
  with bench/_celery_app.py.
* ``zerorpc``: 2 server processes (zerorpc has no pool of processes); each client connects to
  both and its DEALER socket alternates between them.
* ``grpc``: 2 server processes on 2 ports, a generic unary handler each; each client opens a
  channel to both and alternates.
* ``majortomo``: its Broker in one process, 2 of its Workers, its Client.

Each context manager yields a :class:`bench.systems.System` whose ``endpoints`` are what the
clients of bench/_compare_client.py take, and whose ``worker_pids`` (plus ``broker_pid``) are
every process the system runs, for its CPU time.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

from bench import procs
from bench.procs import BenchError, Launcher
from bench.systems import System, zmqserver_system

ECHO = "examples.echo:app"
STARTUP_TIMEOUT = 60.0  # a Celery worker takes a few seconds to come up on a busy machine
SYSTEMS = ("zmqserver", "celery", "zerorpc", "grpc", "majortomo")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def have_redis() -> bool:
    return shutil.which("redis-server") is not None


def _probe(system: str, endpoints: list[str], alive: list[subprocess.Popen[bytes]]) -> None:
    """Until one echo goes through (bounded), with the client code the load uses."""
    from bench._compare_client import CALLERS

    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        dead = [p.pid for p in alive if p.poll() is not None]
        if dead:
            raise BenchError(f"{system}: process(es) {dead} exited during start-up")
        try:
            if CALLERS[system](endpoints)(b"ping") == b"ping":
                return
        except Exception as exc:  # not up yet
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise BenchError(f"{system}: no echo within {STARTUP_TIMEOUT:.0f}s ({last})")


@contextlib.contextmanager
def redis_server(launcher: Launcher, tag: str, *options: str) -> Iterator[tuple[str, int]]:
    """``redis-server`` on a free port, its files in a directory of its own; yields (url, pid).

    ``options`` (more redis-server options) replace the default ``--appendonly no``."""
    if not have_redis():
        raise BenchError("no redis-server (Debian: apt-get install redis-server)")
    workdir = launcher.workdir / f"{tag}-redis"
    workdir.mkdir()
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    # No snapshots; no append-only file unless ``options`` ask for one (the durable baseline).
    argv += ["--save", "", *(options or ("--appendonly", "no"))]
    proc = launcher.start("bench._exec", argv, log=workdir / "redis.log")
    try:
        import redis

        client = redis.Redis(port=port, socket_timeout=1)
        procs.wait_for(lambda: _pings(client, proc), 30, f"redis-server on port {port}")
        client.close()
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        launcher.stop(proc)


def _pings(client: object, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise BenchError(f"redis-server exited (code {proc.returncode})")
    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except Exception:
        return False


@contextlib.contextmanager
def celery_system(
    launcher: Launcher, tag: str, workers: int, *redis_options: str, acks_late: bool = False
) -> Iterator[System]:
    with redis_server(launcher, tag, *redis_options) as (url, redis_pid):
        env = {"BENCH_REDIS_URL": url, "BENCH_CELERY_ACKS_LATE": "1" if acks_late else "0"}
        argv = ["-A", "bench._celery_app", "worker", "--pool", "prefork"]
        argv += ["--concurrency", str(workers), "--loglevel", "WARNING"]
        log = launcher.workdir / f"{tag}-celery.log"
        worker = launcher.start("celery", argv, log=log, env=env)
        kids: list[int] = []
        try:
            try:
                _probe("celery", [url], [worker])
            except BenchError as exc:
                raise BenchError(f"{exc}\n{procs.log_tail(log)}") from None
            kids = procs.wait_children(
                worker.pid, workers, STARTUP_TIMEOUT, "celery worker processes", log
            )
            yield System("celery", [url], worker.pid, [redis_pid, *kids], log)
        finally:
            launcher.stop(worker, kids or procs.children_of(worker.pid))


@contextlib.contextmanager
def pair_system(launcher: Launcher, tag: str, workers: int, name: str) -> Iterator[System]:
    """``workers`` independent server processes (zerorpc, gRPC); clients alternate over them."""
    ports = [free_port() for _ in range(workers)]
    log = launcher.workdir / f"{tag}.log"
    if name == "zerorpc":
        endpoints = [f"tcp://127.0.0.1:{p}" for p in ports]
        started = [
            launcher.start("bench._rivals_server", ["zerorpc", e], log=log) for e in endpoints
        ]
    else:
        endpoints = [f"127.0.0.1:{p}" for p in ports]
        started = [launcher.start("bench._rivals_server", ["grpc", str(p)], log=log) for p in ports]
    try:
        try:
            for endpoint in endpoints:  # each server answers on its own
                _probe(name, [endpoint], started)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{procs.log_tail(log)}") from None
        yield System(name, endpoints, None, [p.pid for p in started], log)
    finally:
        for proc in started:
            launcher.stop(proc)


@contextlib.contextmanager
def majortomo_system(launcher: Launcher, tag: str, workers: int) -> Iterator[System]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    log = launcher.workdir / f"{tag}.log"
    broker = launcher.start("bench._rivals_server", ["majortomo-broker", endpoint], log=log)
    started: list[subprocess.Popen[bytes]] = []
    try:
        started = [
            launcher.start("bench._rivals_server", ["majortomo-worker", endpoint], log=log)
            for _ in range(workers)
        ]
        try:
            _probe("majortomo", [endpoint], [broker, *started])
        except BenchError as exc:
            raise BenchError(f"{exc}\n{procs.log_tail(log)}") from None
        time.sleep(0.3)  # every worker's READY is in (the warm-up covers the rest)
        yield System("majortomo", [endpoint], broker.pid, [p.pid for p in started], log)
    finally:
        for proc in started:
            launcher.stop(proc)
        launcher.stop(broker)


def start(
    name: str, launcher: Launcher, tag: str, workers: int
) -> contextlib.AbstractContextManager[System]:
    if name == "zmqserver":
        ports = (free_port(), free_port())
        tcp = (f"tcp://127.0.0.1:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}")
        return zmqserver_system(launcher, tag, workers, ECHO, endpoints=tcp)
    if name == "celery":
        return celery_system(launcher, tag, workers)
    if name in ("zerorpc", "grpc"):
        return pair_system(launcher, tag, workers, name)
    if name == "majortomo":
        return majortomo_system(launcher, tag, workers)
    raise ValueError(f"unknown system {name!r}")


def server_pids(system: System) -> list[int]:
    """Every process of the system (broker or main process, and those doing the job)."""
    return ([system.broker_pid] if system.broker_pid else []) + list(system.worker_pids)


#: The module each system's client needs (zmqserver's is always there).
_MODULES = {"celery": "celery", "zerorpc": "zerorpc", "grpc": "grpc", "majortomo": "majortomo"}


def importable(name: str) -> bool:
    import importlib.util

    module = _MODULES.get(name)
    return module is None or importlib.util.find_spec(module) is not None


def versions(names: list[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    dists = {"zmqserver": "zmqserver", "celery": "celery", "zerorpc": "zerorpc"}
    dists |= {"grpc": "grpcio", "majortomo": "majortomo"}
    found = {}
    for name in names:
        try:
            found[dists[name]] = version(dists[name])
        except PackageNotFoundError:
            found[dists[name]] = "?"
    if "celery" in names and have_redis():
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10
        )
        found["redis-server"] = out.stdout.split("v=")[-1].split()[0] if "v=" in out.stdout else "?"
    return found
