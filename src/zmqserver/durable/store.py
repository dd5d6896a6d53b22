"""What a job store promises, what it holds, and when a failed job runs again.

Rule 1: a contract and pure helpers. The component (component.py) talks to a store only through
:class:`JobStore`, so a networked store (Redis, PostgreSQL) can follow the SQLite one without the
component changing. Times here are wall-clock Unix times (``time.time()``): they are written to
disk and must mean the same after a restart, which a monotonic clock's values do not.

A store's writes are grouped: the component makes any number of calls in one turn of the loop,
then :meth:`JobStore.commit` once. A job is acknowledged to its client only after the commit that
stored it has returned.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from .tsp import MAX_BACKOFF, JobOptions


class JobState(enum.Enum):
    """Where a durable job is. pending: may run now; scheduled: not before its eta; running:
    handed to the broker; done: has its result; dead: failed for good, keeps its last error."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"


#: The states a job leaves no more (results expire from these).
FINISHED: Final = frozenset({JobState.DONE, JobState.DEAD})


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to store: what the ``titanic.request`` said."""

    ticket: str
    service: bytes
    body: list[bytes]
    options: JobOptions


@dataclass(frozen=True, slots=True)
class Runnable:
    """A stored job, as much of it as running it needs."""

    id: int
    ticket: str
    service: bytes
    body: list[bytes]
    attempts: int
    retries: int
    backoff: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a client may learn of a job: its state, its result or last error, its attempts."""

    state: JobState
    attempts: int
    retries: int
    eta: float
    result: list[bytes] | None
    error: str


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a store held at start-up: the jobs to run, and those running when it last stopped."""

    ready: list[int]
    scheduled: list[tuple[float, int]]
    #: Jobs that were running when the server last stopped: they run again (at-least-once).
    interrupted: int
    #: When the oldest finished job finished (None: none), for the result_ttl timer.
    oldest_finished: float | None


class StoreError(Exception):
    """The store cannot be used (corrupt, locked, unreadable); the message is for the log."""


class JobStore(Protocol):
    """Persistent jobs. Every method but :meth:`commit` may leave its writes uncommitted."""

    def recover(self) -> Recovered:
        """At start-up: put jobs that were running back to pending, and say what is to run."""

    def add(self, jobs: Sequence[NewJob], now: float) -> list[tuple[int, float] | None]:
        """Store new jobs; for each, its (id, start time), or None for a ticket already stored
        (a resend: the stored job is left as it is)."""

    def start(self, ids: Sequence[int]) -> list[Runnable]:
        """Mark these jobs running, one more attempt each; the ones still waiting to run (a
        closed one is gone, and left out)."""

    def finish(self, job_id: int, result: list[bytes], now: float) -> bool:
        """A running job's result: it is done. False if the job is no longer stored."""

    def reschedule(self, job_id: int, eta: float, error: str, *, attempt: bool) -> None:
        """Run the job again at ``eta`` (``attempt``: the failed run counts as one)."""

    def bury(self, job_id: int, error: str, now: float) -> bool:
        """The job failed for good (dead-lettered), with its last error. False if the job is no
        longer stored."""

    def outcome(self, ticket: str) -> Outcome | None:
        """What the job with this ticket is at (None: not stored)."""

    def forget(self, ticket: str) -> None:
        """Delete the job with this ticket, whatever its state (titanic.close)."""

    def expire(self, before: float) -> float | None:
        """Delete finished jobs that finished before ``before``; when the oldest left finished."""

    def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state. Cheap: status requests and metric scrapes ask it
        (keep the numbers in memory, counted once at start-up, moved by each write)."""

    def commit(self) -> None:
        """Make every write since the last commit durable (as the store's sync policy says)."""

    def close(self) -> None:
        """Commit and release the store."""


# -- frames as one value --------------------------------------------------------------------------

_LENGTH: Final = struct.Struct(">I")


def pack_frames(frames: Sequence[bytes]) -> bytes:
    """Frames as one byte string: each one's length (4 bytes, big-endian), then its bytes."""
    out = bytearray()
    for frame in frames:
        out += _LENGTH.pack(len(frame))
        out += frame
    return bytes(out)


def unpack_frames(data: bytes) -> list[bytes]:
    """The frames :func:`pack_frames` packed; ``ValueError`` if ``data`` is not such a value."""
    frames = []
    view = memoryview(data)
    at = 0
    while at < len(view):
        if at + 4 > len(view):
            raise ValueError("truncated frame length")
        (size,) = _LENGTH.unpack_from(view, at)
        at += 4
        if at + size > len(view):
            raise ValueError("truncated frame")
        frames.append(bytes(view[at : at + size]))
        at += size
    return frames


def packed_size(frames: Sequence[bytes]) -> int:
    """The size of :func:`pack_frames` of ``frames``, without packing them."""
    return sum(len(frame) + 4 for frame in frames)


# -- the retry policy -----------------------------------------------------------------------------


def retry_delay(backoff: float, attempts: int, after: float | None = None) -> float:
    """Seconds to wait before attempt ``attempts + 1``, after ``attempts`` failed ones.

    ``after``, if the app asked for it (``Retry(after=...)``), wins; otherwise exponential:
    ``backoff``, twice that, four times..., at most :data:`~.tsp.MAX_BACKOFF`.
    """
    if after is not None:
        return min(max(after, 0.0), MAX_BACKOFF)
    exponent = max(attempts - 1, 0)
    if exponent > 60:  # 2**60 seconds is past any cap; avoid a float overflow
        return MAX_BACKOFF
    return min(backoff * 2.0**exponent, MAX_BACKOFF)
