"""Celery + Redis as bench/durable.py's baseline: durable enqueue, then run, same table.

A Celery user who needs jobs to survive makes Redis persist its queue (append-only file) and
acknowledges a task after it ran (``task_acks_late``), so a worker that dies mid-job leaves it
queued. Two settings, each beside the zmqserver ``store_sync`` it matches:

* ``appendfsync always``: Redis fsyncs every write before answering (zmqserver's ``full``);
* ``appendfsync everysec``: at most a second of writes lost on a power cut (like ``normal``,
  which loses nothing when only the process dies).

``--pool prefork --concurrency`` workers (bench/_celery_app.py). The client enqueues with
``signature.delay`` from ``concurrency`` threads (Celery's producer pool is shared between
threads), the ``AsyncResult`` of each kept, then waits for every result with ``.get()``: as
:func:`bench.durable._load`, enqueue/s to the last acknowledgement and jobs/s to the last result.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.procs import Launcher
from bench.rivals import celery_system, have_redis, importable

FSYNC = ("always", "everysec")


def run_celery(jobs: int, concurrency: int, *, workers: int, fsync: str) -> tuple[float, float]:
    from bench._celery_app import TASK, make_app

    with tempfile.TemporaryDirectory(prefix="zs-celery-") as tmp:
        launcher = Launcher(Path(tmp))
        redis_options = ("--appendonly", "yes", "--appendfsync", fsync)
        try:
            with celery_system(launcher, "durable", workers, *redis_options, acks_late=True) as s:
                app = make_app(s.endpoints[0], acks_late=True)
                echo = app.signature(TASK)
                threads = max(1, min(concurrency, 16))
                with ThreadPoolExecutor(threads) as pool:
                    started = time.perf_counter()
                    results = list(pool.map(lambda i: echo.delay(f"job-{i}"), range(jobs)))
                    enqueued = time.perf_counter()
                for result in results:
                    result.get(timeout=600)
                done = time.perf_counter()
                app.close()
        finally:
            launcher.stop_all()
    return jobs / (enqueued - started), jobs / (done - started)


def baselines(workers: int) -> dict[str, Callable[[int, int], tuple[float, float]]]:
    """name -> runner for bench/durable.py's BASELINES; empty without Celery or redis-server."""
    if not (importable("celery") and have_redis()):
        return {}
    return {
        f"Celery + Redis, appendfsync {fsync}, acks_late": (
            lambda jobs, concurrency, fsync=fsync: run_celery(
                jobs, concurrency, workers=workers, fsync=fsync
            )
        )
        for fsync in FSYNC
    }
