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


class FairQueue:
    """A service's queued jobs: FIFO per client, round robin across clients.

    May hold done jobs (expired while queued: lazy deletion, see dispatch.py); :meth:`head`
    skips them. Counting live jobs and their bytes is :class:`~.state.Service`'s.
    """

    __slots__ = ("_by_client", "_ring", "_jobs")

    def __init__(self) -> None:
        #: Each client's queued jobs, oldest first (a requeued job goes to the front).
        self._by_client: dict[bytes, deque[Job]] = {}
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
            yield from self._by_client[client]

    def clients(self) -> int:
        """How many clients have jobs queued (done ones included)."""
        return len(self._ring)

    def append(self, job: Job) -> None:
        """``job`` joins the back of its client's queue; a client new to the ring joins at the
        back of the ring (it gets its turn after those already waiting)."""
        queue = self._by_client.get(job.client)
        if queue is None:
            queue = self._by_client[job.client] = deque()
            self._ring.append(job.client)
        queue.append(job)
        self._jobs += 1

    def appendleft(self, job: Job) -> None:
        """``job`` goes back to the front of its client's queue (its worker was lost), and its
        client to the front of the ring: the job is the next one dispatched, as it was before
        its worker took it. O(clients queued) when the client had jobs queued: requeues are
        rare (a worker lost), and a job that ran keeps its place."""
        client = job.client
        queue = self._by_client.get(client)
        if queue is None:
            queue = self._by_client[client] = deque()
        else:
            self._ring.remove(client)
        self._ring.appendleft(client)
        queue.appendleft(job)
        self._jobs += 1

    def head(self) -> Job | None:
        """The live job whose turn is next, left in place; None if none is queued. Done jobs
        met on the way are thrown away (they were counted out when they expired)."""
        ring = self._ring
        while ring:
            client = ring[0]
            queue = self._by_client[client]
            job = queue[0]
            if not job.done:
                return job
            queue.popleft()
            self._jobs -= 1
            if not queue:
                del self._by_client[client]
                ring.popleft()
        return None

    def pop_head(self) -> Job:
        """Take the job :meth:`head` returned; its client's turn is over (to the back of the
        ring, if it has more queued)."""
        ring = self._ring
        client = ring[0]
        queue = self._by_client[client]
        job = queue.popleft()
        self._jobs -= 1
        if queue:
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
        return list(queue)

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
        #: Messages its connection's pipe could not take yet, oldest first.
        self.held: deque[list[Frame]] = deque()
        #: It disconnected while jobs of its were running: their outcomes go nowhere.
        self.gone = False


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
        return state is not None and state.inflight + len(state.held) >= limit

    def outstanding(self, client: bytes) -> int:
        state = self.states.get(client)
        return 0 if state is None else state.inflight + len(state.held)

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
        if not state.inflight and not state.held:
            del self.states[client]
        return not gone

    def hold(self, client: bytes, frames: list[Frame], *, outcome: bool = True) -> bool:
        """Keep ``frames`` for ``client`` until its pipe drains; False if they were dropped
        instead (not a job's ``outcome`` and the client already holds its share)."""
        state = self.states.get(client)
        if state is None:
            state = self.states[client] = ClientState()
        held = state.held
        if not outcome and self.limit and len(held) >= HELD_PER_JOB * self.limit:
            self.dropped += 1
            if not state.inflight and not held:
                del self.states[client]
            return False
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
        state.held.popleft()
        if not state.held:
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
        dropped = len(state.held)
        state.held.clear()
        self.holding.pop(client, None)
        if state.inflight:
            state.gone = True
        else:
            del self.states[client]
        return dropped
