"""The Titanic Service Protocol (ZeroMQ RFC 9) as frames, and our options on top of it.

Rule 1: no sockets, no store, no clock. Both sides use this module: the server's component to
read requests and write replies, the clients to write requests and read replies.

RFC 9 services (each an ordinary Majordomo service, reached by any MDP client):

* ``titanic.request`` ``[service, body...]`` -> ``["200", uuid]`` once the job is stored.
* ``titanic.reply`` ``[uuid]`` -> ``["200", reply...]`` when done, ``["300"]`` while pending,
  ``["400"]`` for a ticket the server does not know, ``["500", reason, message]`` for a job that
  failed for good (dead-lettered): RFC 9's "200" would claim the service succeeded.
* ``titanic.close`` ``[uuid]`` -> ``["200"]``; the job and its result are forgotten.

Our extensions, which RFC 9 clients never send and so never see:

* An *options frame* in front of a ``titanic.request``: a frame that starts with a NUL byte, then
  ``key=value`` pairs joined by ``&`` (ASCII): ``id`` (the ticket, 32 hex digits, chosen by the
  client so that a resend stores the job once), ``delay`` (seconds), ``eta`` (Unix time),
  ``retries`` and ``backoff`` (seconds). An RFC 9 service name is a printable string, so its first
  byte is never NUL, and every RFC 9 body keeps its meaning.
* ``titanic.status`` ``[uuid]`` -> ``["200", state, attempts, retries, eta, error]`` or
  ``["400"]``.
* An options frame in front of a ``titanic.reply``'s ticket, with one key, ``wait`` (seconds, at
  most :data:`MAX_WAIT`): a long poll. The server answers when the job's result is committed, or
  with ``["300"]`` when the wait is over; without the frame it answers at once, as RFC 9 says.

Status frames are three digits; RFC 9 allows text after a space, which clients must not read
(the guide's client compares the whole frame, so we send the bare code).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Final

PREFIX: Final = b"titanic."
REQUEST: Final = b"titanic.request"
REPLY: Final = b"titanic.reply"
CLOSE: Final = b"titanic.close"
STATUS: Final = b"titanic.status"

OK: Final = b"200"
PENDING: Final = b"300"
UNKNOWN: Final = b"400"
FAILED: Final = b"500"

#: What starts an options frame (never the first byte of an RFC 9 service name).
OPTIONS_MARK: Final = b"\x00"

#: Retries and back-off of a job whose request named none (an RFC 9 client's).
DEFAULT_RETRIES: Final = 3
DEFAULT_BACKOFF: Final = 1.0
#: The longest wait between two attempts: back-off doubles up to this.
MAX_BACKOFF: Final = 3600.0
#: The most retries a request may ask for (attempts are counted in the store).
MAX_RETRIES: Final = 1000
#: The longest a ``titanic.reply`` may ask the server to hold it (``wait``), in seconds.
MAX_WAIT: Final = 60.0


class TspError(ValueError):
    """A TSP request the server cannot take; the message says why (sent with ``400``)."""


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How a durable job runs: when, and how often it is tried again."""

    #: The ticket the client chose (32 hex digits), or None for one the server makes.
    ticket: str | None = None
    #: Seconds from now before the first attempt (0: at once).
    delay: float = 0.0
    #: Unix time before which the job must not start (None: no such bound).
    eta: float | None = None
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF

    def start_at(self, now: float) -> float:
        """The wall-clock time of the first attempt, for a request stored at ``now``."""
        start = now + self.delay
        return start if self.eta is None or self.eta < start else self.eta


def new_ticket() -> str:
    """A fresh ticket: 32 lower-case hex digits, as RFC 9 wants a UUID written."""
    return uuid.uuid4().hex


def check_ticket(frame: bytes) -> str:
    """The ticket in ``frame``, or :class:`TspError` if it is not 32 hex digits."""
    try:
        text = frame.decode("ascii")
        int(text, 16)
    except ValueError:
        raise TspError("a ticket is 32 hexadecimal digits") from None
    if len(text) != 32 or not text.isalnum():
        raise TspError("a ticket is 32 hexadecimal digits")
    return text.lower()


