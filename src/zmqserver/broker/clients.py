"""What the broker keeps per client: its queued jobs in each service, its outstanding jobs, and
the replies its connection cannot take yet.

Rule 1: data and the few operations that keep its counters right; no sockets, no clocks, no
decisions about jobs (which outcome a job gets is dispatch.py's). Clients are known by their
routing id on the frontend ROUTER.

Two structures:

- :class:`FairQueue`, one per service: a FIFO queue per client and a ring of the clients that
  have jobs queued. Dispatch takes the head of the first client's queue and moves that client
  to the back of the ring (round robin), so a client that floods a service with 10,000 jobs
  gets every other turn, not the next 10,000: a well-behaved client's job waits for at most
  one job of each other client queued ahead of it. Within a client, jobs keep their order
  (FIFO). Every operation on the hot path is O(1) (deque ends, one dict lookup); only dropping
  a client (it went away) walks the ring.
- :class:`ClientBook`, one per dispatcher: per client, how many of its jobs are outstanding
  (queued or running: ``max_client_inflight`` bounds it) and the replies held for it because
  its connection's pipe was full (the shell retries them when it drains). A client's entry is
  forgotten when it has neither, so a crowd of REQ sockets with one job each costs nothing
  once answered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from ..protocol import Frame

if TYPE_CHECKING:
    from .state import Job

#: Messages that are not a job's outcome (refusals above all) held for one client, per job it
#: may have outstanding: the zguide's asynchronous client sends 100,000 requests before it reads
#: a reply, and each of the ones past max_client_inflight gets a queue_full it must not lose.
#: A refusal held costs a few hundred bytes (its frames are small), so 100 per job of
#: max_client_inflight (100,000 by default, some 30 MB) bounds a client that sends and never
#: reads without failing one that reads late. Past it they are dropped (counted).
HELD_PER_JOB: Final = 100


class _ClientJobs:
    """One client's queued jobs, oldest first: a list read from a moving head.

    Not a deque: compiled, a list's append and indexing are native, a deque's are generic
    calls, and this is touched for every queued job.
    """

    __slots__ = ("jobs", "head")

    def __init__(self, job: Job) -> None:
        self.jobs: list[Job] = [job]
        self.head = 0

    def __len__(self) -> int:
        return len(self.jobs) - self.head

    def first(self) -> Job:
        return self.jobs[self.head]

    def pop(self) -> Job:
        """Take the first job; the list is cut once its taken part is long and the larger."""
        jobs, head = self.jobs, self.head
        job = jobs[head]
        head += 1
        if head >= COMPACT_AT and 2 * head >= len(jobs):
            del jobs[:head]
            head = 0
        self.head = head
        return job

    def push_front(self, job: Job) -> None:
        if self.head:
            self.head -= 1
            self.jobs[self.head] = job
        else:
            self.jobs.insert(0, job)

    def live(self) -> list[Job]:
        return self.jobs[self.head :]


#: Taken entries a client's queue keeps before its list is cut (amortised O(1) a job).
COMPACT_AT: Final = 64


class FairQueue:
    """A service's queued jobs: FIFO per client, round robin across clients.

    May hold done jobs (expired while queued: lazy deletion, see dispatch.py); :meth:`head`
    skips them. Counting live jobs and their bytes is :class:`~.state.Service`'s.
    """

    __slots__ = ("_by_client", "_ring", "_jobs")

    def __init__(self) -> None:
        #: Each client's queued jobs, oldest first (a requeued job goes to the front).
        self._by_client: dict[bytes, _ClientJobs] = {}
        #: The clients with a non-empty queue, in the order of their next turn.
        self._ring: deque[bytes] = deque()
        self._jobs = 0  # done ones included

    def __len__(self) -> int:
        return self._jobs

    def __bool__(self) -> bool:
        return self._jobs > 0

    def __iter__(self) -> Iterator[Job]:
        """Every job queued (done ones too), client by client in ring order: for tests and
        the rare look at all of them, not for dispatch."""
        for client in self._ring:
            yield from self._by_client[client].live()

    def clients(self) -> int:
        """How many clients have jobs queued (done ones included)."""
        return len(self._ring)

    def append(self, job: Job) -> None:
        """``job`` joins the back of its client's queue; a client new to the ring joins at the
        back of the ring (it gets its turn after those already waiting)."""
        queue = self._by_client.get(job.client)
        if queue is None:
            self._by_client[job.client] = _ClientJobs(job)
            self._ring.append(job.client)
        else:
            queue.jobs.append(job)
        self._jobs += 1

    def appendleft(self, job: Job) -> None:
        """``job`` goes back to the front of its client's queue (its worker was lost), and its
        client to the front of the ring: the job is the next one dispatched, as it was before
        its worker took it. O(clients queued) when the client had jobs queued: requeues are
        rare (a worker lost), and a job that ran keeps its place."""
        client = job.client
        queue = self._by_client.get(client)
        if queue is None:
            self._by_client[client] = _ClientJobs(job)
        else:
            self._ring.remove(client)
            queue.push_front(job)
        self._ring.appendleft(client)
        self._jobs += 1

    def head(self) -> Job | None:
        """The live job whose turn is next, left in place; None if none is queued. Done jobs
        met on the way are thrown away (they were counted out when they expired)."""
        ring = self._ring
        while ring:
            client = ring[0]
            queue = self._by_client[client]
            job = queue.first()
            if not job.done:
                return job
            queue.pop()
            self._jobs -= 1
            if not len(queue):
                del self._by_client[client]
                ring.popleft()
        return None

    def pop_head(self) -> Job:
        """Take the job :meth:`head` returned; its client's turn is over (to the back of the
        ring, if it has more queued)."""
        ring = self._ring
        client = ring[0]
        queue = self._by_client[client]
        job = queue.pop()
        self._jobs -= 1
        if len(queue):
            if len(ring) > 1:
                ring.rotate(-1)
        else:
            del self._by_client[client]
            ring.popleft()
        return job

    def drop(self, client: bytes) -> list[Job]:
        """Take all of ``client``'s queued jobs out (done ones included), oldest first."""
        queue = self._by_client.pop(client, None)
        if queue is None:
            return []
        self._ring.remove(client)
        self._jobs -= len(queue)
        return queue.live()

    def clear(self) -> list[Job]:
        """Take every job out, in ring order."""
        jobs = list(self)
        self._by_client.clear()
        self._ring.clear()
        self._jobs = 0
        return jobs


