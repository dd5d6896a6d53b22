"""The benchmark's load generator still works: about a second of load, jobs counted, no errors.

No speed is asserted anywhere (numbers live in BENCHMARKS.md, not in tests); this only keeps
bench/ from rotting as the server changes.
"""

from __future__ import annotations

import pytest
from bench.loadgen import LoadSpec, run_load
from bench.procs import Launcher

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]


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
