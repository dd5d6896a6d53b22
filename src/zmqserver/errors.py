"""Every exception zmqserver raises, under one root.

Two families matter to users:

* errors about *this* side (bad configuration, a client used after close, a peer that broke the
  protocol), and
* :class:`ServerError` and its subclasses: the server answered a job with an error reply. Each one
  carries the wire status code, so every machine-readable reason on the wire maps to exactly one
  exception class (see :data:`ERROR_CLASSES`).

``Closed`` (you closed it) is kept apart from ``RequestTimeout`` (the server did not answer), as
trio keeps ``ClosedResourceError`` apart from ``BrokenResourceError``: the first is a bug in the
caller, the second is weather.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """The outcome of a job, as one byte on the wire (docs/protocol.md, "Status codes").

    Every job the broker accepts ends with exactly one of these. ``OK`` is the only success.
    """

    OK = 0
    APP_ERROR = 1
    WORKER_LOST = 2
    EXPIRED = 3
    QUEUE_FULL = 4
    TOO_LARGE = 5
    SHUTTING_DOWN = 6
    UNKNOWN_SERVICE = 7
    BAD_REQUEST = 8
    #: The app raised :class:`Retry`: run the job again later (durable jobs are; docs/durable.md).
    RETRY = 9

    @property
    def reason(self) -> str:
        """The lower-case name used in text error replies, e.g. ``app_error``."""
        return self.name.lower()


class ZmqServerError(Exception):
    """Root of every exception raised by zmqserver."""


class ConfigError(ZmqServerError):
    """The configuration is invalid; the message names the option at fault."""


class AppLoadError(ZmqServerError):
    """The ``module:callable`` app spec could not be imported or is not callable."""


class BadReply(TypeError):
    """The app returned something that is not bytes, str or a list of them (worker side).

    Defined here, not in worker.py, because worker.py is compiled (mypyc), which cannot
    subclass most built-in types.
    """


class Retry(ZmqServerError):
    """Raise it in an app to have a durable job run again later: ``raise Retry(after=30)``.

    ``after`` (seconds) overrides the job's exponential back-off for this retry. The job runs
    again up to its ``retries``; then it is dead-lettered with this message as its last error.
    A plain (not durable) request that raises it gets a :class:`RetryLater` error reply.
    """

    def __init__(self, message: str = "", *, after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.after = after

    def reply_text(self) -> str:
        """The error reply's text: ``after=SECONDS; message`` (or just the message)."""
        if self.after is None:
            return self.message
        return f"after={float(self.after)!r}; {self.message}"


def parse_retry(text: str) -> tuple[float | None, str]:
    """The ``after`` and message of a :meth:`Retry.reply_text` (``after`` None if absent)."""
    head, sep, rest = text.partition("; ")
    if head.startswith("after="):
        try:
            return float(head[len("after=") :]), rest if sep else ""
        except ValueError:
            pass
    return None, text


class ProtocolError(ZmqServerError):
    """A message did not follow the wire protocol (docs/protocol.md).

    ``reply`` holds the frames (without the peer's routing id) that the receiver should send back
    to tell the peer what was wrong, or ``None`` when the right answer is silence (the peer's
    framing is too broken to know how it would read a reply).
    """

    def __init__(self, message: str, reply: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class Closed(ZmqServerError):
    """The client was used after :meth:`close`; a bug in the caller, not a network problem."""


class RequestTimeout(ZmqServerError):
    """No reply arrived within ``timeout`` seconds on any of the ``retries`` attempts."""


class ServerError(ZmqServerError):
    """The server answered the job with an error reply instead of a result."""

    status: Status = Status.BAD_REQUEST

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def reason(self) -> str:
        """The machine-readable reason, as it appears on the wire for plain clients."""
        return self.status.reason


class AppError(ServerError):
    """The app raised an exception; ``message`` is ``"ExceptionType: text"``."""

    status = Status.APP_ERROR


class WorkerLost(ServerError):
    """The worker running the job died or vanished before replying."""

    status = Status.WORKER_LOST


class DeadlineExpired(ServerError):
    """The job's deadline passed before it could be answered."""

    status = Status.EXPIRED


class QueueFull(ServerError):
    """The service's queue was full; the job was refused immediately."""

    status = Status.QUEUE_FULL


class MessageTooLarge(ServerError):
    """The request was larger than the server accepts."""

    status = Status.TOO_LARGE


class ShuttingDown(ServerError):
    """The server is stopping and did not run the job."""

    status = Status.SHUTTING_DOWN


class UnknownService(ServerError):
    """No service of that name is registered with the broker."""

    status = Status.UNKNOWN_SERVICE


class BadRequest(ServerError):
    """The server could not make sense of the request."""

    status = Status.BAD_REQUEST


class RetryLater(ServerError):
    """The app raised :class:`Retry`; only durable jobs (``Client.enqueue``) are run again."""

    status = Status.RETRY


class JobFailed(ServerError):
    """A durable job failed for good (dead-lettered); ``message`` is its last error."""

    status = Status.APP_ERROR


class JobPending(ZmqServerError):
    """A durable job has no result yet (``Client.result`` waited as long as it was told)."""


class UnknownTicket(ZmqServerError):
    """The server knows no durable job with that ticket (never stored, closed, or expired)."""


ERROR_CLASSES: dict[Status, type[ServerError]] = {
    cls.status: cls
    for cls in (
        AppError,
        WorkerLost,
        DeadlineExpired,
        QueueFull,
        MessageTooLarge,
        ShuttingDown,
        UnknownService,
        BadRequest,
        RetryLater,
    )
}


def error_for(status: Status, message: str) -> ServerError:
    """The exception a client raises for an error reply with this status."""
    return ERROR_CLASSES.get(status, ServerError)(message)
