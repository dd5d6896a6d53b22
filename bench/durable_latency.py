"""Durable jobs: how soon ``result(wait=...)`` returns after a job finished (docs/durable.md).

    .venv/bin/python -m bench.durable_latency [--jobs 100] [--max-delay 2.0]

A fresh server (``tests.apps:durable``, which records the wall-clock time of each run, ``--store``
in a temp dir); an AsyncClient enqueues ``--jobs`` jobs, each with a ``delay`` drawn between 0.05 s
and ``--max-delay`` (so the runs fall at every phase of a client's polling), and waits for each
result with ``result(wait=30)``, all at once. Printed: the latency from a job's run to its
client holding the result (mean, p50, p99, max). The app is an echo: its run is its end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import zmqserver
from bench.systems import store_server

APP = "tests.apps:durable"
RUNS_ENV = "ZS_TEST_RUNS"  # tests/apps.py: one "<unix time> <payload>" line per run


async def _load(endpoint: str, jobs: int, max_delay: float) -> dict[bytes, float]:
    """When each job's client got its result (wall clock), by payload."""
    got: dict[bytes, float] = {}
    rng = random.Random(7)
    async with zmqserver.AsyncClient(endpoint, timeout=5) as client:

        async def one(i: int) -> None:
            payload = b"job-%d" % i
            ticket = await client.enqueue(payload, delay=rng.uniform(0.05, max_delay))
            assert await client.result(ticket, wait=30) == payload
            got[payload] = time.time()

        await asyncio.gather(*(one(i) for i in range(jobs)))
    return got


def run(jobs: int, max_delay: float) -> list[float]:
    """Seconds from each job's run to its result at the client."""
    runs = Path(tempfile.mkdtemp(prefix="zs-durlat-")) / "runs"
    try:
        with store_server(APP, 2, env={RUNS_ENV: str(runs)}) as (front, _):
            got = asyncio.run(_load(front, jobs, max_delay))
        ran: dict[bytes, float] = {}
        for line in runs.read_bytes().splitlines():
            when, _, payload = line.partition(b" ")
            ran.setdefault(payload, float(when))
        return [got[payload] - ran[payload] for payload in got]
    finally:
        shutil.rmtree(runs.parent, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.durable_latency", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--max-delay", type=float, default=2.0)
    args = parser.parse_args(argv)
    lat = sorted(run(args.jobs, args.max_delay))
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"| {args.jobs} jobs | mean | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    cells = [statistics.mean(lat), statistics.median(lat), p99, lat[-1]]
    print("| run to result | " + " | ".join(f"{v * 1000:.1f} ms" for v in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
