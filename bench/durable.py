"""Durable jobs: enqueue + run throughput on the embedded SQLite store (docs/durable.md).

    .venv/bin/python -m bench.durable [--jobs 10000] [--workers 2] [--sync full normal]
                                      [--concurrency 64]

For each ``store_sync`` a fresh server (echo app, ``--store`` in a temp dir) is started; an
AsyncClient enqueues ``--jobs`` jobs, ``--concurrency`` requests in flight, then waits for every
result. Printed: enqueues/s (acknowledged = committed) and jobs/s end to end (first enqueue to
last result). The numbers measure the whole set-up on this machine (clients, broker, store,
workers sharing its cores).

Other systems, same table, same run: :data:`BASELINES` maps a name to a callable (jobs,
concurrency -> (enqueue/s, jobs/s)). Celery + Redis (bench/celery_durable.py: Redis persisting
its queue, ``task_acks_late``) is added when the ``compare`` extra and ``redis-server`` are
installed (``make bench`` installs both); ``--no-baselines`` leaves it out.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable

import zmqserver
from bench.systems import store_server

APP = "tests.apps:durable"

#: Other systems to run in the same table: name -> (jobs, concurrency) -> (enqueue/s, jobs/s).
BASELINES: dict[str, Callable[[int, int], tuple[float, float]]] = {}


async def _load(endpoint: str, jobs: int, concurrency: int) -> tuple[float, float]:
    async with zmqserver.AsyncClient(endpoint, timeout=30) as client:
        slots = asyncio.Semaphore(concurrency)

        async def enqueue(i: int) -> str:
            async with slots:
                return await client.enqueue(b"job-%d" % i)

        started = time.perf_counter()
        tickets = await asyncio.gather(*(enqueue(i) for i in range(jobs)))
        enqueued = time.perf_counter()

        async def result(ticket: str) -> None:
            async with slots:
                await client.result(ticket, wait=600)

        await asyncio.gather(*(result(t) for t in tickets))
        done = time.perf_counter()
    return jobs / (enqueued - started), jobs / (done - started)


def run_zmqserver(jobs: int, concurrency: int, *, workers: int, sync: str) -> tuple[float, float]:
    with store_server(APP, workers, "--store-sync", sync) as (front, _):
        return asyncio.run(_load(front, jobs, concurrency))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.durable", description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sync", nargs="+", default=["full", "normal"])
    parser.add_argument("--no-baselines", action="store_true", help="zmqserver only")
    args = parser.parse_args(argv)
    if not args.no_baselines:
        from bench.celery_durable import baselines

        BASELINES.update(baselines(args.workers))
    rows = []
    for sync in args.sync:
        rate = run_zmqserver(args.jobs, args.concurrency, workers=args.workers, sync=sync)
        rows.append((f"zmqserver store_sync={sync}", *rate))
    for name, runner in BASELINES.items():
        if not args.no_baselines:
            rows.append((name, *runner(args.jobs, args.concurrency)))
    print(f"| system ({args.jobs} jobs, {args.workers} workers) | enqueue/s | enqueue+run jobs/s |")
    print("|---|---|---|")
    for name, enqueue_rate, job_rate in rows:
        print(f"| {name} | {enqueue_rate:,.0f} | {job_rate:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
