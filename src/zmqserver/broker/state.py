"""What the dispatcher keeps: jobs, workers, services, their limits, and the levels of credit.

Rule 1: data and the few functions that keep its invariants (a worker sits in the level of the
jobs it holds); no decisions. Which job goes where, and what happens to it, is dispatch.py's.

Credit (docs/protocol.md §6.3): a worker may hold up to ``credit`` jobs (its READY asks, the
service's ``worker_credit`` caps; 1 is strict LRU). It runs them in the order they were sent, so
of the jobs it holds only the oldest may have started. Workers sit in ``Service.levels`` by how
many jobs they hold: ``levels[k]`` is an LRU-ordered dict of the workers holding ``k`` jobs with
credit to spare, and ``levels[0]`` is the idle queue. A job goes to the first worker of the
lowest non-empty level (:func:`take`): an idle worker if there is one, else the least loaded,
LRU among equals.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Final

from ..protocol import Form, Frame, encode_client_info
from .clients import FairQueue

if TYPE_CHECKING:
    from ..config import Config


class Port(IntEnum):
    FRONTEND = 0
    BACKEND = 1


Outgoing = tuple[Port, bytes, list[Frame]]
RequestKey = tuple[bytes, int]

#: A job's PARTIAL bodies until the first one comes (most never get one): no list a job.
#: Never mutated (the first PARTIAL replaces it); empty, so ``job.parts`` reads as before.
NO_PARTS: Final[list[Frame]] = []

#: The weight of the newest reply in a service's moving average of job time: about the last
#: eight jobs count, so one long job among short ones closes the prefetch gate for a while.
JOB_TIME_WEIGHT: Final = 0.125


class Job:
    """A request the broker accepted, from arrival to its one outcome.

    A plain class with ``__slots__`` and its own ``__init__``, made once a job: compiled, that
    is a native constructor; a dataclass's generated one costs 0.7 us (see protocol/frames.py).
    """

    __slots__ = (
        "id", "address", "client", "form", "reply_service", "request_id", "body", "flags",
        "received", "service", "deadline", "attempts", "done", "worker", "started", "parts",
        "streamed", "client_key", "due_at", "size", "peer",
    )  # fmt: skip

    def __init__(
        self,
        id: int,
        address: bytes,
        client: bytes,
        form: Form,
        reply_service: bytes | None,
        request_id: int | None,
        body: list[Frame],
        flags: int,
        received: float,
        service: Service,
        deadline: float = math.inf,
        size: int = 0,
    ) -> None:
        self.id = id
        self.address = address  # the "client address" frame the worker echoes (RFC 18)
        self.client = client  # the client's routing id on the frontend
        self.form = form
        self.reply_service = reply_service  # echoed in the reply's service frame; None: plain
        self.request_id = request_id
        self.body = body
        self.flags = flags
        self.received = received
        self.service = service
        self.deadline = deadline
        self.attempts = 0  # how many workers the job was given to
        self.done = False
        self.worker: WorkerState | None = None
        #: When it became the oldest job of its worker (so, may have started).
        self.started = 0.0
        self.parts: list[Frame] = NO_PARTS  # PARTIAL bodies, for clients without them
        self.streamed = False  # a PARTIAL already reached the client: the job cannot be rerun
        self.client_key = b""  # the client's CURVE key (Z85), passed to the worker if asked
        self.due_at = (
            deadline  # where it sits in the dispatcher's FIFO of deadlines (deadlines.py), if there
        )
        #: Its body's :func:`charged_size`, fixed at acceptance: what it adds to its service's
        #: ``queued_bytes`` while queued (its body is dropped when it is done, see dispatch.py).
        self.size = size
        #: The client's Peer-Address (its IP for tcp), read only with pass_client_info.
        self.peer = b""

    def client_info(self, now: float) -> bytes:
        """The client info header for the worker this job is going to (pass_client_info)."""
        deadline = self.deadline
        left = None if deadline == math.inf else int((deadline - now) * 1000)
        return encode_client_info(self.request_id, self.attempts, left, self.peer)

    @property
    def key(self) -> RequestKey | None:
        return None if self.request_id is None else (self.client, self.request_id)

    def __repr__(self) -> str:
        return f"Job({self.id}, client={self.client!r}, service={self.service.name!r})"


@dataclass(eq=False)
class WorkerState:
    identity: bytes
    service: Service
    delimited: bool
    expiry: float
    v1: bool = False  # speaks MDP/0.1: no PARTIAL, RFC 7 command numbers
    asked: int = 1  # the credit its READY asked for
    credit: int = 1  # jobs it may hold: ``asked``, capped by the service's worker_credit
    #: The jobs it holds, in the order they were sent; only ``jobs[0]`` may have started.
    jobs: list[Job] = field(default_factory=list)  # a few (credit): a list, not a deque
    level: int = -1  # the ``Service.levels`` index it sits in (len(jobs)); -1: no credit left
    reachable: bool = True  # False: a send to it failed; it gets nothing more (see worker_gone)
    compact: bool = False  # its READY asked for jobs in compact framing (protocol.md §6.1a)
    #: It gets a client info header with each job (asked in its READY, and pass_client_info).
    client_info: bool = False
    served: int = 0  # jobs it answered or that ended while it ran them (metrics.py counts)
    # Liveness (liveness.py): each worker is judged by its own heartbeat cadence.
    #: When its last message came while it was idle: the start of a gap to measure; -1: none.
    heard: float = -1.0
    #: The interval it was seen to heartbeat at while idle, in seconds (0: not seen yet).
    cadence: float = 0.0
    #: It heartbeats while busy (a zmqserver worker, or seen to): silence then means dead.
    #: Otherwise (RFC workers, which send nothing while busy) the job's deadline governs.
    beats_busy: bool = False
    #: The id of the job it held when the broker last sent it a HEARTBEAT while busy (0: none).
    pinged: int = 0


@dataclass(eq=False)
class Service:
    name: bytes
    #: FIFO per client, round robin across clients (clients.py). May hold done (expired)
    #: jobs: dispatch skips them.
    queue: FairQueue = field(default_factory=FairQueue)
    waiting: int = 0  # live jobs in ``queue``
    #: The :attr:`Job.size` of the live jobs in ``queue`` (max_queue_bytes): moved with
    #: ``waiting``, job by job, never summed.
    queued_bytes: int = 0
    # Insertion order is LRU order: the first idle worker has waited longest. Plain dicts keep
    # insertion order too, and the levels need nothing else: compiled, a dict's items are walked
    # and stored natively, where an OrderedDict's go through generic calls (about 0.4 us a job).
    idle: dict[bytes, WorkerState] = field(default_factory=dict)
    workers: int = 0
    #: This service's reliability policy; None: the dispatcher's (``Dispatcher.limits``).
    limits: Limits | None = None
    #: levels[k]: the workers holding k jobs that may take another, LRU first; levels[0] is idle.
    levels: list[dict[bytes, WorkerState]] = field(default_factory=list)
    #: Workers in any level (with credit to spare): dispatch asks after every reply, and the
    #: answer is usually "none", which this gives without looking through the levels.
    placed: int = 0
    #: How long a worker takes over a job, in seconds: a moving average over the service's
    #: replies, from when the job became its worker's oldest to its FINAL (inf: none yet).
    job_time: float = math.inf
    #: Its :attr:`Limits.prefetch_below`, kept here because dispatch reads it for every job.
    prefetch_below: float = 0.0
    #: Made by a request, not a worker: no worker has registered it yet. Its jobs wait for
    #: one for unknown_service_wait, then are answered unknown_service (RFC 7/18: SHOULD queue).
    provisional: bool = False

    def __post_init__(self) -> None:
        self.levels.append(self.idle)

    @property
    def prefetch(self) -> bool:
        """May a busy worker be sent more jobs (up to its credit)? Only while the service's
        jobs are short on average (an idle worker may always take one)."""
        limit = self.prefetch_below
        return not limit or self.job_time < limit

    def enqueue(self, job: Job) -> None:
        """``job`` joins the back of its client's queue: a new job no worker can take now."""
        self.queue.append(job)
        self.waiting += 1
        self.queued_bytes += job.size

    def requeue(self, job: Job) -> None:
        """``job`` goes back to the head of its client's queue (its worker was lost or handed
        it back), and that client's turn is next if it had no other job queued.
        Never refused: max_queue and max_queue_bytes bound new requests (admission.py), and an
        accepted job is never dropped, so these may pass them."""
        self.queue.appendleft(job)
        self.waiting += 1
        self.queued_bytes += job.size

    def unqueued(self, job: Job) -> None:
        """``job`` left the queue's live jobs: dispatched, expired (left in the queue, done),
        or dropped with its client."""
        self.waiting -= 1
        self.queued_bytes -= job.size

    def drop_client(self, client: bytes) -> list[Job]:
        """Take ``client``'s jobs out of the queue (it went away); the live ones, to drop."""
        live = [job for job in self.queue.drop(client) if not job.done]
        for job in live:
            self.unqueued(job)
        return live

    def oldest(self) -> float | None:
        """When the longest-waiting live job arrived; None if none waits. O(queued jobs): the
        autoscaler asks only while jobs wait, when a look at the queue is the least of costs."""
        if not self.waiting:
            return None
        return min((job.received for job in self.queue if not job.done), default=None)

    def timed(self, took: float) -> None:
        """A job took ``took`` seconds on its worker: fold it into :attr:`job_time`."""
        average = self.job_time
        self.job_time = (
            took if average == math.inf else average + (took - average) * JOB_TIME_WEIGHT
        )


