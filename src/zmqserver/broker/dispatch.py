"""The broker's brain: services, least-recently-used workers, queued jobs, deadlines, heartbeats.

Rule 1: no sockets, no clocks, no processes, no logging. Frames and ``now`` come in through the
``on_*`` methods; frames to send accumulate in :attr:`Dispatcher.outbox` as ``(port, routing id,
frames)`` for the I/O shell (shell.py) to send, workers that must be killed in
:attr:`Dispatcher.kills`, and what happened that an operator should hear of in
:attr:`Dispatcher.events` (events.py; the shell logs them). :meth:`Dispatcher.next_deadline` tells
the shell how long it may sleep. Everything here can be driven, and is tested, without ZeroMQ.

Dispatch is least-recently-used per service: a worker that becomes free goes to the back of its
service's idle queue and a job goes to the worker at the front, the one that has waited longest.
(The seed kept a stack and so always chose the most recently freed worker: LIFO.) Jobs wait while
no worker is free in a fair queue per service: FIFO per client, round robin across clients
(clients.py), so one client's flood does not delay everyone else's jobs. A client's outstanding
jobs and the replies held for it while its pipe is full are clients.py's too. With credit, a
worker may hold several jobs; the levels that keep workers by load are state.py's.

Rule 2: every job the dispatcher accepts ends in exactly one outcome (docs/reliability.md): a
reply, an error reply, or a drop that the shell logs when the client is gone. All outcomes go
through :meth:`Dispatcher._complete`, which marks the job done, so a second outcome is impossible
by construction. Queued jobs that expire are marked done and left in the deque (lazy deletion, so
expiry is O(1)); dispatch skips them. Finished jobs left among the deadlines (deadlines.py) are
dropped in bulk, and lose their body at once. Replies that a resend may ask for again are kept in
the reply cache (replycache.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..errors import ProtocolError, Status
from ..protocol import (
    FLAG_RETRYABLE,
    STATUS_OK,
    STREAMING_FORMS,
    ClientRequest,
    Disconnect,
    Frame,
    Heartbeat,
    Ready,
    WorkerReply,
    disconnect_like,
    encode_client_reply,
    encode_disconnect,
    encode_heartbeat,
    encode_job_request,
    parse_client_request,
    parse_worker_message,
)
from . import events, liveness, metrics
from .admission import client_full, error_frames, error_reply, mmi_reply, refusal, unknown_service
from .clients import ClientBook
from .deadlines import Deadlines
from .events import Event
from .queries import Queries
from .replycache import ReplyCache
from .state import (
    NO_PARTS,
    Job,
    Limits,
    Outgoing,
    Port,
    RequestKey,
    Service,
    Stats,
    WorkerState,
    charged_size,
    forget,
    place,
    take,
    unplace,
)

#: Outcomes worth replaying to a client that resends the same request: running it again would
#: give the same answer (or run the app twice). Lost/expired/refused jobs may be tried again.
_CACHEABLE: Final = frozenset({Status.OK, Status.APP_ERROR})

#: What a finished job's body becomes: the job may wait in the deadline heap until its deadline,
#: and must not keep the request's bytes alive that long. Never mutated.
_NO_BODY: Final[list[Frame]] = []


class Dispatcher(Queries):
    """Routing state for one broker. Not thread-safe; one event loop owns it.

    ``services`` names the services this broker always knows (the ones it runs workers for);
    requests for them queue even before a worker has said READY. Other services become known
    when a worker registers them, and are forgotten with their last worker.
    """

    def __init__(
        self,
        default_service: bytes,
        *,
        limits: Limits,
        services: tuple[bytes, ...] = (),
        heartbeat_interval: float = 1.0,
        heartbeat_liveness: int = 3,
        service_limits: Mapping[bytes, Limits] | None = None,
        now: float = 0.0,
    ) -> None:
        self.default_service = default_service
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_liveness = heartbeat_liveness
        self.limits = limits
        #: Per-service overrides of ``limits`` (job_timeout, max_queue, retries, kill_grace...).
        self.service_limits: dict[bytes, Limits] = dict(service_limits or {})
        self.services: dict[bytes, Service] = {}
        self._configured = frozenset((default_service, *services))
        for name in self._configured:
            self._service(name)
        self.workers: dict[bytes, WorkerState] = {}
        self.membership = 0  # these three: the autoscaler's inputs (queries.py)
        self.scale_seen: tuple[int, ...] = ()
        self.watch_load = True
        self.jobs: dict[bytes, Job] = {}  # running jobs by address
        self.pending: dict[RequestKey, Job] = {}  # queued or running jobs with a request id
        #: Replies to answer resends with (Lazy Pirate), bounded by the dispatcher's limits.
        self.replies = ReplyCache(limits.reply_cache, limits.reply_cache_bytes)
        self.outbox: list[Outgoing] = []
        #: Per client: outstanding jobs (max_client_inflight) and replies held for its pipe.
        self.clients = ClientBook(limits.max_client_inflight)
        self.kills: list[bytes] = []  # workers the shell must kill (hung, or past a deadline)
        #: What an operator should hear of, for the shell to log (events.py), oldest first.
        self.events: list[Event] = []
        self.stats = Stats()
        self.metrics = metrics.Recorder()  # per-service outcomes, waits, run times, rates
        self.closing = False
        #: plain_errors = drop: plain and raw clients get no error replies (they retry).
        self.drop_plain_errors = False
        self._next_job = 0
        self._heartbeat_at = now + heartbeat_interval
        #: Job deadlines and kill graces, in the order they come due.
        self.deadlines = Deadlines()
        self._now = now  # the latest ``now`` seen (_turn), for worker_gone, which has no clock
        #: Injected like the clock: did the host fork it (so it beats while busy); does it run?
        self.forked: Callable[[bytes], bool] | None = None
        self.process_running: Callable[[bytes], bool] | None = None
        #: Durable jobs on: the titanic.* requests for their component (the shell returns).
        self.intake: list[tuple[bytes, ClientRequest]] | None = None
        #: pass_client_info: workers that ask get a client info header with each job.
        self.pass_client_info = False
        #: A Binary Star server not active (ha_side.py): requests kept unread for it to decide.
        self.standby: list[tuple[bytes, list[Frame], Any, Any]] | None = None

    # -- queries ----------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """The monotonic time at which :meth:`on_tick` next has work to do."""
        when = self.deadlines.next_deadline()
        return when if when < self._heartbeat_at else self._heartbeat_at

    def set_limits(self, limits: Limits, service_limits: Mapping[bytes, Limits]) -> None:
        """New reliability policies (HUP): the dispatcher's, and each named service's."""
        self.limits = limits
        self.service_limits = dict(service_limits)
        self.replies.entries = limits.reply_cache
        self.replies.max_bytes = limits.reply_cache_bytes
        self.clients.limit = limits.max_client_inflight
        for name, service in self.services.items():
            service.limits = self.service_limits.get(name)
            self._set_prefetch(service)
        # Registered workers get the new cap on their credit: a lower one takes effect as
        # their jobs finish, a higher one (up to what they asked for) at once.
        for worker in self.workers.values():
            if worker.reachable:
                worker.credit = min(worker.asked, self._limits_of(worker.service).worker_credit)
                unplace(worker)
                place(worker)
        for service in list(self.services.values()):
            self._dispatch(service)

    def _limits_of(self, service: Service) -> Limits:
        return service.limits or self.limits

    def _set_prefetch(self, service: Service) -> None:
        """Give the service its prefetch gate's limit (from its limits, or the dispatcher's)."""
        service.prefetch_below = self._limits_of(service).prefetch_below

    def take_outbox(self) -> list[Outgoing]:
        out, self.outbox = self.outbox, []
        return out

    def take_kills(self) -> list[bytes]:
        out, self.kills = self.kills, []
        return out

    def take_events(self) -> list[Event]:
        out, self.events = self.events, []
        return out

    # -- frontend ---------------------------------------------------------------------------------

    def on_client(
        self, client: bytes, frames: list[Frame], now: float, key: Any = None, peer: Any = None
    ) -> None:
        """A client sent ``frames``; queue or dispatch the job, or answer with an error.
        ``key`` (its CURVE key) and ``peer`` (its Peer-Address): bytes or None, read only when
        passed to workers."""
        self._turn(now)
        if self.standby is not None:
            self.standby.append((client, frames, key, peer))
            return
        try:
            request = parse_client_request(frames)
        except ProtocolError as exc:
            self.events.append(events.BadRequest(client, str(exc)))
            if exc.reply is not None:
                self._to_client(client, exc.reply, outcome=False)
            return
        self._accept(client, request, now, key or b"", len(frames), peer or b"")

    def _refuse(self, client: bytes, request: ClientRequest, refused: tuple[Status, str]) -> None:
        self.stats.errors += 1
        self.metrics.refused(request, self.default_service, self.services, refused[0], client)
        if self.drop_plain_errors and request.service is None:  # plain or raw: no reply
            return
        self._to_client(client, error_reply(request, *refused), outcome=False)

    def _to_client(self, client: bytes, frames: list[Frame], *, outcome: bool = True) -> None:
        """Send ``frames`` to ``client``, or hold them behind those its pipe could not take yet
        (clients.py; the shell sends them as it drains)."""
        if client in self.clients.holding:
            self.clients.hold(client, frames, outcome=outcome)
        else:
            self.outbox.append((Port.FRONTEND, client, frames))

    def client_gone(self, client: bytes) -> int:
        """``client`` disconnected: its queued jobs are dropped unrun, what is held for it too,
        and its running jobs' outcomes will not be sent (each counted in ``stats.abandoned``);
        how many held messages were dropped."""
        for service in self.services.values():
            for job in service.drop_client(client):
                self.stats.abandoned += 1
                self.clients.finished(client)
                self._finish(job)
        return self.clients.forget(client)  # held messages dropped

    def _accept(
        self,
        client: bytes,
        request: ClientRequest,
        now: float,
        client_key: bytes = b"",
        frames: int = 0,
        peer: bytes = b"",
    ) -> None:
        name = request.service or self.default_service
        service = self.services.get(name)
        limits = self.limits if service is None else service.limits or self.limits
        timeout = request.timeout_ms / 1000 if request.timeout_ms else limits.job_timeout
        deadline = now + timeout if timeout else math.inf
        key = None if request.request_id is None else (client, request.request_id)
        if key is not None and self._duplicate(key, deadline):
            return
        if self.intake is not None and name.startswith(b"titanic."):
            self.intake.append((client, request))  # answered from the store: durable_side.py
            return
        if name.startswith(b"mmi."):
            durable = self.intake is not None
            self._to_client(client, mmi_reply(name, request, self.services, durable), outcome=False)
            return
        size = charged_size(request.body)
        refused = refusal(request, name, service, limits, self.closing, frames, size)
        if refused is None and self.clients.full(client):
            refused = client_full(self.clients.outstanding(client))
        if refused is not None:
            self._refuse(client, request, refused)
            return
        if service is None:  # no worker has registered it: it may come (admission.py)
            service = self._service(name)
            service.provisional = True
        self._next_job = job_id = self._next_job + 1
        # Positional: this runs once a job, and keywords cost a dataclass __init__ twice as much.
        job = Job(
            job_id,
            job_id.to_bytes(8, "big"),
            client,
            request.form,
            request.service,
            request.request_id,
            request.body,
            request.flags,
            now,
            service,
            deadline,
            size,
        )
        if client_key:
            job.client_key = client_key
        if peer:
            job.peer = peer
        self.stats.accepted += 1
        self.clients.accepted(client)
        if key is not None:
            self.pending[key] = job
        if service.provisional:  # answered unknown_service if no worker comes by then
            job.due_at = min(deadline, now + self.limits.unknown_service_wait)
        if job.due_at != math.inf:
            self.deadlines.add(job)  # job.due_at: its deadline, or the end of that wait
        if not service.waiting:  # else no worker has credit left (dispatch would have used it)
            worker = take(service, self._now)
            if worker is not None:
                self._assign(worker, job)
                return
        service.enqueue(job)

    def _duplicate(self, key: RequestKey, deadline: float) -> bool:
        """Handle a resend (Lazy Pirate) of a request the broker has seen; True if it was one.

        A finished request gets its cached reply again instead of a second run; one that is
        still queued or running just gets the new attempt's deadline, and its one reply will
        reach the client (which kept its routing id across reconnects).
        """
        cached = self.replies.get(key)
        if cached is not None:
            self.stats.duplicates += 1
            self._to_client(key[0], cached, outcome=False)
            return True
        job = self.pending.get(key)
        if job is None:
            return False
        self.stats.duplicates += 1
        if deadline > job.deadline:
            job.deadline = deadline  # the timer already queued re-arms itself when it fires
        return True

    def _assign(self, worker: WorkerState, job: Job) -> None:
        """Send ``job`` to ``worker``, which :func:`_take` took out of its level."""
        jobs = worker.jobs
        if not jobs:
            job.started = self._now
        jobs.append(job)
        job.worker = worker
        job.attempts += 1
        self.jobs[job.address] = job
        info = job.client_info(self._now) if worker.client_info else b""
        request = encode_job_request(
            job.address, job.body, worker.delimited, worker.v1, job.client_key, worker.compact, info
        )
        self.outbox.append((Port.BACKEND, worker.identity, request))
        place(worker)  # back in a level if it has credit left

    def _dispatch(self, service: Service) -> None:
        queue = service.queue
        while service.placed:
            job = queue.head()  # the next client's turn, live jobs only
            if job is None:
                return
            worker = take(service, self._now)
            if worker is None:
                return
            queue.pop_head()
            service.unqueued(job)
            self._assign(worker, job)

    # -- outcomes ---------------------------------------------------------------------------------

    def _complete(self, job: Job, frames: list[Frame], status: Status) -> None:
        """Send the job's one outcome. Every outcome of every job passes through here (or, for
        jobs dropped with their client, :meth:`_finish` alone)."""
        self.metrics.finished(job, status, self._now)
        key = self._finish(job)
        if key is not None and frames and status in _CACHEABLE:
            self.replies.put(key, frames)
        if self.clients.finished(job.client):
            if frames:  # none: an error dropped for a plain client (plain_errors = drop)
                self._to_client(job.client, frames)
        else:
            self.stats.abandoned += 1  # its client went away while it ran

    def _drop(self, job: Job) -> None:
        """End ``job`` unanswered: its client resends it elsewhere (shutdown, _lost)."""
        self.clients.finished(job.client)
        self._finish(job)

    def _finish(self, job: Job) -> RequestKey | None:
        """Mark ``job`` done: it has had its one outcome (or been dropped); its request key."""
        assert not job.done, "a job gets exactly one outcome"
        job.done = True
        job.body = _NO_BODY  # its timer may outlive it by up to job_timeout
        if job.due_at != math.inf:
            self.deadlines.finished()
        key = job.key
        if key is not None:
            self.pending.pop(key, None)
        return key

    def _answer(self, job: Job, body: list[Frame]) -> None:
        self.stats.replied += 1
        frames = encode_client_reply(job.form, job.reply_service, body, request_id=job.request_id)
        self._complete(job, frames, STATUS_OK)  # a Final: Status.OK is a lookup (errors.py)

    def _fail(self, job: Job, status: Status, message: str) -> None:
        self.stats.errors += 1
        if self.drop_plain_errors and job.reply_service is None:
            self._complete(job, [], status)  # no reply: plain_errors = drop
            return
        frames = error_frames(job.form, job.reply_service, job.request_id, status, message)
        self._complete(job, frames, status)

    def _lost(self, job: Job, reason: str) -> None:
        """The worker running ``job`` died or was thrown out: retry the job, or report it."""
        limits = self._limits_of(job.service)
        retry = bool(job.flags & FLAG_RETRYABLE) or limits.retry_jobs
        if self.closing and self.standby is not None:
            self._drop(job)  # a Binary Star server leaving its pair: the client goes to the peer
        elif self.closing:
            self._fail(job, Status.SHUTTING_DOWN, "server is shutting down")
        elif not retry or job.streamed or job.parts:
            self._fail(job, Status.WORKER_LOST, f"the worker running the job was lost ({reason})")
        elif job.attempts >= limits.max_attempts:
            self.events.append(events.JobQuarantined(job.id, job.attempts))
            self._fail(
                job,
                Status.WORKER_LOST,
                f"the job was lost with {job.attempts} workers in a row ({reason}); "
                "not retried again, it may be what kills them",
            )
        else:
            self.stats.retried += 1
            self.events.append(events.JobRetried(job.id, reason, job.attempts + 1))
            job.service.requeue(job)  # whatever its bounds; the caller dispatches

    # -- backend ----------------------------------------------------------------------------------

    def on_worker(self, identity: bytes, frames: list[Frame], now: float) -> None:
        """A worker sent ``frames``."""
        self._turn(now)
        worker = self.workers.get(identity)
        try:
            msg = parse_worker_message(frames)
        except ProtocolError as exc:
            self.events.append(events.WorkerBrokeProtocol(identity, str(exc)))
            if worker is not None:
                self._disconnect(identity, worker, worker.delimited, worker.v1)
            else:
                self.outbox.append((Port.BACKEND, identity, disconnect_like(frames)))
            return
        if worker is not None:
            beat = isinstance(msg, Heartbeat)
            liveness.heard(worker, now, beat, self.heartbeat_interval, self.heartbeat_liveness)
        if isinstance(msg, Ready):
            self._on_ready(identity, worker, msg, now)
        elif worker is None:
            # RFC 18: any message but READY from a worker the broker does not know is an error.
            if not isinstance(msg, Disconnect):
                self.events.append(events.UnregisteredWorker(identity))
                self.outbox.append(
                    (Port.BACKEND, identity, encode_disconnect(msg.delimited, msg.v1))
                )
        elif isinstance(msg, WorkerReply):
            self._on_reply(worker, msg)
        elif isinstance(msg, Disconnect):
            self._remove(worker, handed_back=True)
        else:
            assert isinstance(msg, Heartbeat)

    def _on_ready(
        self, identity: bytes, worker: WorkerState | None, msg: Ready, now: float
    ) -> None:
        if worker is not None:
            self.events.append(events.WorkerMisbehaved(identity, "sent READY twice"))
            self._disconnect(identity, worker, worker.delimited, worker.v1)
            return
        if msg.service.startswith(b"mmi."):
            self.events.append(events.ReservedService(identity, msg.service))
            self.outbox.append((Port.BACKEND, identity, encode_disconnect(msg.delimited, msg.v1)))
            return
        service = self._service(msg.service)
        service.provisional = False
        credit = min(msg.credit, self._limits_of(service).worker_credit)
        worker = WorkerState(
            identity,
            service,
            msg.delimited,
            now,
            msg.v1,
            msg.credit,
            max(1, credit),
            compact=msg.compact,
            client_info=msg.client_info and self.pass_client_info,
            # A zmqserver worker; an RFC one is watched (liveness.py).
            beats_busy=msg.extended or (self.forked is not None and self.forked(identity)),
        )
        liveness.heard(worker, now, False, self.heartbeat_interval, self.heartbeat_liveness)
        self.workers[identity] = worker
        self.membership += 1
        service.workers += 1
        place(worker)  # holding no job: the idle queue
        self.events.append(events.WorkerReady(identity, msg.service, credit, msg.compact))
        self._dispatch(service)

    def _release(self, worker: WorkerState, job: Job) -> None:
        """Take ``job`` off ``worker`` (its FINAL came), making room for another."""
        jobs = worker.jobs
        if jobs[0] is job:
            del jobs[0]
            worker.service.timed(self._now - job.started)
            if jobs:  # the next one starts now
                head = jobs[0]
                head.started = self._now
                if head.done:  # it expired while waiting behind: it gets kill_grace to run
                    kill_at = self._now + self._limits_of(head.service).kill_grace
                    self.deadlines.rearm(kill_at, head)
        else:
            jobs.remove(job)  # a foreign worker answering out of order; ours never do
        del self.jobs[job.address]
        job.worker = None
        unplace(worker)
        place(worker)

    def _on_reply(self, worker: WorkerState, msg: WorkerReply) -> None:
        if msg.compact and not worker.compact:
            what = "sent compact framing it did not ask for"
            self.events.append(events.WorkerMisbehaved(worker.identity, what))
            self._disconnect(worker.identity, worker, worker.delimited, worker.v1)
            return
        job = self.jobs.get(msg.address)
        if job is None or job.worker is not worker:
            what = "replied to a job it does not hold"
            self.events.append(events.WorkerMisbehaved(worker.identity, what))
            self._disconnect(worker.identity, worker, worker.delimited, worker.v1)
            return
        if job.done:
            # Expired while running: the client was answered; only free the worker.
            if msg.final:
                self._release(worker, job)
                self._dispatch(worker.service)
            return
        if not msg.final:
            if job.form in STREAMING_FORMS:
                job.streamed = True
                partial = encode_client_reply(
                    job.form, job.reply_service, msg.body, request_id=job.request_id, final=False
                )
                self._to_client(job.client, partial, outcome=False)
            else:
                if job.parts is NO_PARTS:
                    job.parts = list(msg.body)
                else:
                    job.parts.extend(msg.body)
            return
        if msg.status is STATUS_OK:
            self._answer(job, [*job.parts, *msg.body] if job.parts else msg.body)
        else:
            text = b"".join(bytes(f) for f in msg.body).decode("utf-8", "replace")
            self._fail(job, msg.status, text)
        self._release(worker, job)
        self._dispatch(worker.service)

    def _disconnect(
        self,
        identity: bytes,
        worker: WorkerState | None,
        delimited: bool,
        v1: bool = False,
        reason: str = "protocol error",
    ) -> None:
        self.outbox.append((Port.BACKEND, identity, encode_disconnect(delimited, v1)))
        if worker is not None:
            self._remove(worker, reason=reason)

    def worker_gone(self, identity: bytes, reason: str, *, undelivered: bool = False) -> None:
        """The shell learned that a worker is dead (its process exited, say).

        ``undelivered`` means the shell could not even hand the worker a message. Only jobs
        are sent to a worker that holds any, so a worker holding one job never got it, and it
        can safely go to another worker. One holding more may have got and started the oldest
        before the failed send (which was for a later one), or may have left in an orderly way
        with a DISCONNECT that is still unread (a worker recycled by max_requests): the dispatcher
        cannot tell yet, so it sends that worker nothing more and waits for the DISCONNECT, the
        process's exit (another call here) or its heartbeats to run out, which settle it.
        """
        worker = self.workers.get(identity)
        if worker is None:
            return
        if undelivered and worker.jobs and worker.pinged == worker.jobs[0].id:
            undelivered = False  # a HEARTBEAT sent after its job failed: the job got there
        if undelivered and len(worker.jobs) > 1:
            self.events.append(events.WorkerUnreachable(identity, reason))
            worker.reachable = False
            worker.credit = 0
            unplace(worker)
            return
        self.events.append(events.WorkerGone(identity, reason))
        self._remove(worker, handed_back=undelivered, reason=reason)

    def _remove(self, worker: WorkerState, *, handed_back: bool = False, reason: str = "") -> None:
        """Forget ``worker``; decide the fate of the jobs it held.

        ``handed_back`` is for a worker that said DISCONNECT (or never got its job): it did not
        and will not run the jobs it holds (our workers only disconnect between jobs, so a job
        it holds is one it never read), and they go back to the head of the queue, whatever
        their retry policy. A worker that died or was thrown out may have run part of its
        oldest job: see :meth:`_lost`. The jobs queued behind that one never started (a worker
        runs its jobs in the order they were sent), so they are handed back in any case.
        """
        del self.workers[worker.identity]
        self.membership += 1
        service = worker.service
        service.workers -= 1
        unplace(worker)
        held = list(worker.jobs)
        worker.jobs.clear()
        # Newest first: each requeue goes to the head, so they end up in the order they came.
        for i in range(len(held) - 1, -1, -1):
            job = held[i]
            del self.jobs[job.address]
            job.worker = None
            back = handed_back or i > 0
            job.attempts -= back  # a job handed back unread was never attempted
            if job.done:
                pass  # expired while held: its client has had its answer
            elif back and not self.closing and not job.parts and not job.streamed:
                job.service.requeue(job)
            else:
                self._lost(job, reason or "it disconnected")
        self._dispatch(service)
        forget(self.services, self._configured, service)

    # -- time -------------------------------------------------------------------------------------

    def on_tick(self, now: float) -> None:
        """Expire jobs past their deadline; heartbeat idle workers; drop silent workers."""
        self._turn(now)
        deadlines = self.deadlines
        while True:
            job = deadlines.pop_due(now)
            if job is None:
                break
            self._check_deadline(job, now)
        if now < self._heartbeat_at:
            return
        self._heartbeat_at = now + self.heartbeat_interval
        patience = self.heartbeat_interval * self.heartbeat_liveness
        workers = self.workers.values()
        silent = liveness.silent(workers, now, patience, self.process_running, self.events)
        for worker in silent:
            # Out of dispatch first: the jobs of one silent worker must not be handed to
            # another that is about to be dropped too.
            unplace(worker)
            worker.credit = 0
        for worker in silent:
            # Busy workers heartbeat too (ours from a thread), so a silent one (liveness.py)
            # is dead, hung (SIGSTOP) or cut off: kill it, reroute its jobs.
            self.events.append(events.WorkerExpired(worker.identity, self.heartbeat_liveness))
            self.kills.append(worker.identity)
            self._disconnect(
                worker.identity,
                worker,
                worker.delimited,
                worker.v1,
                reason=f"it missed {self.heartbeat_liveness} heartbeats",
            )
        for worker in liveness.beat_to(self.workers.values()):
            self.outbox.append(
                (Port.BACKEND, worker.identity, encode_heartbeat(worker.delimited, worker.v1))
            )

    def _turn(self, now: float) -> None:
        """Take ``now``; a gap of more than an interval is the broker's stall (liveness.py)."""
        lost = now - self._now - self.heartbeat_interval
        self._now = now
        if lost > 0:
            liveness.stalled(self.workers.values(), lost, self.heartbeat_interval, self.events)

    def _check_deadline(self, job: Job, now: float) -> None:
        """A job's timer fired: expire it, or kill the worker still running an expired job.

        The client hears ``expired`` at the deadline itself, while it is still waiting (its
        header advertised a little less than its own patience). The worker gets ``kill_grace``
        more to finish before it is killed; a reply it sends in between is dropped. Only the
        job a worker is running (its oldest) can get it killed: one waiting behind it gets
        ``kill_grace`` from when it starts (:meth:`_release` arms that timer).
        """
        worker = job.worker
        if job.done:
            if worker is None or worker.jobs[0] is not job:
                return  # answered and off its worker, or not started yet
            start = max(job.deadline, job.started)
            kill_at = start + self._limits_of(job.service).kill_grace
            if now < kill_at:
                self.deadlines.rearm(kill_at, job)
                return
            self.events.append(events.WorkerOverran(job.id, now - job.deadline, worker.identity))
            self.kills.append(worker.identity)
            self._disconnect(
                worker.identity, worker, worker.delimited, worker.v1, reason="past its deadline"
            )
            return
        if now < job.deadline:  # a resend moved the deadline, or the service's wait is over
            if worker is None and job.service.provisional:
                job.service.unqueued(job)
                self._fail(job, *unknown_service(job.service.name))
                forget(self.services, self._configured, job.service)
                return
            self.deadlines.rearm(job.deadline, job)
            return
        self.stats.expired += 1
        if worker is None:  # queued: it stays in the deque, marked done
            job.service.unqueued(job)
            self._fail(job, Status.EXPIRED, "the job's deadline passed while it was queued")
            forget(self.services, self._configured, job.service)
            return
        if worker.jobs[0] is not job:
            # Sent, but waiting behind another job in the worker: it will still run (the worker
            # cannot be told to skip it), and its late reply is dropped.
            self._fail(job, Status.EXPIRED, "the job's deadline passed while it waited in a worker")
            return
        self._fail(job, Status.EXPIRED, "the job's deadline passed while it was running")
        kill_grace = self._limits_of(job.service).kill_grace
        self.deadlines.rearm(max(job.deadline, job.started) + kill_grace, job)

    def shutdown(self, answer: bool = True) -> None:
        """Stop taking jobs: answer every queued job and every new request with shutting_down
        (``answer`` False: drop queued jobs unanswered, for a Binary Star server leaving its pair,
        whose clients then resend to the peer: ha_side.py). Running jobs still get replies."""
        self.closing = True
        for service in self.services.values():
            for job in service.queue.clear():
                if job.done:
                    continue
                if answer:
                    self._fail(job, Status.SHUTTING_DOWN, "server is shutting down")
                else:
                    self._drop(job)
            service.waiting = service.queued_bytes = 0

    def fail_running(self, status: Status, message: str) -> None:
        """Answer every running job with an error (the shell gives up on its workers)."""
        for job in list(self.jobs.values()):
            worker = job.worker
            if worker is not None and worker.jobs:
                worker.jobs.clear()
                unplace(worker)
                place(worker)
            job.worker = None
            if not job.done:
                self._fail(job, status, message)
        self.jobs.clear()

    def _service(self, name: bytes) -> Service:
        service = self.services.get(name)
        if service is None:
            service = self.services[name] = Service(name, limits=self.service_limits.get(name))
            self._set_prefetch(service)
        return service
