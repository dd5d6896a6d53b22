"""What happened in the broker that an operator should hear of: the dispatcher's events.

Rule 1: plain data, no logger. The dispatcher is sans-IO, so it does not log: it appends one of
these to :attr:`~.dispatch.Dispatcher.events` and goes on. The shell (shell.py) drains the list
after every round, logs each event at its :attr:`Event.level` with the wording of
:meth:`Event.message`, and throttles repeats (:class:`~.shell.EventLog`). Tests read the list
instead of scraping log output.

Not compiled: events are rare (a worker coming or going, a fault), and frozen dataclasses with a
shared base are plain Python's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

#: Levels, as the logging module numbers them (this module imports no logging).
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40


class Event:
    """Base of the events. Each says how loud it is, what to log, and whom it is about."""

    __slots__ = ()

    level: ClassVar[int] = WARNING

    def message(self) -> str:
        raise NotImplementedError

    def subject(self) -> bytes | None:
        """The peer it is about (a routing id): the shell logs repeats of one kind about one
        subject once per interval, with a count. None: never throttled (a job's own events)."""
        return None

    def repeated(self, count: int, seconds: float, total: int) -> str:
        """The line that stands for ``count`` more like this one, in the last ``seconds``."""
        return f"{count} more in the last {seconds:.0f}s like: {self.message()}"


# -- clients --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BadRequest(Event):
    """A client's request could not be parsed (it got an error reply if its framing allowed).

    Throttled across clients, not per client: garbage sent from many sockets (or one that
    reconnects under a new routing id for each message) is one flood, and must cost the log one
    line per interval, not one per client. The first is logged as is; the count line names the
    last one, so an operator sees a real example of each interval's garbage.
    """

    client: bytes
    error: str

    def message(self) -> str:
        return f"bad request from client {self.client.hex()}: {self.error}"

    def subject(self) -> bytes | None:
        return b""  # all clients together

    def repeated(self, count: int, seconds: float, total: int) -> str:
        return (
            f"{count} more bad requests in the last {seconds:.0f}s ({total} in all); "
            f"the last: {self.message()}"
        )


@dataclass(frozen=True, slots=True)
class ReplyDropped(Event):
    """A reply could not be sent: its client is gone (the shell's own event, not the core's)."""

    level: ClassVar[int] = INFO

    client: bytes
    reason: str

    def message(self) -> str:
        return f"reply to client {self.client.hex()} dropped: {self.reason}"

    def subject(self) -> bytes | None:
        return b""  # all clients together: a crowd that times out is one flood

    def repeated(self, count: int, seconds: float, total: int) -> str:
        return (
            f"{count} more replies to vanished clients dropped in the last {seconds:.0f}s "
            f"({total} in all)"
        )


# -- workers --------------------------------------------------------------------------------------


class WorkerEvent(Event):
    """An event about one worker (a routing id): repeats about it are throttled together."""

    __slots__ = ()

    worker: bytes  # a field of each subclass

    def subject(self) -> bytes | None:
        return self.worker


@dataclass(frozen=True, slots=True)
class WorkerReady(WorkerEvent):
    level: ClassVar[int] = DEBUG

    worker: bytes
    service: bytes
    credit: int
    compact: bool

    def message(self) -> str:
        framing = ", compact framing" if self.compact else ""
        return (
            f"worker {self.worker!r} ready for service {self.service!r}, "
            f"credit {self.credit}{framing}"
        )


@dataclass(frozen=True, slots=True)
class WorkerGone(WorkerEvent):
    """The shell reported a worker dead (its process exited, or a send to it failed)."""

    level: ClassVar[int] = DEBUG

    worker: bytes
    reason: str

    def message(self) -> str:
        return f"worker {self.worker!r} gone: {self.reason}"


@dataclass(frozen=True, slots=True)
class WorkerUnreachable(WorkerEvent):
    """A send to a worker holding several jobs failed: it gets nothing more until it is gone."""

    level: ClassVar[int] = DEBUG

    worker: bytes
    reason: str

    def message(self) -> str:
        return (
            f"worker {self.worker!r} unreachable ({self.reason}); holding its jobs until it is gone"
        )


@dataclass(frozen=True, slots=True)
class WorkerExpired(WorkerEvent):
    """A worker was silent past its heartbeat expiry: it is killed, its jobs rerouted."""

    worker: bytes
    missed: int

    def message(self) -> str:
        return f"worker {self.worker!r} missed {self.missed} heartbeats; dropping it"


@dataclass(frozen=True, slots=True)
class WorkerSilentButRunning(WorkerEvent):
    """A busy local worker was silent past its expiry, but its process is alive and running (an
    app that holds the GIL stops the heartbeat thread): it is left to the job's deadline."""

    level: ClassVar[int] = INFO
    worker: bytes
    silent: float  # seconds since its last message

    def message(self) -> str:
        return (
            f"worker {self.worker!r} silent for {self.silent:.1f}s while busy, but its process "
            "is running; left to the job's deadline"
        )


@dataclass(frozen=True, slots=True)
class BrokerStalled(Event):
    """The broker itself did not run for a while (SIGSTOP, a paused host): the heartbeat expiry
    of every worker moved by the time lost, so what they sent meanwhile is read first."""

    lost: float  # seconds past the longest wait the dispatcher allows
    workers: int

    def message(self) -> str:
        return (
            f"the broker did not run for {self.lost:.1f}s more than it may sleep; "
            f"the heartbeat expiry of {self.workers} workers moved by as much"
        )

    def subject(self) -> bytes | None:
        return b""


@dataclass(frozen=True, slots=True)
class WorkerOverran(WorkerEvent):
    """A job ran past its deadline and the kill grace: its worker is killed."""

    job: int
    overrun: float  # seconds past the deadline
    worker: bytes

    def message(self) -> str:
        return (
            f"job {self.job} ran {self.overrun:.1f}s past its deadline on worker "
            f"{self.worker!r}; killing the worker"
        )


@dataclass(frozen=True, slots=True)
class WorkerBrokeProtocol(WorkerEvent):
    """A worker sent what does not parse: it is told to DISCONNECT."""

    worker: bytes
    error: str

    def message(self) -> str:
        return f"worker {self.worker!r} broke the protocol ({self.error}); disconnecting it"


@dataclass(frozen=True, slots=True)
class WorkerMisbehaved(WorkerEvent):
    """A registered worker did what the protocol forbids (READY twice, a reply to a job it does
    not hold, compact framing it did not ask for): it is told to DISCONNECT."""

    worker: bytes
    what: str

    def message(self) -> str:
        return f"worker {self.worker!r} {self.what}; disconnecting it"


@dataclass(frozen=True, slots=True)
class UnregisteredWorker(WorkerEvent):
    """A peer that never said READY sent a worker message: it is told to DISCONNECT."""

    level: ClassVar[int] = INFO

    worker: bytes

    def message(self) -> str:
        return f"message from unregistered worker {self.worker!r}; disconnecting it"


@dataclass(frozen=True, slots=True)
class ReservedService(WorkerEvent):
    """A worker tried to offer an ``mmi.*`` service, which the broker answers itself."""

    worker: bytes
    service: bytes

    def message(self) -> str:
        return f"worker {self.worker!r} tried to register reserved service {self.service!r}"


# -- jobs -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobRetried(Event):
    """A job's worker was lost and the job may run again: it is back at the head of its queue."""

    job: int
    reason: str
    attempt: int  # the attempt it goes to now

    def message(self) -> str:
        return f"job {self.job}: worker lost ({self.reason}); retrying (attempt {self.attempt})"


@dataclass(frozen=True, slots=True)
class JobQuarantined(Event):
    """A job lost ``max_attempts`` workers in a row: it is answered worker_lost, not retried."""

    level: ClassVar[int] = ERROR

    job: int
    attempts: int

    def message(self) -> str:
        return f"job {self.job} lost {self.attempts} workers; quarantined"
