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
    )
}


def error_for(status: Status, message: str) -> ServerError:
    """The exception a client raises for an error reply with this status."""
    return ERROR_CLASSES.get(status, ServerError)(message)
