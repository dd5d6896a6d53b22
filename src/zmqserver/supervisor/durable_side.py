"""Durable jobs as a component of the broker's master: the TSP services, the store, the runs.

Rule 1: glue between the routing core, the store and the clock. What the frames mean is
durable/tsp.py's, what is stored is the store's (durable/store.py), when a failed job runs again
is :func:`~zmqserver.durable.store.retry_delay`'s.

How requests reach it: with a store configured, the routing core hands every request for a
``titanic.*`` service to :attr:`Dispatcher.intake <zmqserver.broker.Dispatcher.intake>` instead
of routing it, and the broker's loop returns to the master while that list is not empty. This
component reads the list in :meth:`DurableComponent.handle`, stores what is to be stored,
**commits**, and only then answers, through the broker's frontend, in the form each request came
in (RFC 7, RFC 18, our header). One commit a turn of the loop: under load a turn carries many
requests, and they share the commit's fsync.

How jobs run: as an internal client. A DEALER connected to the frontend ROUTER over an
``inproc://`` endpoint (the same process; no port, no key, nothing a peer can reach) sends each
job as an MDP/0.2 request with our header (its request id is how the reply is matched), at most
``store_window`` at once (enough to keep every worker busy: the broker queues the rest per
service; few enough that a restart after a crash reruns few of them). The broker routes them
like any client's, so every limit and policy of the real service applies, and the reply comes
back on the DEALER, which the loop waits on.

Long polls: a ``titanic.reply`` with ``wait`` (tsp.py) for a job without its result is held
(:class:`_Waiter`), and answered right after the commit that stores the job's result, or with
``300`` when its wait is over. At most :data:`MAX_WAITERS` are held; past that, and while the
server stops, one is answered at once.

Timers: the earliest scheduled job (``delay``, ``eta``, a retry's back-off), the next result
expiry and the end of the first held wait are :meth:`DurableComponent.next_deadline`; nothing
polls.

Visibility: :meth:`DurableComponent.status_section` is the ``durable`` part of the status
document (``zmqserver status``, ``/metrics``), read from the store's in-memory counts; with
pub-sub events on, the pub-sub component publishes those counts once a second and hears of each
dead-lettered job through :attr:`DurableComponent.on_dead`.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any, Final

import zmq

from .._process import Credentials
from ..broker.state import Port, frames_size
from ..config import Config
from ..durable import tsp
from ..durable.sqlite import SqliteStore
from ..durable.store import (
    JobState,
    JobStore,
    NewJob,
    Runnable,
    StoreError,
    packed_size,
    retry_delay,
)
from ..errors import Status, parse_retry
from ..protocol import (
    ClientRequest,
    encode_client_reply,
    encode_client_request,
    parse_client_reply,
)
from .broker_side import BrokerComponent
from .component import Handle, Host, StartError, WatchItem

log = logging.getLogger("zmqserver.durable")

#: ``titanic.reply`` requests held at once (long polls), at most.
MAX_WAITERS: Final = 10_000

#: When a job that did not run at all (its service unknown or its queue full, the server
#: stopping) is tried again. Such a try is not counted against the job's retries. Not an
#: option: what it waits for (a worker registering, a queue draining) takes about that long,
#: and each try rewrites the job's row, so a shorter wait would mostly cost the store writes.
NOT_RUN_DELAY: Final = 1.0

#: The statuses after which a job runs again (an attempt used): the app asked, or the worker
#: was lost, or the job outlived its deadline (its worker was killed).
_RETRIED: Final = frozenset({Status.RETRY, Status.WORKER_LOST, Status.EXPIRED})
#: The statuses of a job that was never run: try again later, no attempt used.
_NOT_RUN: Final = frozenset({Status.QUEUE_FULL, Status.UNKNOWN_SERVICE, Status.SHUTTING_DOWN})

#: What :meth:`DurableComponent._answer` returns for a held ``titanic.reply`` (a long poll).
_HELD: Final[list[bytes]] = []

#: The internal client's routing id (a ROUTER never makes one up that starts with "zmqserver").
_IDENTITY: Final = b"zmqserver-durable"


class _Running:
    """A job handed to the broker: the stored job, and the parts of a streamed reply so far."""

    __slots__ = ("job", "parts")

    def __init__(self, job: Runnable) -> None:
        self.job = job
        self.parts: list[bytes] = []


class _Waiter:
    """A held ``titanic.reply`` (a long poll): who asked, how, and until when (monotonic)."""

    __slots__ = ("client", "deadline", "done", "request", "ticket")

    def __init__(self, client: bytes, request: ClientRequest, ticket: str, deadline: float):
        self.client = client
        self.request = request
        self.ticket = ticket
        self.deadline = deadline
        self.done = False


class DurableComponent:
    """The ``titanic.*`` services and the runs of stored jobs (docs/durable.md)."""

    def __init__(self, config: Config, broker: BrokerComponent) -> None:
        assert config.store is not None
        self.config = config
        self.broker = broker
        self.store: JobStore | None = None
        self.sock: zmq.Socket[bytes] | None = None
        #: Job ids that may run now, oldest first.
        self.ready: deque[int] = deque()
        #: (wall-clock start, job id) of jobs that must wait: a min-heap.
        self.scheduled: list[tuple[float, int]] = []
        #: Jobs handed to the broker, by request id.
        self.running: dict[int, _Running] = {}
        self._next_request = 0
        #: The requests of the new jobs of this turn, by their index in the answers.
        self._requests: dict[int, ClientRequest] = {}
        #: When the oldest finished job's result expires (wall clock; inf: none to expire).
        self._expire_at = math.inf
        #: time.time() - time.monotonic(), measured each turn: stored times are wall-clock,
        #: the loop's deadlines monotonic.
        self._offset = time.time() - time.monotonic()
        self._stopping = False
        #: Runs of jobs since the start: handed to the broker, and that ended in a result.
        self.started = 0
        self.finished = 0
        #: Jobs dead-lettered since the start.
        self.buried = 0
        #: Held ``titanic.reply`` requests by ticket, and by deadline (a min-heap; answered
        #: ones stay in it until their deadline passes or it is rebuilt).
        self.waiters: dict[str, list[_Waiter]] = {}
        self._waits: list[tuple[float, int, _Waiter]] = []
        self._held = 0
        self._wait_seq = 0
        #: (ticket, TSP reply) for the waiters of jobs that ended this turn: sent after commit.
        self._woken: list[tuple[str, list[bytes]]] = []
        #: Told of each dead-lettered job (ticket, service, last error): pub-sub's events.
        self.on_dead: Callable[[str, bytes, str], None] | None = None

    # -- Component --------------------------------------------------------------------------------

    def open(self, host: Host) -> None:
        config = self.config
        assert config.store is not None
        try:
            store = SqliteStore(config.store, config.store_sync)
        except StoreError as exc:
            raise StartError(str(exc)) from exc
        self.store = store
        recovered = store.recover()
        self.ready.extend(recovered.ready)
        self.scheduled = list(recovered.scheduled)
        heapq.heapify(self.scheduled)
        if recovered.oldest_finished is not None:
            self._expire_at = recovered.oldest_finished + config.result_ttl
        counts = store.counts()
        if recovered.interrupted:
            log.warning(
                "durable: %d jobs were running when the server last stopped; they run again "
                "(at-least-once)",
                recovered.interrupted,
            )
        log.info(
            "durable jobs in %s (sync %s): %s",
            config.store,
            config.store_sync,
            ", ".join(f"{counts[state]} {state.value}" for state in JobState),
        )
        broker, dispatcher = self.broker.broker, self.broker.dispatcher
        ctx = self.broker.ctx
        assert broker is not None
        assert dispatcher is not None
        assert ctx is not None
        endpoint = f"inproc://zmqserver-durable-{id(self):x}"
        broker.frontend.bind(endpoint)
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, _IDENTITY)
        sock.connect(endpoint)
        self.sock = sock
        dispatcher.intake = []

    def watch(self) -> list[WatchItem]:
        assert self.sock is not None
        return [(self.sock, zmq.POLLIN)]

    def next_deadline(self) -> float:
        when = self._expire_at
        if self.scheduled and self.scheduled[0][0] < when:
            when = self.scheduled[0][0]
        if self.ready and len(self.running) < self.config.store_window and not self._stopping:
            return 0.0  # can only be left by a stop; handle() submits them
        if self._waits:
            if self._stopping:
                return 0.0  # held requests are answered (300) when the server stops
            return min(when - self._offset, self._waits[0][0])
        return when - self._offset

    def handle(self, ready: Collection[Handle], now: float) -> None:
        store, dispatcher, broker = self.store, self.broker.dispatcher, self.broker.broker
        assert store is not None
        assert dispatcher is not None
        assert broker is not None
        self._offset = offset = time.time() - now
        wall = now + offset
        intake = dispatcher.intake
        answers = self._serve(intake, wall, now) if intake else []
        if intake:
            dispatcher.intake = []
        if self.sock in ready:
            self._read_replies(wall)
        self._wake_scheduled(wall)
        if wall >= self._expire_at:
            oldest = store.expire(wall - self.config.result_ttl)
            self._expire_at = math.inf if oldest is None else oldest + self.config.result_ttl
        requests = self._start_jobs() if not self._stopping else []
        # Acknowledged only once committed: the commit comes before any answer leaves.
        store.commit()
        if self._waits:
            self._answer_waiters(answers, now)
        if answers:
            dispatcher.outbox.extend(answers)
            broker.flush()
        sock = self.sock
        assert sock is not None
        for frames in requests:
            sock.send_multipart(frames)

    def on_stop(self, graceful: bool) -> None:
        # Stored jobs wait for the next start; running ones may still bring their results.
        self._stopping = True

    def on_reload(self) -> None:
        pass

    def on_config(self, config: Config) -> None:
        pass

    def owned_paths(self) -> list[str]:
        # The store and its write-ahead log: the server keeps writing them as ``user``.
        store = self.config.store
        assert store is not None
        return [path for path in (store, store + "-wal") if os.path.exists(path)]

    def admit_user(self, creds: Credentials) -> None:
        pass

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
        if self.store is not None:
            # Jobs still running stay "running" in the store: the next start runs them again.
            self.store.close()
            self.store = None

    # -- visibility -------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Jobs per state (``pending``, ``scheduled``, ``running``, ``done``, ``dead``)."""
        store = self.store
        counts = store.counts() if store is not None else {}
        return {state.value: counts.get(state, 0) for state in JobState}

    def status_section(self) -> dict[str, Any]:
        """The ``durable`` part of the status document (docs/operations.md)."""
        return {
            "durable": {
                "store": self.config.store,
                "jobs": self.counts(),
                "runs_started": self.started,
                "runs_finished": self.finished,
                "dead_lettered": self.buried,
            }
        }

    def _bury(self, job: Runnable, error: str, wall: float) -> None:
        store = self.store
        assert store is not None
        if store.bury(job.id, error, wall):
            self.buried += 1
            self._wake(job, [tsp.FAILED, error.encode()])
            if self.on_dead is not None:
                self.on_dead(job.ticket, job.service, error)
        self._expire_at = min(self._expire_at, wall + self.config.result_ttl)

    # -- the TSP services -------------------------------------------------------------------------

    def _serve(
        self, intake: list[tuple[bytes, ClientRequest]], wall: float, now: float
    ) -> list[tuple[Port, bytes, list[bytes]]]:
        """Answer ``intake``'s requests (new jobs are stored, not committed yet): what to send."""
        store = self.store
        assert store is not None
        answers: list[tuple[Port, bytes, list[bytes]]] = []
        new: list[tuple[int, NewJob]] = []  # index in answers, job
        parked = 0
        for index, (client, request) in enumerate(intake):
            try:
                body = self._answer(client, request, wall, now, new, index - parked)
            except tsp.TspError as exc:
                body = [tsp.UNKNOWN, str(exc).encode()]
            if body is _HELD:
                parked += 1
                continue
            if body is None:  # not a TSP service: as the broker answers one it does not know
                shown = (request.service or b"").decode("utf-8", "replace")
                frames = encode_client_reply(
                    request.form,
                    request.service,
                    [],
                    request_id=request.request_id,
                    status=Status.UNKNOWN_SERVICE,
                    message=f"no such service: {shown!r}",
                )
            else:
                frames = self._reply(request, body)
            answers.append((Port.FRONTEND, client, frames))
        if new:
            stored = store.add([job for _, job in new], wall)
            for (index, job), placed in zip(new, stored, strict=True):
                if placed is not None:
                    job_id, start = placed
                    if start <= wall:
                        self.ready.append(job_id)
                    else:
                        heapq.heappush(self.scheduled, (start, job_id))
                client = answers[index][1]
                request = self._requests[index]
                answers[index] = (
                    Port.FRONTEND,
                    client,
                    self._reply(request, [tsp.OK, job.ticket.encode()]),
                )
            self._requests.clear()
        return answers

    @staticmethod
    def _reply(request: ClientRequest, body: list[bytes]) -> list[bytes]:
        return encode_client_reply(
            request.form, request.service, body, request_id=request.request_id
        )

    def _answer(
        self,
        client: bytes,
        request: ClientRequest,
        wall: float,
        now: float,
        new: list[tuple[int, NewJob]],
        index: int,
    ) -> list[bytes] | None:
        """The TSP reply body to ``request`` (a new job is answered once it is stored;
        :data:`_HELD`: a long poll, answered later)."""
        store = self.store
        assert store is not None
        name = request.service
        body = [bytes(frame) for frame in request.body]
        if name == tsp.REQUEST:
            options, service, job_body = tsp.parse_request(body)
            limit = self.config.max_message_size
            if limit and frames_size(job_body) > limit:
                raise tsp.TspError(f"the job's body exceeds max_message_size ({limit} bytes)")
            service = service or self.config.default_service_name.encode()
            ticket = options.ticket or tsp.new_ticket()
            new.append((index, NewJob(ticket, service, job_body, options)))
            self._requests[index] = request
            return [tsp.FAILED]  # replaced once stored
        if name not in (tsp.REPLY, tsp.CLOSE, tsp.STATUS):
            return None
        wait = 0.0
        if name == tsp.REPLY:
            try:
                wait, ticket = tsp.parse_reply(body)
            except tsp.TspError as exc:
                raise tsp.TspError(f"titanic.reply {exc}") from None
        elif len(body) != 1:
            raise tsp.TspError(f"{name.decode()} takes one frame, the ticket")
        else:
            ticket = tsp.check_ticket(body[0])
        if name == tsp.CLOSE:
            store.forget(ticket)
            if ticket in self.waiters:
                self._woken.append((ticket, [tsp.UNKNOWN]))
            return [tsp.OK]
        outcome = store.outcome(ticket)
        if outcome is None:
            return [tsp.UNKNOWN]
        if name == tsp.STATUS:
            return [
                tsp.OK,
                outcome.state.value.encode(),
                b"%d" % outcome.attempts,
                b"%d" % outcome.retries,
                repr(outcome.eta).encode(),
                outcome.error.encode(),
            ]
        if outcome.state is JobState.DONE:
            return [tsp.OK, *(outcome.result or [])]
        if outcome.state is JobState.DEAD:
            return [tsp.FAILED, outcome.error.encode()]
        if wait > 0 and not self._stopping and self._held < MAX_WAITERS:
            self._hold(_Waiter(client, request, ticket, now + wait))
            return _HELD
        return [tsp.PENDING]

    # -- long polls -------------------------------------------------------------------------------

    def _hold(self, waiter: _Waiter) -> None:
        self.waiters.setdefault(waiter.ticket, []).append(waiter)
        self._wait_seq += 1
        heapq.heappush(self._waits, (waiter.deadline, self._wait_seq, waiter))
        self._held += 1

    def _wake(self, job: Runnable, body: list[bytes]) -> None:
        """The job ended (done or dead): its held requests get ``body`` after the commit."""
        if job.ticket in self.waiters:
            self._woken.append((job.ticket, body))

    def _answer_waiters(self, answers: list[tuple[Port, bytes, list[bytes]]], now: float) -> None:
        """Answer the held requests whose job ended, whose wait is over, or all (stopping)."""
        for ticket, body in self._woken:
            for waiter in self.waiters.pop(ticket, ()):
                self._release(waiter, body, answers)
        self._woken.clear()
        waits = self._waits
        while waits and (waits[0][0] <= now or self._stopping):
            waiter = heapq.heappop(waits)[2]
            if not waiter.done:
                held = self.waiters.get(waiter.ticket)
                if held is not None:
                    held.remove(waiter)
                    if not held:
                        del self.waiters[waiter.ticket]
                self._release(waiter, [tsp.PENDING], answers)
        if len(waits) > 2 * self._held + 64:  # answered ones pile up: drop them
            self._waits = [entry for entry in waits if not entry[2].done]
            heapq.heapify(self._waits)

    def _release(
        self, waiter: _Waiter, body: list[bytes], answers: list[tuple[Port, bytes, list[bytes]]]
    ) -> None:
        waiter.done = True
        self._held -= 1
        answers.append((Port.FRONTEND, waiter.client, self._reply(waiter.request, body)))

    # -- the runs ---------------------------------------------------------------------------------

    def _wake_scheduled(self, wall: float) -> None:
        scheduled = self.scheduled
        while scheduled and scheduled[0][0] <= wall:
            self.ready.append(heapq.heappop(scheduled)[1])

    def _start_jobs(self) -> list[list[bytes]]:
        """Hand ready jobs to the broker, up to ``store_window`` running: the frames to send."""
        room = self.config.store_window - len(self.running)
        if room <= 0 or not self.ready:
            return []
        store = self.store
        assert store is not None
        ids = [self.ready.popleft() for _ in range(min(room, len(self.ready)))]
        requests = []
        for job in store.start(ids):  # a closed job is gone, and left out
            self._next_request = request_id = self._next_request + 1
            self.running[request_id] = _Running(job)
            requests.append(encode_client_request(job.service, job.body, request_id=request_id))
        self.started += len(requests)
        return requests

    def _read_replies(self, wall: float) -> None:
        sock = self.sock
        assert sock is not None
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply = parse_client_reply(frames)
            run = self.running.get(reply.request_id or 0)
            if run is None:
                continue
            if not reply.final:
                run.parts.extend(bytes(frame) for frame in reply.body)
                continue
            del self.running[reply.request_id or 0]
            body = [bytes(frame) for frame in reply.body]
            if reply.status is Status.OK:
                self._finished(run.job, [*run.parts, *body], wall)
            else:
                self._failed(run.job, reply.status, b"".join(body).decode("utf-8", "replace"), wall)

    def _finished(self, job: Runnable, result: list[bytes], wall: float) -> None:
        store = self.store
        assert store is not None
        size = packed_size(result)
        limit = self.config.store_max_result
        if size > limit:
            self._bury(job, f"result of {size} bytes exceeds store_max_result ({limit})", wall)
            return
        if store.finish(job.id, result, wall):
            self.finished += 1
            self._wake(job, [tsp.OK, *result])
        self._expire_at = min(self._expire_at, wall + self.config.result_ttl)

    def _failed(self, job: Runnable, status: Status, message: str, wall: float) -> None:
        store = self.store
        assert store is not None
        error = f"{status.reason}: {message}"
        if status in _NOT_RUN:
            self._reschedule(job.id, wall + NOT_RUN_DELAY, error, attempt=False)
            return
        if status in _RETRIED and job.attempts <= job.retries:
            after = parse_retry(message)[0] if status is Status.RETRY else None
            delay = retry_delay(job.backoff, job.attempts, after)
            self._reschedule(job.id, wall + delay, error, attempt=True)
            return
        if status in _RETRIED:
            error = f"{error} (after {job.attempts} attempts)"
        self._bury(job, error, wall)

    def _reschedule(self, job_id: int, eta: float, error: str, *, attempt: bool) -> None:
        store = self.store
        assert store is not None
        store.reschedule(job_id, eta, error, attempt=attempt)
        heapq.heappush(self.scheduled, (eta, job_id))
