"""The benchmark suite: zmqserver against no broker and pyzmq's C proxy, same machine, same run.

    .venv/bin/python -m bench.run [--duration 3] [--repeat 3] [--workers 2] [--out bench/results]
                                  [--plot bench/results/bench.png] [--systems ...] [--configs ...]
                                  [--extras idle queued crowd fairness | --no-extras]

(``make bench`` runs it with these defaults.) For each configuration (clients C, requests
outstanding per client K, payload size S, app) every system is started fresh, loaded by
bench/loadgen.py, and stopped; repeats are interleaved (repeat -> configuration -> system, the
system order rotating per repeat). Then the extra scenarios (bench/scenarios.py). Results go to
``--out`` as JSON (every run) and Markdown (the tables), and the plot to ``--plot``.

Systems: ``direct`` (clients straight to N REP workers), ``proxy`` (C ``zmq.proxy``, ROUTER/DEALER,
N REP workers), ``zmqserver`` (its compiled code, where it was built) and
``zmqserver-py`` (the same with ZMQSERVER_PURE_PYTHON=1); opt-in, ``zmqserver-lru`` (zmqserver with
``--worker-credit 1``, strict LRU). Clients, broker and workers all share
the machine's cores, so this measures the whole set-up on this box, not the broker alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import zmq

from bench import clients, procs, report, scenarios
from bench.loadgen import LoadSpec, run_load
from bench.procs import REPO, BenchError, Launcher
from bench.systems import OPT_IN_SYSTEMS, SYSTEMS, start_system, zmqserver_argv

ECHO = "examples.echo:app"
UNEVEN = "bench.apps:uneven"

#: name -> (load, app). The uneven workload: every 10th job sleeps 50 ms, the others 1 ms, and
#: there is one synchronous client per worker, so the only question is whether a job is sent to a
#: busy worker while another is idle (round-robin does that, LRU does not). With more clients
#: than workers, jobs queue under any dispatch and both p99s approach the slow job's length.
CONFIGS: dict[str, tuple[LoadSpec, str]] = {
    "C1-K1-64B": (LoadSpec(clients=1, k=1, size=64), ECHO),
    "C8-K1-64B": (LoadSpec(clients=8, k=1, size=64), ECHO),
    "C4-K16-64B": (LoadSpec(clients=4, k=16, size=64), ECHO),
    "C4-K16-64KiB": (LoadSpec(clients=4, k=16, size=65536), ECHO),
    "uneven": (LoadSpec(clients=2, k=1, size=64, slow_every=10, fast_ms=1, slow_ms=50), UNEVEN),
}
UNEVEN_MIN_DURATION = 5.0  # few jobs per second: record longer for a steadier p99
EXTRAS = ("idle", "queued", "crowd", "fairness")


def machine() -> dict[str, Any]:
    import zmqserver

    return {
        "python": platform.python_version(),
        "pyzmq": zmq.pyzmq_version(),
        "libzmq": zmq.zmq_version(),
        "cores": len(os.sched_getaffinity(0)),
        "cpus_online": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "zmqserver": getattr(zmqserver, "__version__", "?"),
        "git": _git_head(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip()[:12] if out.returncode == 0 else "?"


def background_busy(seconds: float = 1.0) -> float:
    """% of the machine busy before the suite starts anything (other people's load)."""
    busy0, _, _, total0 = procs.machine_ticks()
    time.sleep(seconds)
    busy1, _, _, total1 = procs.machine_ticks()
    return 100 * (busy1 - busy0) / max(1, total1 - total0)


def run_matrix(
    launcher: Launcher, args: argparse.Namespace, runs: list[dict[str, Any]]
) -> dict[str, bool]:
    """All configurations x systems x repeats; appends one summary per run to ``runs``."""
    compiled: dict[str, bool] = {}
    systems = list(args.systems)
    total = args.repeat * len(args.configs) * len(systems)
    done = 0
    for r in range(args.repeat):
        for config in args.configs:
            base, app = CONFIGS[config]
            duration = max(args.duration, UNEVEN_MIN_DURATION) if base.slow_every else args.duration
            spec = replace(base, duration=duration, warmup=args.warmup)
            shift = r % len(systems)
            for system in systems[shift:] + systems[:shift]:
                tag = f"r{r}-{config}-{system}"
                with start_system(system, launcher, tag, args.workers, app) as target:
                    result = run_load(
                        launcher,
                        target.endpoints,
                        replace(spec),
                        broker_pid=target.broker_pid,
                        worker_pids=target.worker_pids,
                    )
                    target.check_workers()
                    if target.compiled is not None:
                        compiled[system] = target.compiled
                done += 1
                summary = result.summary()
                runs.append({"config": config, "system": system, "repeat": r, **summary})
                line = f"  [{done:>2}/{total}] {config:<13} {system:<12} {result.line()}"
                print(line, flush=True)
                for sample in result.error_samples:
                    print(f"      error: {sample}")
    return compiled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="recorded seconds per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="unrecorded seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration and system")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per system")
    parser.add_argument(
        "--systems", nargs="+", choices=SYSTEMS + OPT_IN_SYSTEMS, default=list(SYSTEMS)
    )
    parser.add_argument(
        "--configs", nargs="*", choices=list(CONFIGS), default=list(CONFIGS), help="none: extras"
    )
    parser.add_argument("--extras", nargs="*", choices=EXTRAS, default=list(EXTRAS))
    parser.add_argument("--no-extras", dest="extras", action="store_const", const=[])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--plot", type=Path, help="write the PNG plot here (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.repeat < 1 or args.workers < 1 or args.warmup < 0:
        parser.error("--duration must be > 0, --repeat and --workers >= 1, --warmup >= 0")
    if args.configs and "proxy" not in args.systems:
        parser.error("the C proxy is the yardstick: --systems must include proxy")
    # SIGTERM and SIGHUP unwind like Ctrl-C, so every started process is stopped by the finally.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))

    meta: dict[str, Any] = {
        **machine(),
        "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "workers": args.workers,
        "repeat": args.repeat,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "transport": "ipc",
        "zmqserver_serve": " ".join(
            ["python -m zmqserver", *zmqserver_argv("APP", "ipc://F", "ipc://B", args.workers)]
        ),
        "loadavg_before": os.getloadavg(),
        "background_busy_pct": background_busy(),
    }
    print(
        f"Python {meta['python']}, pyzmq {meta['pyzmq']}, libzmq {meta['libzmq']}, "
        f"{meta['cores']} core(s) ({meta['cpu_model']}); load average "
        f"{meta['loadavg_before'][0]:.2f}, machine {meta['background_busy_pct']:.0f}% busy "
        "before start"
    )
    print(
        f"{args.workers} workers; {args.warmup:g}s warmup + {args.duration:g}s recorded per run; "
        f"{args.repeat} repeat(s); systems {', '.join(args.systems)}\n"
    )
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    extras: dict[str, Any] = {}
    strays: list[int] = []
    status = 0
    with tempfile.TemporaryDirectory(prefix="zmqbench-") as tmp:
        launcher = Launcher(Path(tmp))
        try:
            meta["compiled"] = run_matrix(launcher, args, runs)
            if "idle" in args.extras:
                extras["idle"] = scenarios.idle_cpu(launcher)
            if "queued" in args.extras:
                extras["queued"] = scenarios.queued_memory(launcher)
            if "crowd" in args.extras:
                extras["crowd"] = scenarios.crowd(launcher)
            if "fairness" in args.extras:
                extras["fairness"] = clients.fairness(launcher, "--max-client-inflight", "0")
        except BenchError as exc:
            print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
            status = 1
        finally:
            launcher.stop_all()
            strays = launcher.strays()
    meta["loadavg_after"] = os.getloadavg()
    meta["total_s"] = time.monotonic() - started
    data = {
        "meta": meta,
        "configs": [c for c in args.configs if any(r["config"] == c for r in runs)],
        "systems": list(args.systems),
        "runs": runs,
        "extras": extras,
        "strays": strays,
    }
    if not runs and not extras:
        return status or 1
    text = (report.markdown(data) + "\n" if runs else "") + report.extras_markdown(extras)
    print("\n" + text)
    if strays:
        print(f"STRAY PROCESSES left behind: {strays}", file=sys.stderr)
        status = 1
    else:
        print("no stray processes left behind")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = args.out / f"bench-{stamp}.json"
    json_path.write_text(json.dumps(data, indent=1))
    (args.out / f"bench-{stamp}.md").write_text(text)
    print(f"results: {json_path}")
    if args.plot and runs:
        if report.plot(data, args.plot):
            print(f"plot: {args.plot}")
        else:
            print("no plot: matplotlib is not installed (pip install -e '.[bench]')")
    print(f"total time {meta['total_s']:.0f}s")
    return status


if __name__ == "__main__":
    sys.exit(main())
