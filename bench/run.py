"""Echo throughput and latency: zmqserver against pyzmq's C proxy, same machine, same run.

    .venv/bin/python -m bench.run [--duration 3] [--repeat 3] [--workers 2]

Systems (each started fresh for every measurement, on ipc:// endpoints in a temp dir):

* ``proxy``: ``zmq.proxy(ROUTER, DEALER)`` in its own process (bench/_proxy.py) and N plain REP
  worker processes echoing every message;
* ``zmqserver``: ``python -m zmqserver serve examples.echo:app --min-servers N``.

Load: C synchronous REQ client processes (own zmq Context each, created after start), 64-byte
payloads that differ per client and per request, every reply checked byte for byte. All clients
start together, run ``--warmup`` seconds unrecorded, then ``--duration`` seconds recorded. A
request counts only if it was sent and answered inside the recorded window; errors (wrong reply,
timeout) are counted over the whole client run, warmup included.

Repeats are interleaved (repeat -> config -> system, system order alternating per repeat) and the
table shows the median of each metric over the repeats. Clients, broker and workers all share the
machine's cores, so this measures the whole set-up on this box, not the broker alone.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import math
import multiprocessing as mp
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

REPO = Path(__file__).resolve().parent.parent
PROXY_SCRIPT = Path(__file__).resolve().with_name("_proxy.py")

PAYLOAD_SIZE = 64
CLIENT_COUNTS = (1, 8)
SYSTEMS = ("proxy", "zmqserver")

STARTUP_TIMEOUT = 20.0  # seconds for a server, its workers or the clients to come up
REPLY_TIMEOUT_MS = 2000  # a client gives up on one reply after this (counted as an error)
STOP_TIMEOUT = 10.0  # SIGTERM -> wait this long -> SIGKILL
KILL_TIMEOUT = 5.0  # wait after SIGKILL
RESULT_SLACK = 10.0  # extra time allowed for clients to report after their window ends
IDLE_WORKERS = 10
IDLE_WINDOW = 3.0
SETTLE_TIMEOUT = 5.0  # wait at most this long for a freshly started server to go quiet

MP = mp.get_context("spawn")  # children never inherit the parent's zmq Context


class BenchError(RuntimeError):
    """A system or client did not come up, or did not report, within its bounded wait."""


# -- /proc helpers ---------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields of /proc/PID/stat after the command name (index 0 = state, 1 = ppid)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is ``pid``."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and fields[0] != b"Z" and int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != b"Z"


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (0 if it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def cpu_ns(pid: int) -> int | None:
    """Time on CPU from /proc/PID/schedstat in ns (None if the kernel does not provide it)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def collect(q: Any, procs: list[Any], timeout: float, what: str) -> list[Any]:
    """One item per process from ``q``; fail fast if a process dies, and after ``timeout``."""
    deadline = time.monotonic() + timeout
    items: list[Any] = []
    while len(items) < len(procs):
        try:
            items.append(q.get(timeout=0.1))
            continue
        except queue.Empty:
            pass
        dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if dead:
            raise BenchError(f"{what}: a process exited with code {dead[0]}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
    return items


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


# -- systems under test ----------------------------------------------------------------------------


def round_trip(endpoint: str, timeout: float, is_alive: Callable[[], bool]) -> None:
    """Block until one echo round trip through ``endpoint`` succeeds (bounded)."""
    ctx = zmq.Context()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not is_alive():
                raise BenchError(f"server behind {endpoint} exited during start-up")
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


def rep_worker(endpoint: str, ready: Any) -> None:
    """Baseline worker: a REP socket echoing every message. Exits on SIGTERM or orphaning."""
    parent = os.getppid()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.linger = 0
    sock.rcvtimeo = 500
    sock.connect(endpoint)
    ready.put(os.getpid())
    while True:
        try:
            message = sock.recv_multipart()
        except zmq.Again:
            if os.getppid() != parent:
                break
            continue
        sock.send_multipart(message)
    sock.close()
    ctx.term()


def stop_process(proc: subprocess.Popen[bytes], extra_pids: list[int]) -> None:
    """SIGTERM, bounded wait, then SIGKILL ``proc``; then make sure ``extra_pids`` are gone.

    ``extra_pids`` are children of ``proc`` recorded while it ran (so only processes this
    benchmark started are ever signalled).
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"  ! pid {proc.pid} ignored SIGTERM for {STOP_TIMEOUT:.0f}s; killing it")
            proc.kill()
            proc.wait(timeout=KILL_TIMEOUT)
    with contextlib.suppress(BenchError):
        wait_for(lambda: not any(alive(p) for p in extra_pids), STOP_TIMEOUT, "workers to exit")
    for pid in extra_pids:
        if alive(pid):
            print(f"  ! worker {pid} outlived its broker; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _die_with_parent() -> None:
    """preexec_fn: have Linux SIGTERM the server if this benchmark dies without stopping it."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None:
        ctypes.CDLL(libc_name).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def proxy_system(workdir: Path, tag: str, workers: int) -> Iterator[str]:
    """Start the C proxy and ``workers`` REP echo processes; yield the frontend endpoint."""
    frontend, backend = f"ipc://{workdir}/{tag}-front", f"ipc://{workdir}/{tag}-back"
    log_path = workdir / f"{tag}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(PROXY_SCRIPT), frontend, backend],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    ready = MP.Queue()
    procs = [
        MP.Process(target=rep_worker, args=(backend, ready), daemon=True) for _ in range(workers)
    ]
    try:
        for p in procs:
            p.start()
        collect(ready, procs, STARTUP_TIMEOUT, "proxy REP workers to start")
        try:
            round_trip(frontend, STARTUP_TIMEOUT, lambda: proc.poll() is None)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{_log_tail(log_path)}") from None
        yield frontend
    finally:
        stop_process(proc, [])
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=STOP_TIMEOUT)
            if p.is_alive():
                p.kill()
                p.join(timeout=KILL_TIMEOUT)
        ready.close()
        ready.join_thread()


