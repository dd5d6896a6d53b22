"""The benchmark's load generator still works: about a second of load, jobs counted, no errors.

No speed is asserted anywhere (numbers live in BENCHMARKS.md, not in tests); this only keeps
bench/ from rotting as the server changes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from bench.loadgen import LoadSpec, run_load
from bench.procs import REPO, Launcher

# The same whichever build of the broker runs: make test runs it once (pyproject's markers).
pytestmark = [pytest.mark.timeout(60), pytest.mark.slow, pytest.mark.compiled_pass]


@pytest.mark.parametrize("k", [1, 4], ids=["REQ", "DEALER"])
def test_load_generator_counts_jobs_without_errors(start_server, short_tmp, k):
    server = start_server("examples.echo:app", workers=2)
    server.wait_ready()
    launcher = Launcher(short_tmp)
    try:
        spec = LoadSpec(clients=2, k=k, size=64, duration=0.7, warmup=0.2)
        result = run_load(launcher, [server.frontend], spec, broker_pid=server.pid)
    finally:
        launcher.stop_all()
    assert result.errors == 0, result.error_samples
    assert result.jobs > 0
    assert result.broker_cpu is not None
    assert launcher.strays() == []


def test_comparison_runs_zmqserver_and_majortomo_without_errors(short_tmp):
    """bench/compare.py end to end with the two systems the dev extra has: each started,
    loaded, stopped; the table and the JSON written, no errors, nothing left behind."""
    argv = [sys.executable, "-m", "bench.compare", "--systems", "zmqserver", "majortomo"]
    argv += ["--clients", "2", "--repeat", "1", "--warmup", "0.2", "--duration", "0.5"]
    argv += ["--out", str(short_tmp)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| 2 | zmqserver | " in done.stdout
    assert "| 2 | majortomo | " in done.stdout
    (result,) = short_tmp.glob("compare-*.json")
    runs = json.loads(result.read_text())["runs"]
    assert [r["system"] for r in runs] == ["zmqserver", "majortomo"]
    assert all(r["jobs"] > 0 and r["errors"] == 0 for r in runs)


def test_dispatcher_benchmark_runs():
    """bench/dispatcher.py (the routing core's cost a job, no sockets): a tiny run."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.dispatcher", "--jobs", "500", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "C=8 K=1:" in done.stdout, done.stdout
    assert "C=4 K=16:" in done.stdout, done.stdout
