"""What the broker counts per job, for `zmqserver status`, `/metrics` and the access log.

Rule 1: counters only, no clocks, no I/O, no decisions. The dispatcher calls
:meth:`Recorder.finished` with a job and its outcome as the job ends (and
:meth:`Recorder.refused` for a request it answered itself), with its own ``now``.
Everything else (rates, percentiles, the status document, the Prometheus text) is computed
from these counters when someone asks, outside the hot path (supervisor/observe.py).

Cost: this runs once a job, compiled. Each service has two fixed-bucket histograms (queue wait
and run time) found by a short linear scan (most jobs fall in the first buckets), a count per
outcome (a list indexed by the status byte), and a ring of 10-second buckets of finished jobs,
from which the 1, 5 and 15-minute rates are read. No EWMA: it would need ``exp`` per job, or a
timer to decay it while idle; the ring needs neither (an idle server sleeps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from ..errors import Status
from ..protocol import ClientRequest
from .state import Job

#: Upper bounds (seconds) of the histograms' buckets, Prometheus' ``le``; one more bucket
#: (+Inf) takes the rest. From a 100 us job to a minute-long one.
BOUNDS: Final[tuple[float, ...]] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

#: The rate ring: this many buckets of :data:`SLOT` seconds (15 minutes).
SLOT: Final = 10.0
SLOTS: Final = 90

#: Outcomes are counted by status byte (errors.Status): this many of them.
OUTCOMES: Final = len(Status)

#: What the access log is told of each outcome: (service, job address (empty: refused), status
#: byte, queue wait, run time, client routing id, request id (-1: none), request bytes).
#: Wall-clock time is the writer's business.
AccessSink = Callable[[bytes, bytes, int, float, float, bytes, int, int], None]

#: What pub-sub's per-job events are told of a finished job: (service as counted here: ``b""``
#: for one no worker registered, the job, status byte, queue wait, run time).
JobSink = Callable[[bytes, Job, int, float, float], None]


class Histogram:
    """Counts of values per bucket of :data:`BOUNDS`, their sum and their number."""

    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts: list[int] = [0] * (len(BOUNDS) + 1)
        self.total = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        i = 0
        for bound in BOUNDS:
            if value <= bound:
                break
            i += 1
        self.counts[i] += 1
        self.total += value
        self.count += 1

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile, interpolated inside its bucket (as Prometheus'
        ``histogram_quantile`` does); None with no values. The last bucket has no upper bound:
        a quantile there is reported as its lower bound."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                low = BOUNDS[i - 1] if i else 0.0
                if i >= len(BOUNDS):
                    return low
                return low + (BOUNDS[i] - low) * (rank - seen) / n
            seen += n
        return BOUNDS[-1]  # pragma: no cover - rank <= count always finds a bucket


class ServiceMetrics:
    """One service's counters."""

    __slots__ = ("outcomes", "wait", "run", "finished", "ring", "slot", "second", "sampled")

    def __init__(self) -> None:
        #: Jobs and refused requests by outcome (index: the Status byte).
        self.outcomes: list[int] = [0] * OUTCOMES
        self.wait = Histogram()  # from arrival to its worker starting it (or to its end)
        self.run = Histogram()  # on its worker, for jobs a worker answered
        self.finished = 0
        #: Jobs finished in each SLOT-second bucket; ``slot`` is the newest bucket's number.
        self.ring: list[int] = [0] * SLOTS
        self.slot = 0
        #: Jobs handed to :attr:`Recorder.jobs` in the whole second ``second`` (its sampling).
        self.second = 0
        self.sampled = 0

    def tick(self, now: float) -> None:
        """Move the ring to ``now``, zeroing the buckets of the time no job finished in."""
        slot = int(now / SLOT)
        if slot == self.slot:
            return
        gap = slot - self.slot
        ring = self.ring
        if gap >= SLOTS or gap < 0:
            for i in range(SLOTS):
                ring[i] = 0
        else:
            for s in range(self.slot + 1, slot + 1):
                ring[s % SLOTS] = 0
        self.slot = slot

    def rate(self, seconds: float, now: float) -> float:
        """Jobs finished per second over the last ``seconds`` (whole buckets, the current one
        included, so the newest jobs count at once)."""
        self.tick(now)
        buckets = max(1, min(SLOTS, int(seconds / SLOT)))
        total = 0
        for s in range(self.slot - buckets + 1, self.slot + 1):
            total += self.ring[s % SLOTS]
        return total / (buckets * SLOT)


class Recorder:
    """The dispatcher's job counters, by service name."""

    def __init__(self) -> None:
        self.services: dict[bytes, ServiceMetrics] = {}
        #: Called with each outcome when the access log is on (None: off, and free).
        self.access: AccessSink | None = None
        #: Called with finished jobs when pub-sub publishes per-job events (None: off, free):
        #: at most :attr:`jobs_per_second` a second per service (0: every one). Sampled here,
        #: compiled, so a job past the budget costs a comparison, not a call.
        self.jobs: JobSink | None = None
        self.jobs_per_second = 0

    def of(self, name: bytes) -> ServiceMetrics:
        found = self.services.get(name)
        if found is None:
            found = self.services[name] = ServiceMetrics()
        return found

    def finished(self, job: Job, status: Status, now: float) -> None:
        """``job`` got its one outcome at ``now``.

        A job of a service no worker has registered yet (it waited for one: unknown_service_wait)
        is counted under ``b""``, as a refusal naming an unknown service is: its name is the
        client's to choose, and counting by it would grow this without bound.
        """
        name = b"" if job.service.provisional else job.service.name
        metrics = self.of(name)
        # Status is an int: indexed as one, where int(status) is a generic call a job.
        metrics.outcomes[status] += 1
        started = job.started
        worker = job.worker
        if worker is not None and started:
            wait = started - job.received
            run = now - started
            metrics.run.add(run)
            worker.served += 1
        else:
            wait = now - job.received
            run = 0.0
        metrics.wait.add(wait)
        slot = int(now / SLOT)
        if slot != metrics.slot:
            metrics.tick(now)
        metrics.ring[slot % SLOTS] += 1
        metrics.finished += 1
        access = self.access
        if access is not None:
            request_id = job.request_id if job.request_id is not None else -1
            code = int(status)
            access(job.service.name, job.address, code, wait, run, job.client, request_id, job.size)
        jobs = self.jobs
        if jobs is not None:
            budget = self.jobs_per_second
            if budget:
                second = int(now)
                if second != metrics.second:
                    metrics.second = second
                    metrics.sampled = 0
                if metrics.sampled >= budget:
                    return
                metrics.sampled += 1
            jobs(name, job, int(status), wait, run)

    def refused(
        self,
        request: ClientRequest,
        default: bytes,
        known: Mapping[bytes, object],
        status: Status,
        client: bytes,
    ) -> None:
        """``request`` was answered by the broker itself with ``status`` (refused).

        Counted under its service (``default`` if it names none) only if the service is
        ``known``, else under ``b""``: the name comes from a client, and unknown names would
        grow this without bound.
        """
        name = request.service or default
        if name not in known:
            name = b""
        request_id = -1 if request.request_id is None else request.request_id
        code = int(status)
        self.of(name).outcomes[code] += 1
        access = self.access
        if access is not None:
            access(name, b"", code, 0.0, 0.0, client, request_id, 0)
