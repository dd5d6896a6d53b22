"""The Celery app of the comparison (bench/compare.py, bench/durable.py): one task, ``bench.echo``.

Celery's defaults (JSON, prefetch multiplier 4, early acks) with Redis as broker and result
backend. The worker (``celery -A bench._celery_app worker``) finds the URL in
``BENCH_REDIS_URL``; a client makes its own app with :func:`make_app` (each run has a fresh Redis
on another port) and calls the task by name, ``app.signature(TASK).delay(x).get()``, as a client
that does not import the worker's code does. ``acks_late`` acknowledges a task after it ran
(``task_acks_late``): what a user who needs a job to survive a worker's death sets, so what the
durable comparison runs (``BENCH_CELERY_ACKS_LATE=1`` for the worker).
"""

from __future__ import annotations

import os

from celery import Celery

TASK = "bench.echo"


def make_app(url: str, acks_late: bool = False) -> Celery:
    app = Celery("bench", broker=url, backend=url)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        task_acks_late=acks_late,
        worker_hijack_root_logger=False,
    )
    return app


app = make_app(
    os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    acks_late=os.environ.get("BENCH_CELERY_ACKS_LATE") == "1",
)


@app.task(name=TASK)
def echo(payload: str) -> str:
    return payload
