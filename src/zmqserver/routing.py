"""The broker's brain: services, least-recently-used workers, queued jobs, heartbeats.

Rule 1: no sockets, no clocks, no processes. Frames and ``now`` come in through the ``on_*``
methods; frames to send accumulate in :attr:`Router.outbox` as ``(port, routing id, frames)`` for
the I/O shell (broker.py) to send; :meth:`Router.next_deadline` tells the shell how long it may
sleep. Everything here can be driven, and is tested, without ZeroMQ.

Dispatch is least-recently-used per service: a worker that becomes free goes to the back of its
service's idle queue and a job goes to the worker at the front, the one that has waited longest.
(The seed kept a stack and so always chose the most recently freed worker: LIFO.) Jobs wait in a
FIFO queue per service while no worker is free.

Every job the router accepts ends in exactly one outcome (docs/protocol.md): a reply, an error
reply, or a drop that the shell logs when the client is gone. ``self.jobs`` holds the jobs that
are running on a worker; queued jobs live in their service's queue.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import ProtocolError, Status
from .protocol import (
    ClientRequest,
    Disconnect,
    Form,
    Heartbeat,
    Ready,
    WorkerReply,
    encode_client_reply,
    encode_disconnect,
    encode_heartbeat,
    encode_job_request,
    parse_client_request,
    parse_worker_message,
)

log = logging.getLogger("zmqserver.broker")


class Port(IntEnum):
    FRONTEND = 0
    BACKEND = 1


Outgoing = tuple[Port, bytes, list[bytes]]


@dataclass(slots=True, eq=False)
class Job:
    """A request the broker accepted, from arrival to its one outcome."""

    id: int
    address: bytes  # the "client address" frame the worker echoes (RFC 18), unique per job
    client: bytes  # the client's routing id on the frontend
    form: Form
    reply_service: bytes | None  # echoed in the reply's service frame; None for plain clients
    request_id: int | None
    body: list[bytes]
    flags: int
    received: float
    worker: WorkerState | None = None
    parts: list[bytes] = field(default_factory=list)  # PARTIAL bodies, for clients without them
    streamed: bool = False  # a PARTIAL already reached the client: the job cannot be rerun


@dataclass(slots=True, eq=False)
class WorkerState:
    identity: bytes
    service: Service
    delimited: bool
    expiry: float
    job: Job | None = None


@dataclass(slots=True, eq=False)
class Service:
    name: bytes
    queue: deque[Job] = field(default_factory=deque)
    # Insertion order is LRU order: the first idle worker has waited longest.
    idle: OrderedDict[bytes, WorkerState] = field(default_factory=OrderedDict)
    workers: int = 0


@dataclass(slots=True)
class Stats:
    accepted: int = 0
    replied: int = 0
    errors: int = 0


class Router:
    """Routing state for one broker. Not thread-safe; one event loop owns it.

    ``services`` names the services this broker always knows (the ones it runs workers for);
    requests for them queue even before a worker has said READY. Other services become known
    when a worker registers them.
    """

    def __init__(
        self,
        default_service: bytes,
        *,
        services: tuple[bytes, ...] = (),
        heartbeat_interval: float = 1.0,
        heartbeat_liveness: int = 3,
        now: float = 0.0,
    ) -> None:
        self.default_service = default_service
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_liveness = heartbeat_liveness
        self.services: dict[bytes, Service] = {}
        self._configured = frozenset((default_service, *services))
        for name in self._configured:
            self._service(name)
        self.workers: dict[bytes, WorkerState] = {}
        self.jobs: dict[bytes, Job] = {}  # running jobs by address
        self.outbox: list[Outgoing] = []
        self.stats = Stats()
        self.closing = False
        self._next_job = 0
        self._heartbeat_at = now + heartbeat_interval

    # -- queries ----------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """The monotonic time at which :meth:`on_tick` next has work to do."""
        return self._heartbeat_at

    def queued(self) -> int:
        return sum(len(s.queue) for s in self.services.values())

    def idle_workers(self, service: bytes | None = None) -> list[bytes]:
        """Idle worker ids of ``service`` (default: the default service), in dispatch order."""
        return list(self.services[service or self.default_service].idle)

    def take_outbox(self) -> list[Outgoing]:
        out, self.outbox = self.outbox, []
        return out

    # -- frontend ---------------------------------------------------------------------------------

    def on_client(self, client: bytes, frames: list[bytes], now: float) -> None:
        """A client sent ``frames``; queue or dispatch the job, or answer with an error."""
        try:
            request = parse_client_request(frames)
        except ProtocolError as exc:
            log.warning("bad request from client %s: %s", client.hex(), exc)
            if exc.reply is not None:
                self.outbox.append((Port.FRONTEND, client, exc.reply))
            return
        self._accept(client, request, now)

    def _accept(self, client: bytes, request: ClientRequest, now: float) -> None:
        name = request.service or self.default_service
        service = self.services.get(name)
        if self.closing or service is None:
            status = Status.SHUTTING_DOWN if self.closing else Status.UNKNOWN_SERVICE
            message = (
                "server is shutting down"
                if self.closing
                else f"no such service: {name.decode('utf-8', 'replace')!r}"
            )
            self.stats.errors += 1
            self.outbox.append(
                (
                    Port.FRONTEND,
                    client,
                    encode_client_reply(
                        request.form,
                        request.service,
                        [],
                        request_id=request.request_id,
                        status=status,
                        message=message,
                    ),
                )
            )
            return
        self._next_job += 1
        job = Job(
            id=self._next_job,
            address=self._next_job.to_bytes(8, "big"),
            client=client,
            form=request.form,
            reply_service=request.service,
            request_id=request.request_id,
            body=request.body,
            flags=request.flags,
            received=now,
        )
        self.stats.accepted += 1
        if service.idle:
            _, worker = service.idle.popitem(last=False)
            self._assign(worker, job)
        else:
            service.queue.append(job)

    def _assign(self, worker: WorkerState, job: Job) -> None:
        worker.job = job
        job.worker = worker
        self.jobs[job.address] = job
        self.outbox.append(
            (
                Port.BACKEND,
                worker.identity,
                encode_job_request(job.address, job.body, worker.delimited),
            )
        )

    def _dispatch(self, service: Service) -> None:
        while service.queue and service.idle:
            _, worker = service.idle.popitem(last=False)
            self._assign(worker, service.queue.popleft())

    def _answer(self, job: Job, body: list[bytes], final: bool = True) -> None:
        self.outbox.append(
            (
                Port.FRONTEND,
                job.client,
                encode_client_reply(
                    job.form, job.reply_service, body, request_id=job.request_id, final=final
                ),
            )
        )

    def _fail(self, job: Job, status: Status, message: str) -> None:
        self.stats.errors += 1
        self.outbox.append(
            (
                Port.FRONTEND,
                job.client,
                encode_client_reply(
                    job.form,
                    job.reply_service,
                    [],
                    request_id=job.request_id,
                    status=status,
                    message=message,
                ),
            )
        )

    # -- backend ----------------------------------------------------------------------------------

    def on_worker(self, identity: bytes, frames: list[bytes], now: float) -> None:
        """A worker sent ``frames``."""
        worker = self.workers.get(identity)
        try:
            msg = parse_worker_message(frames)
        except ProtocolError as exc:
            log.warning("worker %r broke the protocol (%s); disconnecting it", identity, exc)
            self._disconnect(identity, worker, delimited=worker.delimited if worker else False)
            return
        if worker is not None:
            worker.expiry = now + self.heartbeat_interval * self.heartbeat_liveness
        if isinstance(msg, Ready):
            self._on_ready(identity, worker, msg, now)
        elif worker is None:
            # RFC 18: any message but READY from a worker the broker does not know is an error.
            if not isinstance(msg, Disconnect):
                log.info("message from unregistered worker %r; disconnecting it", identity)
                self.outbox.append((Port.BACKEND, identity, encode_disconnect(msg.delimited)))
        elif isinstance(msg, WorkerReply):
            self._on_reply(worker, msg)
        elif isinstance(msg, Disconnect):
            self._remove(worker, requeue=True)
        else:
            assert isinstance(msg, Heartbeat)

    def _on_ready(
        self, identity: bytes, worker: WorkerState | None, msg: Ready, now: float
    ) -> None:
        if worker is not None:
            log.warning("worker %r sent READY twice; disconnecting it", identity)
            self._disconnect(identity, worker, worker.delimited)
            return
        if msg.service.startswith(b"mmi."):
            log.warning("worker %r tried to register reserved service %r", identity, msg.service)
            self.outbox.append((Port.BACKEND, identity, encode_disconnect(msg.delimited)))
            return
        service = self._service(msg.service)
        worker = WorkerState(
            identity,
            service,
            msg.delimited,
            now + self.heartbeat_interval * self.heartbeat_liveness,
        )
        self.workers[identity] = worker
        service.workers += 1
        service.idle[identity] = worker
        log.debug("worker %r ready for service %r", identity, msg.service)
        self._dispatch(service)

    def _on_reply(self, worker: WorkerState, msg: WorkerReply) -> None:
        job = worker.job
        if job is None or job.address != msg.address:
            log.warning(
                "worker %r replied to a job it does not hold; disconnecting it", worker.identity
            )
            self._disconnect(worker.identity, worker, worker.delimited)
            return
        if not msg.final:
            if job.form in (Form.MDP02, Form.MDP02_DELIMITED):
                job.streamed = True
                self._answer(job, msg.body, final=False)
            else:
                job.parts.extend(msg.body)
            return
        del self.jobs[job.address]
        worker.job = None
        job.worker = None
        if msg.status is Status.OK:
            self.stats.replied += 1
            self._answer(job, [*job.parts, *msg.body] if job.parts else msg.body)
        else:
            text = b"".join(bytes(f) for f in msg.body).decode("utf-8", "replace")
            self._fail(job, msg.status, text)
        service = worker.service
        service.idle[worker.identity] = worker
        self._dispatch(service)

    def _disconnect(self, identity: bytes, worker: WorkerState | None, delimited: bool) -> None:
        self.outbox.append((Port.BACKEND, identity, encode_disconnect(delimited)))
        if worker is not None:
            self._remove(worker, requeue=False)

    def worker_gone(self, identity: bytes, reason: str, *, undelivered: bool = False) -> None:
        """The shell learned that a worker is dead (its process exited, say).

        ``undelivered`` means the shell could not even hand the worker its job, so the job can
        safely go to another worker.
        """
        worker = self.workers.get(identity)
        if worker is not None:
            log.debug("worker %r gone: %s", identity, reason)
            self._remove(worker, requeue=undelivered, reason=reason)

    def _remove(self, worker: WorkerState, *, requeue: bool, reason: str = "") -> None:
        """Forget ``worker``; decide the fate of the job it held.

        ``requeue`` is for a worker that said DISCONNECT: it promises it did not and will not
        finish the job (our workers only disconnect between jobs, so a job it holds is one it
        never read) and the job goes back to the head of the queue. A worker that died or was
        thrown out may have run part of the job, so its client gets ``worker_lost``.
        """
        del self.workers[worker.identity]
        service = worker.service
        service.workers -= 1
        service.idle.pop(worker.identity, None)
        job = worker.job
        worker.job = None
        if job is not None:
            del self.jobs[job.address]
            job.worker = None
            if self.closing and requeue:
                # shutdown() already answered the queue; a job handed back now would be stranded.
                self._fail(job, Status.SHUTTING_DOWN, "server is shutting down")
            elif requeue and not job.parts and not job.streamed:
                service.queue.appendleft(job)
                self._dispatch(service)
            else:
                self._fail(
                    job,
                    Status.WORKER_LOST,
                    f"the worker running the job was lost ({reason or 'protocol error'})",
                )
        if not service.workers and not service.queue and service.name not in self._configured:
            # A service that only foreign workers offered is forgotten with its last worker, so
            # its requests are answered unknown_service instead of queueing for nobody.
            del self.services[service.name]

    # -- time -------------------------------------------------------------------------------------

    def on_tick(self, now: float) -> None:
        """Send due heartbeats to idle workers and expire idle workers that went silent.

        Only idle workers are expected to heartbeat here: a worker busy with a long job is
        judged by its process (the supervisor) until it answers.
        """
        if now < self._heartbeat_at:
            return
        self._heartbeat_at = now + self.heartbeat_interval
        for service in list(self.services.values()):
            for worker in list(service.idle.values()):
                if now > worker.expiry:
                    log.warning(
                        "worker %r missed %d heartbeats; dropping it",
                        worker.identity,
                        self.heartbeat_liveness,
                    )
                    self._disconnect(worker.identity, worker, worker.delimited)
                else:
                    self.outbox.append(
                        (Port.BACKEND, worker.identity, encode_heartbeat(worker.delimited))
                    )

    def shutdown(self) -> None:
        """Stop taking jobs: answer every queued job and every new request with shutting_down.

        Running jobs still get their replies.
        """
        self.closing = True
        for service in self.services.values():
            while service.queue:
                self._fail(service.queue.popleft(), Status.SHUTTING_DOWN, "server is shutting down")

    def fail_running(self, status: Status, message: str) -> None:
        """Answer every running job with an error (the shell gives up on its workers)."""
        for job in list(self.jobs.values()):
            if job.worker is not None:
                job.worker.job = None
                job.worker = None
            self._fail(job, status, message)
        self.jobs.clear()

    def _service(self, name: bytes) -> Service:
        service = self.services.get(name)
        if service is None:
            service = self.services[name] = Service(name)
        return service
