"""Durable jobs from the client's side: the TSP requests and what their replies mean.

Rule 1: no sockets, no clock. The blocking and the asyncio client build the same requests here
and read the replies the same way; they differ only in how they send and wait (sync.py, aio.py).
The frames are durable/tsp.py's (RFC 9 and our options frame, docs/durable.md).

The ticket is chosen here, by the client, and sent in the options frame: a request resent after
a timeout (Lazy Pirate) then stores the job once, even across a restart of the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..durable.tsp import (
    CLOSE,
    DEFAULT_BACKOFF,
    DEFAULT_RETRIES,
    FAILED,
    MAX_RETRIES,
    MAX_WAIT,
    OK,
    PENDING,
    REPLY,
    REQUEST,
    STATUS,
    UNKNOWN,
    JobOptions,
    encode_reply_request,
    encode_request,
    new_ticket,
    status_code,
)
from ..errors import BadRequest, JobFailed, JobPending, UnknownTicket, ZmqServerError
from .state import Payload, ReplyBody, encode_payload, unwrap

__all__ = [
    "CLOSE",
    "REPLY",
    "REQUEST",
    "STATUS",
    "JobStatus",
    "ResultWait",
    "enqueue_request",
    "poll_interval",
    "read_result",
    "read_status",
]

#: How often :meth:`Client.result` asks again while a job is pending, when the server did not
#: hold the request (a server without long polls, or too many held): first after this many
#: seconds, then twice as long each time, up to :data:`POLL_MAX`.
POLL_FIRST: Final = 0.02
POLL_MAX: Final = 0.5
#: A wait shorter than this is not worth a long poll: one plain request.
HOLD_MIN: Final = 0.01


@dataclass(frozen=True, slots=True)
class JobStatus:
    """Where a durable job is (``Client.status``).

    ``state`` is ``pending``, ``scheduled``, ``running``, ``done`` or ``dead``; ``eta`` the Unix
    time of its next (or last) start; ``error`` its last error (a retried or dead job's)."""

    ticket: str
    state: str
    attempts: int
    retries: int
    eta: float
    error: str


def enqueue_request(
    payload: Payload,
    service: str | bytes,
    *,
    delay: float | None = None,
    eta: float | None = None,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
) -> tuple[str, list[bytes]]:
    """A new ticket and the body of the ``titanic.request`` that stores the job under it."""
    if retries < 0 or retries > MAX_RETRIES:
        raise ValueError(f"retries must be 0-{MAX_RETRIES}, not {retries!r}")
    for option, value in (("delay", delay), ("eta", eta), ("backoff", backoff)):
        if value is not None and not value >= 0:
            raise ValueError(f"{option} must be a number >= 0, not {value!r}")
    name = service.encode() if isinstance(service, str) else bytes(service)
    ticket = new_ticket()
    options = JobOptions(ticket, delay or 0.0, eta, retries, backoff)
    return ticket, encode_request(name, encode_payload(payload), options)


def read_ticket(reply: list[bytes], ticket: str) -> str:
    """The ticket a ``titanic.request`` reply confirms; an error if it was refused."""
    _check_status(reply, OK)
    return reply[1].decode("ascii") if len(reply) > 1 else ticket


def read_result(reply: list[bytes], ticket: str) -> tuple[bool, ReplyBody]:
    """A ``titanic.reply`` reply: (True, the job's reply), or (False, b"") while pending.

    Raises :class:`~zmqserver.errors.JobFailed` for a dead-lettered job (with its last error),
    :class:`~zmqserver.errors.UnknownTicket` for a ticket the server does not know.
    """
    code = status_code(reply[0]) if reply else b""
    if code == PENDING:
        return False, b""
    if code == FAILED:
        message = b"".join(reply[1:]).decode("utf-8", "replace")
        raise JobFailed(f"durable job {ticket} failed: {message}")
    _check_status(reply, OK, ticket)
    return True, unwrap(list(reply[1:]))


def read_status(reply: list[bytes], ticket: str) -> JobStatus:
    """A ``titanic.status`` reply."""
    _check_status(reply, OK, ticket)
    if len(reply) < 6:
        raise ZmqServerError(f"malformed titanic.status reply: {reply!r}")
    state, attempts, retries, eta, error = (
        frame.decode("utf-8", "replace") for frame in reply[1:6]
    )
    return JobStatus(ticket, state, int(attempts), int(retries), float(eta), error)


def poll_interval(previous: float | None) -> float:
    """How long to wait before asking for a pending job's result again."""
    return POLL_FIRST if previous is None else min(previous * 2, POLL_MAX)


def _check_status(reply: list[bytes], expected: bytes, ticket: str = "") -> None:
    code = status_code(reply[0]) if reply else b""
    if code == expected:
        return
    detail = b"".join(reply[1:]).decode("utf-8", "replace")
    if code == UNKNOWN and not detail:
        raise UnknownTicket(f"no durable job with ticket {ticket}")
    if code == UNKNOWN:
        raise BadRequest(detail)
    raise ZmqServerError(f"unexpected TSP reply {reply!r}")


class ResultWait:
    """The steps of ``result(ticket, wait=...)``, without sockets or sleeping (shared by the
    blocking and the asyncio client).

    Each request asks the server to hold it (a long poll, ``wait`` in the options frame) for
    what is left of the caller's wait, but well inside the client's own ``timeout`` (so the
    client never gives up on, and resends, a request the server is holding). A server answers
    ``300`` at the end of the hold: ask again at once. An answer that came back much sooner
    means the server did not hold it: wait as a poller would before asking again. A server that
    refuses the options frame (an older one) is asked without it from then on.
    """

    def __init__(self, ticket: str, wait: float, timeout: float, now: float, long_poll: bool):
        self.ticket = ticket
        self.give_up = now + wait
        self.timeout = timeout
        #: False once the server refused a long poll.
        self.long_poll = long_poll
        self._hold = 0.0
        self._asked = now
        self._interval: float | None = None

    def request(self, now: float) -> list[bytes]:
        """The ``titanic.reply`` body to send now."""
        left = self.give_up - now
        hold = 0.0
        if self.long_poll and left >= HOLD_MIN:
            hold = min(left, max(self.timeout - 1.0, self.timeout / 2), MAX_WAIT)
        self._hold, self._asked = hold, now
        return encode_reply_request(self.ticket, hold)

    def reply(self, frames: list[bytes], now: float) -> tuple[bool, ReplyBody, float]:
        """Read the answer: (True, the job's reply, 0), or (False, b"", seconds to wait before
        the next :meth:`request`). Raises as :func:`read_result` does, and
        :class:`~zmqserver.errors.JobPending` once the caller's wait is over."""
        try:
            done, body = read_result(frames, self.ticket)
        except BadRequest:
            if self._hold <= 0:
                raise
            self.long_poll = False  # a server that does not know the options frame
            return False, b"", 0.0
        if done:
            return True, body, 0.0
        left = self.give_up - now
        if left <= 0:
            raise JobPending(f"durable job {self.ticket} has no result yet")
        if self._hold > 0 and now - self._asked >= self._hold / 2:
            self._interval = None
            return False, b"", 0.0  # held by the server until its wait ended: ask again
        self._interval = poll_interval(self._interval)
        return False, b"", min(self._interval, left)