def encode_options(options: JobOptions) -> bytes:
    """The options frame for ``options`` (only the fields that differ from the defaults)."""
    pairs = []
    if options.ticket is not None:
        pairs.append(f"id={check_ticket(options.ticket.encode())}")
    if options.delay:
        pairs.append(f"delay={options.delay!r}")
    if options.eta is not None:
        pairs.append(f"eta={options.eta!r}")
    if options.retries != DEFAULT_RETRIES:
        pairs.append(f"retries={options.retries}")
    if options.backoff != DEFAULT_BACKOFF:
        pairs.append(f"backoff={options.backoff!r}")
    return OPTIONS_MARK + "&".join(pairs).encode("ascii")


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TspError(f"option {key} is not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise TspError(f"option {key} must be a finite number >= 0, not {text!r}")
    return value


def decode_options(frame: bytes) -> JobOptions:
    """Read an options frame (its leading NUL included); :class:`TspError` if it is malformed."""
    try:
        text = frame[len(OPTIONS_MARK) :].decode("ascii")
    except UnicodeDecodeError:
        raise TspError("the options frame is not ASCII") from None
    fields: dict[str, object] = {}
    for pair in filter(None, text.split("&")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise TspError(f"option {pair!r} is not key=value")
        if key == "id":
            fields["ticket"] = check_ticket(value.encode())
        elif key in ("delay", "eta", "backoff"):
            fields[key] = _number(key, value)
        elif key == "retries":
            if not value.isdigit() or int(value) > MAX_RETRIES:
                raise TspError(f"option retries must be an integer 0-{MAX_RETRIES}: {value!r}")
            fields["retries"] = int(value)
        else:
            raise TspError(f"unknown option {key!r}")
    return JobOptions(**fields)  # type: ignore[arg-type]


def parse_request(body: list[bytes]) -> tuple[JobOptions, bytes, list[bytes]]:
    """A ``titanic.request`` body: (options, service, the job's body). An empty service name
    means the server's default service, as it does for a request sent directly."""
    options = JobOptions()
    if body and body[0][:1] == OPTIONS_MARK:
        options = decode_options(body[0])
        body = body[1:]
    if not body:
        raise TspError("titanic.request needs a service name frame")
    service = body[0]
    if service.startswith(PREFIX) or service.startswith(b"mmi."):
        raise TspError(f"service {service!r} cannot be a durable job's service")
    if len(body) < 2:
        raise TspError("titanic.request needs a body after the service name")
    return options, service, body[1:]


def parse_reply(body: list[bytes]) -> tuple[float, str]:
    """A ``titanic.reply`` (or ``close``, ``status``) body: (seconds to wait, at most
    :data:`MAX_WAIT`; 0 without an options frame, ticket)."""
    wait = 0.0
    if len(body) == 2 and body[0][:1] == OPTIONS_MARK:
        try:
            text = body[0][len(OPTIONS_MARK) :].decode("ascii")
        except UnicodeDecodeError:
            raise TspError("the options frame is not ASCII") from None
        for pair in filter(None, text.split("&")):
            key, sep, value = pair.partition("=")
            if key != "wait" or not sep:
                raise TspError(f"unknown option {pair!r} (titanic.reply takes wait=SECONDS)")
            wait = min(_number("wait", value), MAX_WAIT)
        body = body[1:]
    if len(body) != 1:
        raise TspError("takes one frame, the ticket (after an optional options frame)")
    return wait, check_ticket(body[0])


def encode_reply_request(ticket: str, wait: float = 0.0) -> list[bytes]:
    """The body of a ``titanic.reply`` (the client's side); ``wait`` > 0: a long poll."""
    if wait <= 0:
        return [ticket.encode()]
    return [OPTIONS_MARK + f"wait={min(wait, MAX_WAIT)!r}".encode(), ticket.encode()]


def encode_request(service: bytes, body: list[bytes], options: JobOptions | None) -> list[bytes]:
    """The body of a ``titanic.request`` (the client's side)."""
    if options is None or options == JobOptions():
        return [service, *body]
    return [encode_options(options), service, *body]


def status_code(frame: bytes) -> bytes:
    """The three digits of a status frame (RFC 9 lets text follow them after a space)."""
    return bytes(frame[:3])