@dataclass
class Server:
    """A running ``zmqserver serve`` subprocess."""

    proc: subprocess.Popen[bytes]
    frontend: str
    workers: list[int] = field(default_factory=list)


@contextlib.contextmanager
def zmqserver_system(workdir: Path, tag: str, workers: int) -> Iterator[Server]:
    """Start ``zmqserver serve examples.echo:app`` and wait until it echoes and has its workers."""
    frontend, backend = f"ipc://{workdir}/{tag}-front", f"ipc://{workdir}/{tag}-back"
    log_path = workdir / f"{tag}.log"
    argv = [sys.executable, "-m", "zmqserver", "serve", "examples.echo:app"]
    argv += ["--frontend", frontend, "--backend", backend, "--min-servers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    server = Server(proc, frontend)
    try:
        try:
            round_trip(frontend, STARTUP_TIMEOUT, lambda: proc.poll() is None)
            wait_for(
                lambda: len(children_of(proc.pid)) >= workers,
                STARTUP_TIMEOUT,
                f"{workers} zmqserver workers",
            )
        except BenchError as exc:
            raise BenchError(f"{exc}\n{_log_tail(log_path)}") from None
        server.workers = children_of(proc.pid)
        yield server
    finally:
        stop_process(proc, server.workers or children_of(proc.pid))


# -- load generator --------------------------------------------------------------------------------


def client_main(
    index: int,
    endpoint: str,
    warmup: float,
    duration: float,
    ready: Any,
    go: Any,
    start_ns: Any,
    results: Any,
) -> None:
    """One synchronous REQ client; reports (index, latencies in ns, errors) on ``results``."""
    ctx = zmq.Context()

    def connect() -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.REQ)
        sock.linger = 0
        sock.rcvtimeo = REPLY_TIMEOUT_MS
        sock.sndtimeo = REPLY_TIMEOUT_MS
        sock.connect(endpoint)
        return sock

    sock = connect()
    latencies: list[int] = []
    errors = 0
    ready.put(index)
    if go.wait(STARTUP_TIMEOUT):
        window_start = start_ns.value + int(warmup * 1e9)
        window_end = window_start + int(duration * 1e9)
        prefix = f"bench client {index:03d} request ".encode().ljust(PAYLOAD_SIZE - 8, b".")
        clock = time.monotonic_ns
        counter = 0
        while True:
            counter += 1
            payload = prefix + counter.to_bytes(8, "big")
            sent = clock()
            if sent >= window_end:
                break
            try:
                sock.send(payload)
                reply = sock.recv_multipart()
            except zmq.Again:  # no reply in time: a REQ socket cannot go on, so start afresh
                errors += 1
                sock.close()
                sock = connect()
                continue
            received = clock()
            if len(reply) != 1 or reply[0] != payload:
                errors += 1
            elif sent >= window_start and received <= window_end:
                latencies.append(received - sent)
    else:
        errors = -1  # never told to start
    sock.close()
    ctx.term()
    results.put((index, array("q", latencies).tobytes(), errors))


