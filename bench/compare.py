"""zmqserver against Celery + Redis, zerorpc, gRPC and majortomo: same machine, same run.

    .venv/bin/python -m bench.compare [--systems ...] [--clients 1 8] [--duration 3]
                                      [--warmup 1] [--repeat 3] [--plot bench/results/compare.png]

The same job in every system (the echo of examples/echo.py, 64-byte payloads), 2 processes
doing it, TCP on 127.0.0.1, and the same load: C client processes (1 and 8), each with one
request at a time (K=1), made with each system's own client library (bench/_compare_client.py).
How each system is set up: bench/rivals.py. Every (C, system) runs ``--repeat`` times,
interleaved (repeat, then C, then system, the system order rotating per repeat), each with the
system started fresh and stopped by PID afterwards; the table shows the medians, and the ratios
to zmqserver in the same run. "Server CPU" is the CPU time (user + system) of every process of
the system (broker, Redis, workers) per job over the recorded window; "clients' CPU" that of the
client processes: all share the machine's cores, so a costly client library lowers the rate too.

Celery needs ``redis-server`` (Debian's package): without it Celery is skipped, and said so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import procs, rivals
from bench.procs import REPO, BenchError, Launcher
from bench.report import save_plot
from bench.run import background_busy, machine

READY_TIMEOUT = 60.0  # client processes import their library and connect


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest rank, as bench/loadgen.py."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def load(
    launcher: Launcher, system: Any, clients: int, size: int, warmup: float, duration: float
) -> dict[str, Any]:
    """C client processes against ``system``: one measured run."""
    name = system.name
    started = [
        launcher.start(
            "bench._compare_client",
            [name, str(i), str(size), *system.endpoints],
            pipes=True,
            log=None,
        )
        for i in range(clients)
    ]
    try:
        procs.read_lines(started, READY_TIMEOUT, f"{name} clients ready")
        t0 = time.monotonic() + 0.2
        for proc in started:
            procs.write_line(proc, f"{t0} {warmup} {duration}")
        pids, client_pids = rivals.server_pids(system), [p.pid for p in started]
        time.sleep(max(0.0, t0 + warmup - time.monotonic()))
        cpu0, ticks0 = procs.cpu_seconds(pids), procs.machine_ticks()
        client0 = procs.cpu_seconds(client_pids)
        time.sleep(max(0.0, t0 + warmup + duration - time.monotonic()))
        cpu1, ticks1 = procs.cpu_seconds(pids), procs.machine_ticks()
        client1 = procs.cpu_seconds(client_pids)
        lines = procs.read_lines(started, rivals.STARTUP_TIMEOUT, f"{name} client results")
    finally:
        for proc in started:
            launcher.stop(proc)
    reports = [json.loads(line) for line in lines]
    latencies = sorted(v for r in reports for v in r["lat_us"])
    jobs = len(latencies)
    busy = 100 * (ticks1[0] - ticks0[0]) / max(1, ticks1[3] - ticks0[3])
    return {
        "jobs": jobs,
        "jobs_per_s": jobs / duration,
        "p50_us": percentile(latencies, 50),
        "p99_us": percentile(latencies, 99),
        "server_cpu_us_per_job": (cpu1 - cpu0) * 1e6 / jobs if jobs else math.nan,
        "client_cpu_us_per_job": (client1 - client0) * 1e6 / jobs if jobs else math.nan,
        "machine_busy_pct": busy,
        "errors": sum(r["errors"] for r in reports),
        "error": next((r["error"] for r in reports if r["error"]), ""),
    }


def run_matrix(launcher: Launcher, args: argparse.Namespace) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    systems = list(args.systems)
    total, done = args.repeat * len(args.clients) * len(systems), 0
    for r in range(args.repeat):
        for clients in args.clients:
            shift = r % len(systems)
            for name in systems[shift:] + systems[:shift]:
                tag = f"r{r}-c{clients}-{name}"
                with rivals.start(name, launcher, tag, args.workers) as system:
                    result = load(launcher, system, clients, args.size, args.warmup, args.duration)
                    if system.compiled is not None:  # zmqserver: its compiled code was loaded
                        result["compiled"] = system.compiled
                runs.append({"system": name, "clients": clients, "repeat": r, **result})
                done += 1
                print(
                    f"  [{done:>2}/{total}] C={clients:<2} {name:<10} "
                    f"{result['jobs_per_s']:>8,.0f} jobs/s  p50 {result['p50_us']:>7,.0f} us  "
                    f"p99 {result['p99_us']:>7,.0f} us  server CPU "
                    f"{result['server_cpu_us_per_job']:>5,.0f} us/job, clients "
                    f"{result['client_cpu_us_per_job']:>5,.0f} us/job  errors {result['errors']}"
                    + (f" ({result['error']})" if result["error"] else ""),
                    flush=True,
                )
    return runs


METRICS = (
    "jobs_per_s",
    "p50_us",
    "p99_us",
    "server_cpu_us_per_job",
    "client_cpu_us_per_job",
    "machine_busy_pct",
)


def medians(data: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for clients in data["clients"]:
        for system in data["systems"]:
            runs = [r for r in data["runs"] if r["system"] == system and r["clients"] == clients]
            if runs:
                row: dict[str, Any] = {
                    m: statistics.median(r[m] for r in runs if not math.isnan(r[m]))
                    if any(not math.isnan(r[m]) for r in runs)
                    else math.nan
                    for m in METRICS
                }
                row["errors"] = sum(r["errors"] for r in runs)
                row["each"] = [r["jobs_per_s"] for r in runs]
                rows[system, clients] = row
    return rows


def _fmt(value: float, digits: int = 0) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _ratio(row: dict[str, Any], base: dict[str, Any] | None, metric: str) -> str:
    if not base or not base[metric] or math.isnan(base[metric]):
        return "-"
    return _fmt(row[metric] / base[metric], 2)


def markdown(data: dict[str, Any]) -> str:
    rows = medians(data)
    out = [
        "| C | system | jobs/s | p50 µs | p99 µs | jobs/s vs zmqserver | p50 vs zmqserver "
        "| p99 vs zmqserver | server CPU µs/job | clients' CPU µs/job | machine busy % | errors "
        "| jobs/s of each run |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for clients in data["clients"]:
        base = rows.get(("zmqserver", clients))
        for system in data["systems"]:
            row = rows.get((system, clients))
            if row is None:
                continue
            ratios = [_ratio(row, base, m) for m in ("jobs_per_s", "p50_us", "p99_us")]

            out.append(
                f"| {clients} | {system} | {_fmt(row['jobs_per_s'])} | {_fmt(row['p50_us'])} "
                f"| {_fmt(row['p99_us'])} | {' | '.join(ratios)} "
                f"| {_fmt(row['server_cpu_us_per_job'])} | {_fmt(row['client_cpu_us_per_job'])} "
                f"| {_fmt(row['machine_busy_pct'])} | {row['errors']} "
                f"| {' '.join(_fmt(v) for v in row['each'])} |"
            )
    return "\n".join(out) + "\n"


def plot(data: dict[str, Any], path: Path) -> bool:
    """jobs/s and p50/p99 per system at each C; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = medians(data)
    systems, counts = data["systems"], data["clients"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=80)
    width = 0.8 / len(counts)
    xs = range(len(systems))
    for i, clients in enumerate(counts):
        offset = (i - (len(counts) - 1) / 2) * width
        get = lambda m, c=clients: [rows.get((s, c), {}).get(m, math.nan) for s in systems]  # noqa: E731
        axes[0].bar([x + offset for x in xs], get("jobs_per_s"), width, label=f"C={clients}")
        p50, p99 = get("p50_us"), get("p99_us")
        bars = axes[1].bar([x + offset for x in xs], p50, width, label=f"C={clients} p50")
        color = bars.patches[0].get_facecolor() if bars.patches else None
        axes[1].scatter([x + offset for x in xs], p99, marker="_", s=300, color=color,
                        label=f"C={clients} p99")  # fmt: skip
    for ax, title in (
        (axes[0], "throughput, jobs/s (higher is better)"),
        (axes[1], "latency, µs: bars p50, ticks p99 (lower is better)"),
    ):
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(list(xs), systems, fontsize=9)
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.legend(fontsize=8)
    meta = data["meta"]
    save_plot(
        fig,
        path,
        f"64 B echo, 2 server processes each, K=1 per client, TCP loopback; median of "
        f"{meta['repeat']} runs; {meta['cores']} cores shared by clients and servers",
    )
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--systems", nargs="+", choices=rivals.SYSTEMS, default=list(rivals.SYSTEMS)
    )
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8], help="C values")
    parser.add_argument("--duration", type=float, default=3.0, help="recorded seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="processes doing the job")
    parser.add_argument("--size", type=int, default=64, help="payload bytes")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--plot", type=Path, help="write the PNG plot here (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.repeat < 1 or args.workers < 1 or args.warmup < 0:
        parser.error("--duration must be > 0, --repeat and --workers >= 1, --warmup >= 0")
    if min(args.clients) < 1 or args.size < 1:
        parser.error("--clients and --size must be >= 1")
    if "zmqserver" not in args.systems:
        parser.error("zmqserver is the yardstick: --systems must include it")
    if "celery" in args.systems and not rivals.have_redis():
        print("Celery skipped: no redis-server (Debian: apt-get install redis-server)")
        args.systems.remove("celery")
    missing = [s for s in args.systems if not rivals.importable(s)]
    for name in missing:
        print(f"{name} skipped: not installed (pip install -e '.[compare]')")
        args.systems.remove(name)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    meta: dict[str, Any] = {
        **machine(),
        "command": " ".join(
            ["python -m bench.compare", *(argv if argv is not None else sys.argv[1:])]
        ),
        "workers": args.workers,
        "repeat": args.repeat,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "size": args.size,
        "versions": rivals.versions(args.systems),
        "loadavg_before": os.getloadavg(),
        "background_busy_pct": background_busy(),
    }
    print(
        f"{meta['cores']} core(s); load average {meta['loadavg_before'][0]:.2f}, machine "
        f"{meta['background_busy_pct']:.0f}% busy before start; {args.warmup:g}s warmup + "
        f"{args.duration:g}s recorded per run, {args.repeat} repeat(s); "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    )
    runs: list[dict[str, Any]] = []
    status = 0
    with tempfile.TemporaryDirectory(prefix="zmqcompare-") as tmp:
        launcher = Launcher(Path(tmp))
        try:
            runs = run_matrix(launcher, args)
        except BenchError as exc:
            print(f"\ncomparison aborted: {exc}", file=sys.stderr)
            status = 1
        finally:
            launcher.stop_all()
            strays = launcher.strays()
    meta["loadavg_after"] = os.getloadavg()
    data = {"meta": meta, "systems": args.systems, "clients": args.clients, "runs": runs}
    if not runs:
        return status or 1
    text = markdown(data)
    print("\n" + text)
    print(
        f"load average before {meta['loadavg_before'][0]:.2f}, after {meta['loadavg_after'][0]:.2f}"
    )
    if strays:
        print(f"STRAY PROCESSES left behind: {strays}", file=sys.stderr)
        status = 1
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"compare-{stamp}.json").write_text(json.dumps(data, indent=1))
    (args.out / f"compare-{stamp}.md").write_text(text)
    print(f"results: {args.out / f'compare-{stamp}.json'}")
    if args.plot:
        print(f"plot: {args.plot}" if plot(data, args.plot) else "no plot: matplotlib is missing")
    if any(r["errors"] for r in runs):
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
