"""Tables, ratios and the plot, from the suite's JSON (so a saved run can be re-rendered).

    .venv/bin/python -m bench.report bench/results/<stamp>.json [--plot docs/bench.png]

Every number in a table is the median over the repeats of that metric (each metric on its own).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

#: The targets of issue 7 (2 workers, echo app, same run): (config, metric, bound, what).
#: ``metric`` is a key of the median row; a ratio is zmqserver / C proxy.
TARGETS = [
    ("C4-K16-64B", "jobs_per_s", ">=", 0.8, "C=4, K=16, 64 B jobs/s"),
    ("C8-K1-64B", "jobs_per_s", ">=", 0.9, "C=8, K=1, 64 B jobs/s"),
    ("C1-K1-64B", "p50_us", "<=", 1.2, "C=1, K=1 p50 latency"),
    ("C4-K16-64KiB", "jobs_per_s", ">=", 1.0, "C=4, K=16, 64 KiB jobs/s"),
    ("uneven", "p99_us", "<=", 1 / 3, "uneven 1 ms / 50 ms p99 (all jobs)"),
    ("uneven", "fast_p99_us", "<=", 1 / 3, "uneven: p99 of the 1 ms jobs"),
]

METRICS = (
    "jobs_per_s",
    "p50_us",
    "p99_us",
    "fast_p99_us",
    "broker_cpu_pct",
    "broker_cpu_us_per_job",
    "workers_cpu_us_per_job",
    "machine_busy_pct",
    "broker_rss_kb",
    "other_cpu_pct",
    "steal_pct",
)


def median(values: list[float | None]) -> float:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def medians(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(config, system) -> the median of each metric over the repeats, errors, jobs/s per run."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for config in data["configs"]:
        for system in data["systems"]:
            runs = [r for r in data["runs"] if r["config"] == config and r["system"] == system]
            if not runs:
                continue
            row: dict[str, Any] = {m: median([r.get(m) for r in runs]) for m in METRICS}
            row["errors"] = sum(r["errors"] for r in runs)
            row["each"] = [r["jobs_per_s"] for r in runs]
            rows[config, system] = row
    return rows


def _fmt(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(rows: dict[tuple[str, str], dict[str, Any]], config: str, system: str, metric: str):
    mine, base = rows.get((config, system)), rows.get((config, "proxy"))
    if not mine or not base or not base[metric] or math.isnan(base[metric]):
        return math.nan
    return mine[metric] / base[metric]


def per_cpu_second(row: dict[str, Any]) -> float:
    """Jobs per second of broker CPU: what one core could carry with workers that cost nothing.

    The median of CPU per job, inverted (with an odd number of runs, the median of the inverses).
    """
    us = row["broker_cpu_us_per_job"]
    return 1e6 / us if us and not math.isnan(us) else math.nan


def capacity(
    rows: dict[tuple[str, str], dict[str, Any]], configs: list[str], systems: list[str]
) -> list[str]:
    """Broker capacity beside the C proxy's: jobs per broker-CPU-second, and the ratio."""
    brokers = [s for s in systems if s == "proxy" or s.startswith("zmqserver")]
    if "proxy" not in brokers or len(brokers) < 2:
        return []
    ours = [s for s in brokers if s != "proxy"]
    out = [
        "Broker capacity: jobs per second of broker CPU (one core's worth, workers aside; "
        "higher is better), and the ratio to the C proxy's:",
        "",
        "| config | proxy | " + " | ".join(f"{s} | ratio" for s in ours) + " |",
        "|---|---:|" + "---:|---:|" * len(ours),
    ]
    for config in configs:
        proxy = rows.get((config, "proxy"))
        if proxy is None:
            continue
        base = per_cpu_second(proxy)
        cells = []
        for system in ours:
            row = rows.get((config, system))
            mine = per_cpu_second(row) if row else math.nan
            cells += [_fmt(mine), _fmt(mine / base, 2) if base else "-"]
        out.append(f"| {config} | {_fmt(base)} | " + " | ".join(cells) + " |")
    return out