@dataclass
class RunResult:
    system: str
    clients: int
    duration: float
    latencies_ns: list[int]
    errors: int

    @property
    def jobs_per_s(self) -> float:
        return len(self.latencies_ns) / self.duration

    def line(self) -> str:
        return (
            f"C={self.clients:<2} {self.system:<10} {self.jobs_per_s:>8.0f} jobs/s"
            f"  p50 {self.percentile_us(0.5):7.1f} us  p99 {self.percentile_us(0.99):7.1f} us"
            f"  errors {self.errors}"
        )

    def percentile_us(self, q: float) -> float:
        """Nearest-rank percentile of the recorded latencies, in microseconds."""
        values = self.latencies_ns  # sorted by run_load
        if not values:
            return math.nan
        return values[max(0, math.ceil(q * len(values)) - 1)] / 1000


def run_load(endpoint: str, clients: int, warmup: float, duration: float) -> tuple[list[int], int]:
    """Run ``clients`` client processes against ``endpoint``; return sorted latencies, errors."""
    ready, results, go = MP.Queue(), MP.Queue(), MP.Event()
    start_ns = MP.Value("q", 0)
    procs = [
        MP.Process(
            target=client_main,
            args=(i, endpoint, warmup, duration, ready, go, start_ns, results),
            daemon=True,
        )
        for i in range(clients)
    ]
    latencies: list[int] = []
    errors = 0
    try:
        for p in procs:
            p.start()
        collect(ready, procs, STARTUP_TIMEOUT, "load-generator clients to start")
        start_ns.value = time.monotonic_ns() + 20_000_000  # 20 ms for every client to wake up
        go.set()
        timeout = warmup + duration + REPLY_TIMEOUT_MS / 1000 + RESULT_SLACK
        for _, raw, client_errors in collect(results, procs, timeout, "client results"):
            if client_errors < 0:
                raise BenchError("a load-generator client never got the start signal")
            latencies.extend(array("q", raw))
            errors += client_errors
    finally:
        go.set()  # release clients still waiting if start-up failed
        for p in procs:
            p.join(timeout=STOP_TIMEOUT)
            if p.is_alive():
                p.kill()
                p.join(timeout=KILL_TIMEOUT)
        for q in (ready, results):
            q.close()
            q.join_thread()
    latencies.sort()
    return latencies, errors


def measure(
    system: str, workdir: Path, tag: str, workers: int, clients: int, warmup: float, duration: float
) -> RunResult:
    if system == "proxy":
        with proxy_system(workdir, tag, workers) as endpoint:
            latencies, errors = run_load(endpoint, clients, warmup, duration)
    else:
        with zmqserver_system(workdir, tag, workers) as server:
            latencies, errors = run_load(server.frontend, clients, warmup, duration)
    return RunResult(system, clients, duration, latencies, errors)


# -- idle CPU --------------------------------------------------------------------------------------


def idle_cpu(workdir: Path, workers: int, window: float) -> tuple[float, float | None, bool]:
    """CPU of an idle zmqserver (broker + workers) in % of one core: (ticks, schedstat, settled).

    Measured once the server echoes, has all its workers and has gone quiet (less than 2% of a
    core over 0.25 s, waiting at most SETTLE_TIMEOUT), so start-up work is not counted.
    """
    with zmqserver_system(workdir, "idle", workers) as server:
        pids = [server.proc.pid, *server.workers]

        def total_ns() -> int | None:
            values = [cpu_ns(p) for p in pids]
            return None if None in values else sum(v for v in values if v is not None)

        settled = False
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            before_t, before_n = sum(cpu_ticks(p) for p in pids), total_ns()
            time.sleep(0.25)
            after_t, after_n = sum(cpu_ticks(p) for p in pids), total_ns()
            if before_n is not None and after_n is not None:
                quiet = after_n - before_n < 0.02 * 0.25e9
            else:
                quiet = after_t == before_t
            if quiet:
                settled = True
                break
        t0 = time.monotonic()
        ticks0, ns0 = sum(cpu_ticks(p) for p in pids), total_ns()
        time.sleep(window)
        ticks1, ns1 = sum(cpu_ticks(p) for p in pids), total_ns()
        elapsed = time.monotonic() - t0
        if not all(alive(p) for p in pids):
            raise BenchError("a zmqserver process exited during the idle measurement")
    by_ticks = 100 * (ticks1 - ticks0) / os.sysconf("SC_CLK_TCK") / elapsed
    by_ns = 100 * (ns1 - ns0) / 1e9 / elapsed if ns0 is not None and ns1 is not None else None
    return by_ticks, by_ns, settled