class ClientState:
    """One client: its outstanding jobs and the messages held for it."""

    __slots__ = ("inflight", "held", "gone")

    def __init__(self) -> None:
        #: Its jobs queued or running (accepted, no outcome yet).
        self.inflight = 0
        #: Messages its connection's pipe could not take yet, oldest first; None while there
        #: are none. Made when needed: a client with one job at a time has its state made and
        #: dropped with each job, and a deque costs an allocation of its first block.
        self.held: deque[list[Frame]] | None = None
        #: It disconnected while jobs of its were running: their outcomes go nowhere.
        self.gone = False

    def outstanding(self) -> int:
        """Its jobs queued or running, and the messages held for it."""
        held = self.held
        return self.inflight if held is None else self.inflight + len(held)


class ClientBook:
    """Every client with outstanding jobs or held messages, and the bound on them.

    ``limit`` is ``max_client_inflight`` (0: none). A client may have ``limit`` jobs queued,
    running or answered but held (:meth:`full`); job outcomes are always held (at most
    ``limit`` of them), and other messages (refusals, answers from the reply cache, PARTIALs)
    while fewer than ``HELD_PER_JOB`` x ``limit`` are held.
    """

    __slots__ = ("limit", "states", "holding", "dropped")

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self.states: dict[bytes, ClientState] = {}
        #: The clients with held messages, in the order they began holding (the shell's retry
        #: order). A message to one of them is held behind the others, never sent ahead.
        self.holding: dict[bytes, ClientState] = {}
        #: Messages not held because the client already held its share (not job outcomes).
        self.dropped = 0

    def full(self, client: bytes) -> bool:
        """Has ``client`` as many jobs outstanding (held replies included) as it may?"""
        limit = self.limit
        if not limit:
            return False
        state = self.states.get(client)
        return state is not None and state.outstanding() >= limit

    def outstanding(self, client: bytes) -> int:
        state = self.states.get(client)
        return 0 if state is None else state.outstanding()

    def accepted(self, client: bytes) -> None:
        """One more job of ``client`` is outstanding."""
        state = self.states.get(client)
        if state is None:
            state = self.states[client] = ClientState()
        state.inflight += 1
        state.gone = False  # it is back (a reconnect under the same routing id)

    def finished(self, client: bytes) -> bool:
        """One of ``client``'s jobs got its outcome (or was dropped); False if the client is
        known to be gone, so the outcome is not worth sending."""
        state = self.states.get(client)
        if state is None:
            return True
        state.inflight -= 1
        gone = state.gone
        if not state.inflight and state.held is None:
            del self.states[client]
        return not gone

    def hold(self, client: bytes, frames: list[Frame], *, outcome: bool = True) -> bool:
        """Keep ``frames`` for ``client`` until its pipe drains; False if they were dropped
        instead (not a job's ``outcome`` and the client already holds its share)."""
        state = self.states.get(client)
        if state is None:
            state = self.states[client] = ClientState()
        held = state.held
        if (
            not outcome
            and self.limit
            and held is not None
            and len(held) >= HELD_PER_JOB * self.limit
        ):
            self.dropped += 1
            return False
        if held is None:
            held = state.held = deque()
        held.append(frames)
        self.holding[client] = state
        return True

    def held_for(self, client: bytes) -> deque[list[Frame]] | None:
        """The messages held for ``client`` (None if none are)."""
        state = self.holding.get(client)
        return None if state is None else state.held

    def delivered(self, client: bytes) -> None:
        """The oldest message held for ``client`` was sent."""
        state = self.holding[client]
        held = state.held
        assert held is not None
        held.popleft()
        if not held:
            state.held = None
            del self.holding[client]
            if not state.inflight:
                del self.states[client]

    def forget(self, client: bytes) -> int:
        """``client`` is gone: drop what is held for it; how many messages that was. Its
        outstanding jobs stay counted until each gets its outcome (:meth:`finished`), which
        then says not to send it, unless the client came back meanwhile (:meth:`accepted`)."""
        state = self.states.get(client)
        if state is None:
            return 0
        dropped = 0 if state.held is None else len(state.held)
        state.held = None
        self.holding.pop(client, None)
        if state.inflight:
            state.gone = True
        else:
            del self.states[client]
        return dropped
