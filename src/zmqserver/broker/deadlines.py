"""The broker's timers: when each job's deadline (or its worker's kill) comes due.

Rule 1: this module keeps times in order and says which job is due; it decides nothing. The
dispatcher pops what is due and decides (expire the job, kill its worker, or arm a later time).

A job's first deadline (``now`` plus a timeout, kept in ``job.due_at``) is almost always the
latest yet, since the clock only moves forward and most jobs share their service's job_timeout.
Those go to the back of a FIFO list (an append, no tuple, nothing to sift); only a deadline
earlier than the last one there (a client's shorter timeout) and the rare re-arms (a kill grace, a
moved deadline) go to a heap. The next deadline is the earlier of the two heads.

Finished jobs are not taken out (that would be a search per job): an entry whose job is done is
skipped by the dispatcher when it comes due, and such entries are dropped in bulk once they are
half of the heap (:meth:`Deadlines.finished`), so the cost stays amortised O(1) per job.
"""

from __future__ import annotations

import heapq
import math
from typing import Final

from .state import Job

#: Finished jobs the deadlines may hold before they are compacted (and then only once they are
#: half of them, so compaction is amortised O(1) per job); also how many passed entries the
#: FIFO keeps at its front before they are cut off.
COMPACT_AFTER: Final = 1024


class Deadlines:
    """A FIFO of first deadlines and a heap of the others, popped in the order they come due."""

    def __init__(self) -> None:
        #: First deadlines in the order they come due (each ``job.due_at``), from ``_head`` on:
        #: the entries before it have been popped.
        self._fifo: list[Job] = []
        self._head = 0
        self._heap: list[tuple[float, int, Job]] = []  # the other deadlines: a min-heap
        self._finished = 0  # about how many entries of both belong to finished jobs

    def __len__(self) -> int:
        """Entries not popped yet (finished jobs' included, until they are compacted)."""
        return len(self._fifo) - self._head + len(self._heap)

    def jobs(self) -> list[Job]:
        """The jobs of the entries not popped yet, heap first (for tests and inspection)."""
        return [entry[2] for entry in self._heap] + self._fifo[self._head :]

    def in_fifo(self) -> int:
        """How many of them wait in the FIFO (the fast path), not in the heap."""
        return len(self._fifo) - self._head

    def add(self, job: Job) -> None:
        """Arm ``job``'s first deadline, ``job.due_at``: at the back of the FIFO if it is the
        latest yet (nearly always), else in the heap."""
        fifo = self._fifo
        if len(fifo) == self._head or job.due_at >= fifo[-1].due_at:
            fifo.append(job)
        else:
            heapq.heappush(self._heap, (job.due_at, job.id, job))

    def rearm(self, when: float, job: Job) -> None:
        """Have ``job`` come due (again) at ``when``: a kill grace, or a deadline a resend moved."""
        heapq.heappush(self._heap, (when, job.id, job))

    def next_deadline(self) -> float:
        """The earliest time armed (infinity: none)."""
        when = math.inf
        heap = self._heap
        if heap:
            when = heap[0][0]
        fifo, head = self._fifo, self._head
        if head < len(fifo) and fifo[head].due_at < when:
            when = fifo[head].due_at
        return when

    def pop_due(self, now: float) -> Job | None:
        """The next job whose time has come by ``now`` (the FIFO's first), None when none has.

        The caller pops until None: what it does with one job may compact these (a job's
        outcome calls :meth:`finished`) or arm a later time, so nothing here is held across
        calls but the positions.
        """
        fifo, head = self._fifo, self._head
        if head < len(fifo) and fifo[head].due_at <= now:
            self._head = head + 1
            return fifo[head]
        if head > COMPACT_AFTER and 2 * head > len(fifo):
            del fifo[:head]
            self._head = 0
        heap = self._heap
        if heap and heap[0][0] <= now:
            return heapq.heappop(heap)[2]
        return None

    def finished(self) -> None:
        """A job with a deadline got its outcome: its entries are dead weight from now on."""
        self._finished += 1
        if self._finished > COMPACT_AFTER and 2 * self._finished > len(self._heap):
            self._compact()

    def _compact(self) -> None:
        """Drop the entries of finished jobs that are off their workers (nothing to do for
        them: a finished job still on its worker may yet get the worker killed)."""
        heap = [t for t in self._heap if not t[2].done or t[2].worker is not None]
        heapq.heapify(heap)
        self._heap = heap
        live = self._fifo[self._head :]
        self._fifo = [job for job in live if not job.done or job.worker is not None]
        self._head = 0
        self._finished = 0
