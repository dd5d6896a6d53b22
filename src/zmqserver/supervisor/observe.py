"""What a running server looks like, as one JSON-ready document: `zmqserver status`, the
control endpoint's ``stats``, the dashboard and ``/metrics`` all read it.

Rule 1: read only. Built when someone asks (a status request, a scrape), never per job: the
per-job counting is broker/metrics.py's, compiled; this walks the pools, the workers and those
counters once per request, and reads each worker's RSS from ``/proc``.
"""

from __future__ import annotations

import os
import resource
import time
from typing import TYPE_CHECKING, Any

from ..errors import Status
from ..scaling import State

if TYPE_CHECKING:
    from ..broker import Dispatcher
    from .master import Master

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: The windows of the job rates, in seconds, by the name the document gives them.
RATE_WINDOWS = (("1m", 60.0), ("5m", 300.0), ("15m", 900.0))
#: What the document calls a worker's state (the autoscaler's BOOTING is "starting").
STATE_NAMES = {
    State.BOOTING: "starting",
    State.IDLE: "idle",
    State.BUSY: "busy",
    State.DETACHED: "detached",
}


def rss_of(pid: int) -> int | None:
    """A process's resident set size in bytes, from ``/proc/PID/statm``; None if unknown."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def snapshot(master: Master, dispatcher: Dispatcher | None, started: float) -> dict[str, Any]:
    """The server's state now (docs/operations.md, "The status document")."""
    now = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    doc: dict[str, Any] = {
        "pid": master.pid,
        "uptime": round(now - started, 3),
        "stopping": master.stopping,
        "master": {
            "rss": rss_of(master.pid),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        },
        "services": [],
        "workers": [],
    }
    counters = dispatcher.metrics.services if dispatcher is not None else {}
    registered = dispatcher.workers if dispatcher is not None else {}
    for pool in master.pools.values():
        name = pool.name.encode()
        state_of = master.view.state_of(pool)
        counts = dict.fromkeys(STATE_NAMES.values(), 0)
        for proc in master.flock.current(pool):
            counts[STATE_NAMES[state_of(proc)]] += 1
        queued, oldest = master.view.backlog(pool)
        entry: dict[str, Any] = {
            "name": pool.name,
            "generation": pool.generation,
            "workers": counts,
            "bounds": {"min": pool.scaler.low, "max": pool.scaler.high},
            "queue": queued,
            "oldest_wait": None if oldest is None else round(now - oldest, 6),
        }
        entry.update(_activity(counters.get(name), now))
        doc["services"].append(entry)
    _remote(doc, master, dispatcher, now)
    for component in master.components:
        pair = getattr(component, "pair_status", None)  # a Binary Star server (ha_side.py)
        if pair is not None:
            doc["ha"] = pair(now)
    refused = counters.get(b"")
    if refused is not None:
        doc["refused_unknown_service"] = _outcomes(refused.outcomes)
    states = {pool.name: master.view.state_of(pool) for pool in master.pools.values()}
    for proc in sorted(master.workers.values(), key=lambda p: p.pid):
        worker = registered.get(proc.identity)
        job_age = None
        served = 0
        if worker is not None:
            served = worker.served
            if worker.jobs and worker.jobs[0].started:
                job_age = round(now - worker.jobs[0].started, 6)
        doc["workers"].append(
            {
                "pid": proc.pid,
                "service": proc.pool.name,
                "state": "retiring" if proc.retiring else STATE_NAMES[states[proc.pool.name](proc)],
                "generation": proc.generation,
                "jobs_served": served,
                "job_age": job_age,
                "age": round(now - proc.started, 3),
                "rss": rss_of(proc.pid),
            }
        )
    return doc


def _remote(doc: dict[str, Any], master: Master, dispatcher: Dispatcher | None, now: float) -> None:
    """Workers registered from elsewhere (remote pools, foreign MDP workers): counted in each
    service's ``remote`` entry, and a service only they serve listed too (``remote_only``), so
    that a pool on another host shows in status and metrics like a local one."""
    if dispatcher is None:
        return
    local = {proc.identity for proc in master.workers.values()}
    remote: dict[bytes, dict[str, int]] = {}
    for identity, worker in dispatcher.workers.items():
        if identity in local:
            continue
        counts = remote.setdefault(worker.service.name, {"idle": 0, "busy": 0})
        counts["busy" if worker.jobs else "idle"] += 1
    entries = {entry["name"]: entry for entry in doc["services"]}
    for entry in entries.values():
        entry["remote"] = remote.pop(entry["name"].encode(), {"idle": 0, "busy": 0})
    counters = dispatcher.metrics.services
    for name, counts in sorted(remote.items()):
        service = dispatcher.services.get(name)
        metrics = counters.get(name)
        oldest = None if service is None else service.oldest()
        doc["services"].append(
            {
                "name": name.decode("utf-8", "replace"),
                "remote_only": True,
                "generation": None,
                "workers": {state: 0 for state in STATE_NAMES.values()},
                "remote": counts,
                "bounds": None,
                "queue": 0 if service is None else service.waiting,
                "oldest_wait": None if oldest is None else round(now - oldest, 6),
                **_activity(metrics, now),
            }
        )


def _activity(metrics: Any, now: float) -> dict[str, Any]:
    """A service's rates, jobs, latencies and outcomes (zeros before its first job)."""
    if metrics is None:
        return {
            "rate": {key: 0.0 for key, _ in RATE_WINDOWS},
            "jobs": 0,
            "job_time": {"p50": None, "p99": None},
            "wait_time": {"p50": None, "p99": None},
            "outcomes": {},
        }
    return {
        "rate": {key: round(metrics.rate(s, now), 4) for key, s in RATE_WINDOWS},
        "jobs": metrics.finished,
        "job_time": _quantiles(metrics.run),
        "wait_time": _quantiles(metrics.wait),
        "outcomes": _outcomes(metrics.outcomes),
    }


def _quantiles(hist: Any) -> dict[str, float | None]:
    p50, p99 = hist.quantile(0.5), hist.quantile(0.99)
    return {
        "p50": None if p50 is None else round(p50, 6),
        "p99": None if p99 is None else round(p99, 6),
    }


def _outcomes(outcomes: list[int]) -> dict[str, int]:
    return {Status(code).reason: n for code, n in enumerate(outcomes) if n}