@dataclass
class Stats:
    accepted: int = 0
    replied: int = 0
    errors: int = 0
    retried: int = 0
    duplicates: int = 0
    expired: int = 0
    #: Jobs whose client went away: dropped from the queue unrun, or run and not answered.
    abandoned: int = 0


#: The reply cache's bound in bytes: not an option (reply_cache bounds the count).
REPLY_CACHE_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Reliability policy (docs/reliability.md). Zero means "no limit" throughout.

    No defaults of its own: the defaults are the config schema's, through :meth:`from_config`.
    """

    #: Deadline, in seconds, of a job whose request carries none.
    job_timeout: float
    #: Extra time a running job gets past its deadline before its worker is killed.
    kill_grace: float
    #: Retry a job whose worker died even if the request did not ask for it.
    retry_jobs: bool
    #: Workers a job may be given to before it is quarantined with an error.
    max_attempts: int
    #: Live queued jobs per service beyond which new jobs are refused with queue_full.
    max_queue: int
    #: Bytes of live queued jobs per service (each counted as for max_message_size) beyond
    #: which new jobs are refused with queue_full.
    max_queue_bytes: int
    #: Largest request body in bytes (all frames, each charged :data:`FRAME_OVERHEAD` more);
    #: larger ones are refused with too_large.
    max_message_size: int
    #: Most frames in a request, its envelope included; longer ones are refused with too_large.
    #: Server-wide: the shell keeps no more than one frame past it (shell.py).
    max_frames: int
    #: Replies kept for answering a resent request without running it again.
    reply_cache: int
    #: ...and the bytes they may hold in all; a bigger reply is not kept.
    reply_cache_bytes: int
    #: Most jobs a worker may hold at once (it asks for its own in READY; 1 is strict LRU).
    worker_credit: int
    #: A busy worker is sent more jobs (up to its credit) only while the service's jobs take
    #: less than this many seconds on average; until the first reply, and with longer jobs,
    #: dispatch is strict LRU. 0: always (no measuring).
    prefetch_below: float
    #: Jobs one client (a routing id on the frontend) may have queued, running or answered
    #: but not yet taken by its connection, in all services; beyond it that client's new
    #: requests get queue_full. Server-wide: the dispatcher's own limits hold it.
    max_client_inflight: int
    #: Seconds a request for a service no worker has registered waits for one before it is
    #: answered unknown_service; 0: at once. Server-wide (the dispatcher's limits only).
    unknown_service_wait: float

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        """The limits ``config`` sets (a service's own config for its limits; again on HUP)."""
        return cls(
            job_timeout=config.job_timeout,
            kill_grace=config.kill_grace,
            retry_jobs=config.retry_jobs,
            max_attempts=config.max_attempts,
            max_queue=config.max_queue,
            max_queue_bytes=config.max_queue_bytes,
            max_message_size=config.max_message_size,
            max_frames=config.max_frames,
            reply_cache=config.reply_cache,
            reply_cache_bytes=REPLY_CACHE_BYTES,
            worker_credit=config.worker_credit,
            prefetch_below=config.prefetch_below,
            max_client_inflight=config.max_client_inflight,
            unknown_service_wait=config.unknown_service_wait,
        )


def forget(services: dict[bytes, Service], configured: Collection[bytes], service: Service) -> None:
    """Drop ``service`` from ``services`` once it has neither workers nor jobs, unless it is
    ``configured`` (the server runs a pool for it). Foreign workers' services go with their
    last worker, and a request's provisional one with its last job: a request for it then
    waits unknown_service_wait anew, instead of queueing for nobody."""
    if service.workers or service.waiting or service.name in configured:
        return
    if services.get(service.name) is service:  # not a later one of the same name
        del services[service.name]


def take(service: Service, now: float) -> WorkerState | None:
    """The worker the next job of ``service`` goes to, out of its level; None if all are full.

    The lowest level first: an idle worker if any (LRU), else the one holding the fewest jobs
    (LRU among equals), so credit fills workers evenly and an idle one is never passed over. A
    busy worker only while the service's prefetch gate is open (its jobs are short), and never
    one whose running job has already outlasted ``prefetch_below``: the average learns of a long
    job only when it ends, and no job should queue behind it meanwhile.
    """
    if not service.placed:
        return None
    idle = service.idle
    for identity, worker in idle.items():  # the first: the one idle longest
        del idle[identity]
        worker.level = -1
        service.placed -= 1
        return worker
    if not service.prefetch:
        return None
    limit = service.prefetch_below
    for level in service.levels:
        if not level:
            continue
        for identity, worker in level.items():
            if limit and now - worker.jobs[0].started >= limit:
                continue  # busy with a long one
            del level[identity]
            worker.level = -1
            service.placed -= 1
            return worker
    return None


def place(worker: WorkerState) -> None:
    """File ``worker`` (in no level) under the level of its load, if it has credit left."""
    held = len(worker.jobs)
    if held < worker.credit:
        levels = worker.service.levels
        while len(levels) <= held:
            levels.append({})
        levels[held][worker.identity] = worker
        worker.level = held
        worker.service.placed += 1


def unplace(worker: WorkerState) -> None:
    if worker.level >= 0:
        service = worker.service
        del service.levels[worker.level][worker.identity]
        service.placed -= 1
        worker.level = -1


#: What a request is charged per frame on top of its bytes, against max_message_size: the size
#: of a ``zmq_msg_t``, which libzmq holds per frame in a pipe whatever the frame's size, and
#: about what the broker's Python side spends on a small frame too (a ``bytes`` object's 33-byte
#: header, rounded up by the allocator, and its list slot). Without it a request of a million
#: empty frames counted as 0 bytes and cost the broker a few hundred megabytes; with it, 1 MiB
#: of max_message_size admits at most 16,384 frames even where max_frames is off.
FRAME_OVERHEAD: Final = 64


def charged_size(frames: list[Frame]) -> int:
    """What ``frames`` count against max_message_size: their bytes, plus
    :data:`FRAME_OVERHEAD` for each."""
    return frames_size(frames) + FRAME_OVERHEAD * len(frames)


def frames_size(frames: list[Frame]) -> int:
    """Bytes in all of ``frames``. A loop: compiled, it costs a third of sum(map(len, ...))."""
    size = 0
    for frame in frames:
        size += len(frame)
    return size