def markdown(data: dict[str, Any]) -> str:
    rows = medians(data)
    systems = data["systems"]
    out = [
        "| config | system | jobs/s | p50 µs | p99 µs | broker CPU % | broker CPU µs/job "
        "| jobs per broker-CPU-second | workers CPU µs/job | machine busy % "
        "| other processes' CPU % | steal % | errors | jobs/s of each run |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for config in data["configs"]:
        for system in systems:
            row = rows.get((config, system))
            if row is None:
                continue
            p99 = _fmt(row["p99_us"])
            if not math.isnan(row["fast_p99_us"]):
                p99 += f" (1 ms jobs: {_fmt(row['fast_p99_us'])})"
            out.append(
                f"| {config} | {system} | {_fmt(row['jobs_per_s'])} | {_fmt(row['p50_us'])} "
                f"| {p99} | {_fmt(row['broker_cpu_pct'])} "
                f"| {_fmt(row['broker_cpu_us_per_job'])} | {_fmt(per_cpu_second(row))} "
                f"| {_fmt(row['workers_cpu_us_per_job'])} | {_fmt(row['machine_busy_pct'])} "
                f"| {_fmt(row['other_cpu_pct'])} | {_fmt(row['steal_pct'], 1)} "
                f"| {row['errors']} | {' '.join(_fmt(v) for v in row['each'])} |"
            )
    out += ["", "Ratios to the C proxy (medians; jobs/s: higher is better, latency: lower is):", ""]
    mine = [s for s in systems if s != "proxy"]
    head = " | ".join(f"{s} jobs/s | {s} p50 | {s} p99" for s in mine)
    out.append(f"| config | {head} |")
    out.append("|---|" + "---:|" * (3 * len(mine)))
    for config in data["configs"]:
        cells = []
        for system in mine:
            p99_metric = "fast_p99_us" if config == "uneven" else "p99_us"
            cells += [
                _fmt(_ratio(rows, config, system, "jobs_per_s"), 2),
                _fmt(_ratio(rows, config, system, "p50_us"), 2),
                _fmt(_ratio(rows, config, system, p99_metric), 2),
            ]
        label = f"{config} (p99: 1 ms jobs)" if config == "uneven" else config
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", *capacity(rows, data["configs"], systems)]
    out += ["", "Issue 7 targets (zmqserver / C proxy):", ""]
    ours = [s for s in systems if s.startswith("zmqserver")]
    out.append("| target | bound | " + " | ".join(f"{s} | met" for s in ours) + " |")
    out.append("|---|---|" + "---:|---|" * len(ours))
    for config, metric, op, bound, what in TARGETS:
        cells = []
        for system in ours:
            r = _ratio(rows, config, system, metric)
            ok = r >= bound if op == ">=" else r <= bound
            cells += [_fmt(r, 2), "-" if math.isnan(r) else ("yes" if ok else "no")]
        out.append(f"| {what} | {op} {bound:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def extras_markdown(extras: dict[str, Any]) -> str:
    out = []
    idle = extras.get("idle")
    if idle:
        out.append(
            f"- **Idle CPU**, zmqserver with {idle['workers']} workers over "
            f"{idle['window_s']:.1f} s: broker {idle['broker_cpu_pct']:.2f}% of a core "
            f"(schedstat {idle['broker_cpu_pct_schedstat']:.2f}%), workers together "
            f"{idle['workers_cpu_pct']:.2f}% (schedstat {idle['workers_cpu_pct_schedstat']:.2f}%); "
            f"wake-ups/s: broker {idle['broker_wakeups_per_s']:.0f}, workers "
            f"{idle['workers_wakeups_per_s']:.0f}."
        )
    queued = extras.get("queued")
    if queued:
        out.append(
            f"- **{queued['jobs']:,} jobs queued** ({queued['payload_bytes']} B, 1 busy worker): "
            f"broker VmRSS {queued['rss_before_kb'] / 1024:.1f} MiB -> "
            f"{queued['rss_after_kb'] / 1024:.1f} MiB, {queued['bytes_per_job']:.0f} B per queued "
            f"job; all read and queued {queued['queued_s']:.2f} s after the first was sent; "
            f"{queued['early_replies']} refused. Fast stop (SIGINT) with the clients gone: "
            f"{queued['stop_s']:.1f} s, {queued['log_lines_at_stop']:,} log lines."
        )
    crowd = extras.get("crowd")
    if crowd:
        alone, loaded, c = crowd["alone"], crowd["with_crowd"], crowd["crowd"]
        out.append(
            f"- **{crowd['workers']} workers, {crowd['clients']:,} clients** "
            f"({crowd['processes']} processes, {crowd['crowd_rate_per_s']:.0f} jobs/s in all, "
            f"connected in {crowd['crowd_connect_s']:.1f} s; broker fds "
            f"{crowd['fds_alone']} -> {crowd['fds_crowd']}): probe client (C=1, K=1) alone "
            f"p50 {alone['p50_us']:.0f} µs / p99 {alone['p99_us']:.0f} µs, "
            f"{alone['jobs_per_s']:.0f} jobs/s; with the crowd p50 {loaded['p50_us']:.0f} µs / "
            f"p99 {loaded['p99_us']:.0f} µs, {loaded['jobs_per_s']:.0f} jobs/s; "
            f"broker CPU {alone['broker_cpu_pct']:.0f}% -> {loaded['broker_cpu_pct']:.0f}%. "
            f"Crowd: {c['jobs']:,} jobs, {c['errors']} errors, worst process p99 "
            f"{c['p99_us_max']:.0f} µs, using {loaded.get('extra_cpu_pct', 0):.0f}% of a core. "
            f"Noise (other processes' CPU, steal): alone "
            f"{alone.get('other_cpu_pct', 0):.0f}%, {alone.get('steal_pct', 0):.0f}%; with the "
            f"crowd {loaded.get('other_cpu_pct', 0):.0f}%, {loaded.get('steal_pct', 0):.0f}%."
        )
    fair = extras.get("fairness")
    if fair:
        out.append(
            f"- **Fairness**: one client floods {fair['flood']:,} jobs of {fair['job_ms']} ms "
            f"({fair['workers']} workers); a probe client's job, once a second: p50 "
            f"{fair['probe_p50_ms']:.0f} ms, p99 {fair['probe_p99_ms']:.0f} ms "
            f"({fair['p99_job_times']:.1f} job-times)."
        )
    return "\n".join(out) + ("\n" if out else "")


def plot(data: dict[str, Any], path: Path) -> bool:
    """Throughput and p99 per configuration and system; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = medians(data)
    configs, systems = data["configs"], data["systems"]
    colors = {"direct": "#999999", "proxy": "#4c72b0", "zmqserver": "#dd8452"}
    colors["zmqserver-py"] = "#c44e52"
    colors["zmqserver-lru"] = "#55a868"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=80)
    width = 0.8 / len(systems)
    for ax, metric, title in (
        (axes[0], "jobs_per_s", "throughput, jobs/s (higher is better)"),
        (axes[1], "p99_us", "p99 latency, µs (lower is better)"),
    ):
        for i, system in enumerate(systems):
            values = []
            for config in configs:
                row = rows.get((config, system))
                key = "fast_p99_us" if metric == "p99_us" and config == "uneven" else metric
                values.append(row[key] if row else math.nan)
            xs = [c + (i - (len(systems) - 1) / 2) * width for c in range(len(configs))]
            ax.bar(xs, values, width, label=system, color=colors.get(system))
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        labels = [
            c.replace("-", "\n", 2) + ("\n(1 ms jobs)" if c == "uneven" and "p99" in metric else "")
            for c in configs
        ]
        ax.set_xticks(range(len(configs)), labels, fontsize=8)
        ax.grid(axis="y", alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    meta = data["meta"]
    save_plot(
        fig,
        path,
        f"{meta['workers']} workers; echo app (uneven: 1 ms jobs, every 10th 50 ms); median of "
        f"{meta['repeat']} runs; {meta['cores']} cores shared by clients, broker and workers",
    )
    return True


def save_plot(fig: Any, path: Path, caption: str) -> None:
    """Caption ``fig`` with how it was measured, write it to ``path`` (its directory made if
    need be) and free it: the end of every plot the suite draws."""
    import matplotlib.pyplot as plt

    fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("results", type=Path, help="a JSON file written by bench.run")
    parser.add_argument("--plot", type=Path, help="write the PNG plot here")
    args = parser.parse_args(argv)
    data = json.loads(args.results.read_text())
    print(markdown(data))
    print(extras_markdown(data.get("extras", {})))
    if args.plot and not plot(data, args.plot):
        print("matplotlib is not installed (pip install -e '.[bench]'); no plot", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
