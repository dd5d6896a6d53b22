"""The server's own events as pub-sub updates on reserved keys (``$zmqserver/...``).

Rule 1: sans-IO translation only. The component feeds it the broker's typed events
(broker/events.py, tapped where the shell logs them), the workers the master starts and loses,
and once a second the routing core's job counters; it returns ``(key, value, ttl)`` to publish.

Keys and values (JSON, UTF-8):

* ``$zmqserver/workers/<service>/<worker>``: ``{"event": "started" | "registered" | "lost" |
  "recycled" | "exited", "pid", "reason", "at"}``; ``<worker>`` is the pid of a local worker,
  the routing id of a remote one. ``recycled`` is an end the server meant: the master retired
  it (a reload, the autoscaler, TTOU) or it reached max_requests (or max_worker_memory);
  ``exited`` any other end (a crash, a kill, a remote worker gone). The key of a worker that
  ended is deleted after :data:`GONE_TTL` seconds.
* ``$zmqserver/jobs/*/<outcome>``: ``{"total", "per_second", "at"}`` for accepted, replied,
  errors, expired and duplicates, published once a second when the count moved (aggregated:
  a job costs the broker nothing more than the counter it already kept); ``retried`` and
  ``quarantined`` each time, with the job's id (these are rare: a worker was lost).
  ``*`` stands for all services: the routing core counts these for the whole broker.
* ``$zmqserver/jobs/<service>/<outcome>``: one finished job (``pubsub_job_events``):
  ``{"job", "client", "worker", "queued", "ran", "attempts", "request_id", "at"}``;
  ``<outcome>`` is the status's name (``ok``, ``app_error``, ``timeout``...). Sampled by the
  routing core (broker/metrics.py): at most ``pubsub_job_events_per_second`` per service a
  second, or every job. ``<service>`` is ``?`` for a job whose service no worker had
  registered (the name is the client's, and would make keys without bound).

For a server of a Binary Star pair (``ha_role``, docs/ha.md):

* ``$zmqserver/ha``: ``{"role", "state", "before", "reason", "error", "peer", "takeovers",
  "at"}``, at each change of this server's state (``reason`` is the log line's) and each pair
  error (``error`` true: two actives, two passives, two primaries or two backups; the state may
  be unchanged). One key: a subscriber's snapshot has the server's latest state.

With a store (durable jobs, docs/durable.md):

* ``$zmqserver/durable/<state>`` for pending, scheduled, running, done and dead:
  ``{"count", "at"}``, the jobs in that state, published once a second when it moved.
* ``$zmqserver/durable/dead-lettered``: ``{"ticket", "service", "error", "total", "at"}``, each
  time a job fails for good.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from ..broker.events import (
    Event,
    JobQuarantined,
    JobRetried,
    WorkerEvent,
    WorkerExpired,
    WorkerGone,
    WorkerOverran,
    WorkerReady,
)
from ..broker.state import Job
from ..errors import Status
from ..supervisor.backoff import describe_exit
from .core import SERVER_PREFIX

if TYPE_CHECKING:
    from ..supervisor.ha_side import HaChange
    from ..supervisor.workers import WorkerProcess

#: Seconds an exited worker's key stays before the server deletes it.
GONE_TTL: Final = 60.0
#: The job counters of broker/state.py's Stats published once a second.
JOB_OUTCOMES: Final = ("accepted", "replied", "errors", "expired", "duplicates")

Published = tuple[bytes, bytes, float | None]


def _json(**fields: Any) -> bytes:
    return json.dumps(fields, separators=(",", ":"), default=str).encode()


def worker_name(identity: bytes) -> bytes:
    """``pid:123`` -> ``123`` (a local worker); a remote worker's routing id as it is."""
    return identity[4:] if identity.startswith(b"pid:") else identity


