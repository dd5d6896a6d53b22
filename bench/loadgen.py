"""The load generator: C client processes, each keeping K requests outstanding.

    .venv/bin/python -m bench.loadgen ENDPOINT [ENDPOINT ...] [-c 4] [-k 16] [-s 64] [-d 3]
                                      [--warmup 0.5] [--broker-pid PID]
                                      [--slow-every 10 --fast-ms 1 --slow-ms 50]

prints jobs/s, p50/p99 latency, errors and, given ``--broker-pid``, the broker's CPU use (utime +
stime of that PID from /proc over the recorded window, in % of one core; all its threads, so
libzmq's I/O thread is included). Several endpoints: each client connects to all of them and
ZeroMQ round-robins (the "no broker" baseline). ``K == 1`` uses REQ sockets, ``K > 1`` DEALERs
sending plain ``['', payload]`` requests. Every payload is unique and every reply is checked byte
for byte (bench/_client.py).

All clients start together (a shared CLOCK_MONOTONIC start time), run ``warmup`` seconds
unrecorded, then ``duration`` seconds recorded; a request counts only if it was sent and answered
inside the recorded window, so jobs/s = recorded requests / duration.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from bench._client import HEADER_SIZE
from bench.procs import BenchError, Launcher

STARTUP_TIMEOUT = 20.0  # for the client processes to start and connect
REPLY_TIMEOUT_MS = 3000  # a reply later than this is an error
RESULT_SLACK = 15.0  # extra time for clients to finish and report after their window
GO_DELAY = 0.05  # seconds between "GO" and the first request, so all clients start together


@dataclass
class LoadSpec:
    clients: int = 1
    k: int = 1
    size: int = 64
    duration: float = 3.0
    warmup: float = 0.5
    slow_every: int = 0  # every n-th request is slow (0: none)
    fast_ms: int = 0  # the app sleeps this long on an ordinary request (bench.apps:uneven)
    slow_ms: int = 0  # ... and this long on a slow one
    timeout_ms: int = REPLY_TIMEOUT_MS

    def check(self) -> None:
        if self.clients < 1 or self.k < 1 or self.duration <= 0 or self.warmup < 0:
            raise ValueError("clients and k must be >= 1, duration > 0, warmup >= 0")
        if self.size < HEADER_SIZE:
            raise ValueError(f"payload size must be at least {HEADER_SIZE} bytes")
        if not 0 <= self.slow_ms < 10_000 or not 0 <= self.fast_ms < 10_000:
            raise ValueError("sleep times must be below 10 s")


@dataclass
class LoadResult:
    spec: LoadSpec
    jobs: int  # recorded requests (fast + slow)
    errors: int
    error_samples: list[str]
    fast_ns: list[int] = field(repr=False)  # sorted
    slow_ns: list[int] = field(repr=False)  # sorted
    broker_cpu: float | None = None  # % of one core over the window
    workers_cpu: float | None = None  # % of one core, all workers together
    clients_cpu: float = 0.0  # % of one core, all load-generator clients together
    extra_cpu: float = 0.0  # % of one core, other processes of this benchmark (a crowd)
    machine_busy: float = 0.0  # % of all the machine's cores busy (anything running)
    process_busy: float = 0.0  # the same, counting only time charged to processes
    steal: float = 0.0  # % of all the machine's cores taken by the hypervisor (a VM's noise)
    broker_rss_kb: int | None = None  # the broker's VmRSS at the end of the window
    cores: int = 1

    @property
    def other_cpu(self) -> float:
        """% of one core used by processes outside this measurement (others' load: noise)."""
        ours = (self.broker_cpu or 0) + (self.workers_cpu or 0) + self.clients_cpu + self.extra_cpu
        return max(0.0, self.process_busy * self.cores - ours)

    elapsed: float = 0.0  # measured length of the window the CPU was read over

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.spec.duration

    def percentile_us(self, q: float, which: str = "all") -> float:
        """Nearest-rank percentile in microseconds, of all, the fast or the slow requests."""
        if which == "fast":
            values = self.fast_ns
        elif which == "slow":
            values = self.slow_ns
        else:
            values = sorted(self.fast_ns + self.slow_ns) if self.slow_ns else self.fast_ns
        if not values:
            return math.nan
        return values[max(0, math.ceil(q * len(values)) - 1)] / 1000

    def cpu_us_per_job(self, percent: float | None) -> float | None:
        if percent is None or not self.jobs:
            return None
        return percent / 100 * self.spec.duration / self.jobs * 1e6

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly numbers (no raw latencies)."""
        out: dict[str, Any] = {
            "spec": asdict(self.spec),
            "jobs": self.jobs,
            "jobs_per_s": self.jobs_per_s,
            "p50_us": self.percentile_us(0.5),
            "p99_us": self.percentile_us(0.99),
            "errors": self.errors,
            "error_samples": self.error_samples,
            "broker_cpu_pct": self.broker_cpu,
            "workers_cpu_pct": self.workers_cpu,
            "clients_cpu_pct": self.clients_cpu,
            "extra_cpu_pct": self.extra_cpu,
            "machine_busy_pct": self.machine_busy,
            "broker_rss_kb": self.broker_rss_kb,
            "process_busy_pct": self.process_busy,
            "steal_pct": self.steal,
            "other_cpu_pct": self.other_cpu,
            "broker_cpu_us_per_job": self.cpu_us_per_job(self.broker_cpu),
            "workers_cpu_us_per_job": self.cpu_us_per_job(self.workers_cpu),
        }
        if self.slow_ns:
            out["fast_p50_us"] = self.percentile_us(0.5, "fast")
            out["fast_p99_us"] = self.percentile_us(0.99, "fast")
            out["slow_p99_us"] = self.percentile_us(0.99, "slow")
            out["slow_jobs"] = len(self.slow_ns)
        return out

    def line(self) -> str:
        text = (
            f"{self.jobs_per_s:>8.0f} jobs/s  p50 {self.percentile_us(0.5):8.1f} us"
            f"  p99 {self.percentile_us(0.99):8.1f} us  errors {self.errors}"
        )
        if self.slow_ns:
            text += f"  (fast jobs p99 {self.percentile_us(0.99, 'fast'):8.1f} us)"
        if self.broker_cpu is not None:
            text += f"  broker CPU {self.broker_cpu:5.1f}%"
        return text + f"  (machine {self.machine_busy:3.0f}% busy)"


def run_load(
    launcher: Launcher,
    endpoints: Sequence[str],
    spec: LoadSpec,
    *,
    broker_pid: int | None = None,
    worker_pids: Sequence[int] = (),
    extra_pids: Sequence[int] = (),
) -> LoadResult:
    """Run ``spec.clients`` client processes against ``endpoints`` and collect their results.

    ``extra_pids``: other processes of the benchmark running meanwhile (their CPU is reported
    apart and not taken for outside noise).
    """
    spec.check()
    outdir = Path(tempfile.mkdtemp(prefix="load-", dir=launcher.workdir))
    clients = []
    try:
        for i in range(spec.clients):
            client_spec = {
                **asdict(spec),
                "index": i,
                "endpoints": list(endpoints),
                "out": str(outdir / f"c{i}"),
            }
            clients.append(launcher.start("bench._client", [json.dumps(client_spec)], pipes=True))
        ready = procs.read_lines(clients, STARTUP_TIMEOUT, "load-generator clients to start")
        if any(line != b"READY" for line in ready):
            raise BenchError(f"a client did not start: {ready!r}")
        t0 = time.monotonic_ns() + int(GO_DELAY * 1e9)
        window_start = t0 + int(spec.warmup * 1e9)
        window_end = window_start + int(spec.duration * 1e9)
        for proc in clients:
            procs.write_line(proc, f"GO {t0} {window_start} {window_end}")

        # The broker's and workers' CPU over the recorded window, read from /proc.
        _sleep_until_ns(window_start)
        started = time.monotonic()
        client_pids = [p.pid for p in clients]
        broker0 = procs.cpu_seconds([broker_pid]) if broker_pid else 0.0
        workers0 = procs.cpu_seconds(worker_pids)
        clients0 = procs.cpu_seconds(client_pids)
        extra0 = procs.cpu_seconds(extra_pids)
        busy0, in_procs0, steal0, total0 = procs.machine_ticks()
        _sleep_until_ns(window_end)
        elapsed = time.monotonic() - started
        broker1 = procs.cpu_seconds([broker_pid]) if broker_pid else 0.0
        workers1 = procs.cpu_seconds(worker_pids)
        clients1 = procs.cpu_seconds(client_pids)
        extra1 = procs.cpu_seconds(extra_pids)
        busy1, in_procs1, steal1, total1 = procs.machine_ticks()
        rss = procs.status_kb(broker_pid, "VmRSS") if broker_pid else None

        timeout = spec.timeout_ms / 1000 + RESULT_SLACK
        reports = [json.loads(r) for r in procs.read_lines(clients, timeout, "client results")]
        fast, slow = array("q"), array("q")
        for i in range(spec.clients):
            fast.frombytes((outdir / f"c{i}.fast").read_bytes())
            slow.frombytes((outdir / f"c{i}.slow").read_bytes())
    finally:
        for proc in clients:
            launcher.stop(proc)
        shutil.rmtree(outdir, ignore_errors=True)
    samples = [s for r in reports for s in r["samples"]][:5]
    return LoadResult(
        spec=spec,
        jobs=sum(r["ok"] for r in reports),
        errors=sum(r["errors"] for r in reports),
        error_samples=samples,
        fast_ns=sorted(fast),
        slow_ns=sorted(slow),
        broker_cpu=100 * (broker1 - broker0) / elapsed if broker_pid else None,
        workers_cpu=100 * (workers1 - workers0) / elapsed if worker_pids else None,
        clients_cpu=100 * (clients1 - clients0) / elapsed,
        extra_cpu=100 * (extra1 - extra0) / elapsed,
        machine_busy=100 * (busy1 - busy0) / max(1, total1 - total0),
        process_busy=100 * (in_procs1 - in_procs0) / max(1, total1 - total0),
        steal=100 * (steal1 - steal0) / max(1, total1 - total0),
        broker_rss_kb=rss,
        cores=len(os.sched_getaffinity(0)),
        elapsed=elapsed,
    )


def _sleep_until_ns(t_ns: int) -> None:
    left = t_ns - time.monotonic_ns()
    if left > 0:
        time.sleep(left / 1e9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description=__doc__.split("\n")[0]
    )
    parser.add_argument("endpoints", nargs="+", metavar="ENDPOINT")
    parser.add_argument("-c", "--clients", type=int, default=1, help="client processes")
    parser.add_argument("-k", type=int, default=1, help="requests outstanding per client")
    parser.add_argument("-s", "--size", type=int, default=64, help="payload bytes")
    parser.add_argument("-d", "--duration", type=float, default=3.0, help="recorded seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="unrecorded seconds first")
    parser.add_argument("--broker-pid", type=int, help="PID whose CPU use to report")
    parser.add_argument("--slow-every", type=int, default=0, help="every n-th request is slow")
    parser.add_argument("--fast-ms", type=int, default=0, help="sleep of a fast request")
    parser.add_argument("--slow-ms", type=int, default=0, help="sleep of a slow request")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    spec = LoadSpec(
        args.clients,
        args.k,
        args.size,
        args.duration,
        args.warmup,
        args.slow_every,
        args.fast_ms,
        args.slow_ms,
    )
    try:
        spec.check()
    except ValueError as exc:
        parser.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="zmqload-") as tmp:
        launcher = Launcher(Path(tmp))
        try:
            result = run_load(launcher, args.endpoints, spec, broker_pid=args.broker_pid)
        except BenchError as exc:
            print(f"load generator failed: {exc}", file=sys.stderr)
            return 1
        finally:
            launcher.stop_all()
    if args.json:
        print(json.dumps(result.summary()))
    else:
        print(f"C={spec.clients} K={spec.k} S={spec.size} B  {result.line()}")
        for sample in result.error_samples:
            print(f"  error: {sample}")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