# -- report ----------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def report(results: list[RunResult], repeat: int) -> None:
    rows = []
    summary: dict[tuple[int, str], tuple[float, float]] = {}
    for clients in CLIENT_COUNTS:
        for system in SYSTEMS:
            runs = [r for r in results if r.clients == clients and r.system == system]
            jobs = median([r.jobs_per_s for r in runs])
            p50 = median([r.percentile_us(0.50) for r in runs])
            p99 = median([r.percentile_us(0.99) for r in runs])
            errors = sum(r.errors for r in runs)
            summary[clients, system] = (jobs, p50)
            each = " ".join(f"{r.jobs_per_s:.0f}" for r in runs)
            rows.append((f"C={clients}", system, jobs, p50, p99, errors, each))

    print(f"\nmedian of {repeat} interleaved runs per row (errors: sum over all runs)\n")
    print(
        f"{'config':<7} {'system':<10} {'jobs/s':>8} {'p50 us':>8} {'p99 us':>8} {'errors':>6}  "
        "jobs/s per run"
    )
    for config, system, jobs, p50, p99, errors, each in rows:
        print(f"{config:<7} {system:<10} {jobs:>8.0f} {p50:>8.1f} {p99:>8.1f} {errors:>6}  {each}")

    print("\nratio zmqserver/proxy")
    print(f"{'config':<7} {'jobs/s':>8} {'p50':>8}")
    for clients in CLIENT_COUNTS:
        (zj, zp), (pj, pp) = summary[clients, "zmqserver"], summary[clients, "proxy"]
        print(f"{f'C={clients}':<7} {zj / pj:>8.2f} {zp / pp:>8.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="recorded seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per system")
    parser.add_argument("--warmup", type=float, default=0.5, help="unrecorded seconds per run")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every started process is stopped by the finally blocks.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.duration <= 0 or args.repeat < 1 or args.workers < 1 or args.warmup < 0:
        parser.error("--duration must be > 0, --repeat and --workers >= 1, --warmup >= 0")

    cores = len(os.sched_getaffinity(0))
    print(
        f"Python {platform.python_version()}, pyzmq {zmq.pyzmq_version()}, "
        f"libzmq {zmq.zmq_version()}, {cores} core(s) usable ({os.cpu_count()} online)"
    )
    print(
        f"payload {PAYLOAD_SIZE} B, {args.workers} worker(s), clients {CLIENT_COUNTS}, "
        f"{args.warmup:g}s warmup + {args.duration:g}s recorded, {args.repeat} repeat(s), "
        "ipc:// endpoints\n"
    )

    started = time.monotonic()
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="zmqbench-") as tmp:
        workdir = Path(tmp)
        try:
            for r in range(args.repeat):
                for clients in CLIENT_COUNTS:
                    order = SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]
                    for system in order:
                        tag = f"r{r}-c{clients}-{system}"
                        result = measure(
                            system, workdir, tag, args.workers, clients, args.warmup, args.duration
                        )
                        results.append(result)
                        print(f"  run {r + 1}/{args.repeat} {result.line()}", flush=True)
            report(results, args.repeat)
            by_ticks, by_ns, settled = idle_cpu(workdir, IDLE_WORKERS, IDLE_WINDOW)
        except BenchError as exc:
            print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
            return 1
    extra = f", {by_ns:.2f}% by schedstat" if by_ns is not None else ""
    note = "" if settled else " (did not go quiet within the settle time)"
    print(
        f"\nidle CPU, zmqserver with {IDLE_WORKERS} workers over {IDLE_WINDOW:g}s: {by_ticks:.2f}% "
        f"of one core (utime+stime of broker and workers){extra}{note}"
    )
    print(f"\ntotal time {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