class ServerEvents:
    """Turns what the broker and the master report into updates."""

    def __init__(self) -> None:
        self._service: dict[bytes, bytes] = {}  # worker identity -> its service, once known
        self._counts: dict[str, int] = {}
        self._counted_at = 0.0
        self._durable: dict[str, int] = {}
        self._dead_lettered = 0

    def _worker_key(self, identity: bytes, service: bytes | None = None) -> bytes:
        if service is not None:
            self._service[identity] = service
        known = self._service.get(identity, b"?")
        return SERVER_PREFIX + b"workers/" + known + b"/" + worker_name(identity)

    def started(self, identity: bytes, pid: int, service: str) -> Published:
        key = self._worker_key(identity, service.encode())
        return key, _json(event="started", pid=pid, at=time.time()), None

    def exited(self, identity: bytes, reason: str) -> Published:
        key = self._worker_key(identity)
        self._service.pop(identity, None)
        return key, _json(event="exited", reason=reason, at=time.time()), GONE_TTL

    def ended(self, proc: WorkerProcess) -> Published:
        """One of the master's workers was reaped: ``recycled`` (with why) or ``exited``."""
        key = self._worker_key(proc.identity)
        self._service.pop(proc.identity, None)
        code = proc.exit_code
        how = "" if code is None else describe_exit(code)
        if proc.recycled:
            value = _json(
                event="recycled", pid=proc.pid, reason=proc.recycled, exit=how, at=time.time()
            )
        else:
            value = _json(event="exited", pid=proc.pid, reason=how or "reaped", at=time.time())
        return key, value, GONE_TTL

    def on_event(self, event: Event) -> Published | None:
        """A broker event, if it is one subscribers hear of."""
        if isinstance(event, WorkerReady):
            key = self._worker_key(event.worker, event.service)
            return key, _json(event="registered", credit=event.credit, at=time.time()), None
        if isinstance(event, WorkerExpired | WorkerOverran):
            return (
                self._worker_key(event.worker),
                _json(event="lost", reason=event.message(), at=time.time()),
                None,
            )
        if isinstance(event, WorkerGone | WorkerEvent):
            return None  # the master's own report of the exit says more (exited)
        if isinstance(event, JobRetried):
            return self._job("retried", job=event.job, reason=event.reason, attempt=event.attempt)
        if isinstance(event, JobQuarantined):
            return self._job("quarantined", job=event.job, attempts=event.attempts)
        return None

    def _job(self, outcome: str, **fields: Any) -> Published:
        total = self._counts[outcome] = self._counts.get(outcome, 0) + 1
        key = SERVER_PREFIX + b"jobs/*/" + outcome.encode()
        return key, _json(total=total, at=time.time(), **fields), None

    def finished(self, service: bytes, job: Job, status: int, wait: float, run: float) -> Published:
        """A job's outcome (broker/metrics.py's JobSink, for the jobs it samples)."""
        try:
            outcome = Status(status).reason
        except ValueError:
            outcome = str(status)
        key = SERVER_PREFIX + b"jobs/" + (service or b"?") + b"/" + outcome.encode()
        worker = job.worker
        value = _json(
            job=job.address.hex(),
            client=job.client.hex(),
            worker=None if worker is None else worker_name(worker.identity).decode("latin-1"),
            queued=round(wait, 6),
            ran=round(run, 6),
            attempts=job.attempts,
            request_id=job.request_id,
            at=time.time(),
        )
        return key, value, None

    def job_counts(self, stats: object, now: float) -> list[Published]:
        """The job counters that moved since the last call (call it once a second)."""
        out: list[Published] = []
        elapsed = now - self._counted_at if self._counted_at else 0.0
        self._counted_at = now
        for outcome in JOB_OUTCOMES:
            total = int(getattr(stats, outcome, 0))
            before = self._counts.get(outcome)
            if before == total:
                continue
            self._counts[outcome] = total
            rate = (total - (before or 0)) / elapsed if elapsed > 0 and before is not None else 0.0
            key = SERVER_PREFIX + b"jobs/*/" + outcome.encode()
            out.append((key, _json(total=total, per_second=round(rate, 1), at=time.time()), None))
        return out

    def durable_counts(self, counts: Mapping[str, int]) -> list[Published]:
        """The durable job counts per state that moved since the last call (once a second)."""
        out: list[Published] = []
        for state, count in counts.items():
            if self._durable.get(state) == count:
                continue
            self._durable[state] = count
            key = SERVER_PREFIX + b"durable/" + state.encode()
            out.append((key, _json(count=count, at=time.time()), None))
        return out

    def ha_changed(self, change: HaChange) -> Published:
        """This server of a Binary Star pair changed state, or found the pair in error."""
        value = _json(
            role=change.role,
            state=change.state,
            before=change.before,
            reason=change.reason,
            error=change.error,
            peer=change.peer,
            takeovers=change.takeovers,
            at=time.time(),
        )
        return SERVER_PREFIX + b"ha", value, None

    def dead_lettered(self, ticket: str, service: bytes, error: str) -> Published:
        """A durable job failed for good."""
        self._dead_lettered += 1
        value = _json(
            ticket=ticket,
            service=service.decode("utf-8", "replace"),
            error=error,
            total=self._dead_lettered,
            at=time.time(),
        )
        return SERVER_PREFIX + b"durable/dead-lettered", value, None
