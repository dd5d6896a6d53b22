"""One request's retry logic, with no socket and no clock, shared by every client driver.

Rule 1: nothing here touches a socket, a clock or an event loop, and nothing imports zmq.
:class:`RequestState` is handed ``now`` and the frames that arrived, and it answers with frames to
send, a deadline, a reply, or an exception. Everything that decides *whether* to retry, *which*
reply counts and *what* an error reply means lives here, so the blocking client (sync.py) and the
asyncio client (aio.py) differ only in how they wait (STYLE.md, "Policy vs driver"); circus shows
what happens otherwise: two copies of the retry loop that drift apart. The checks of a client's
arguments that are policy (:func:`check_policy`, :func:`encode_service`) live here for the same
reason; options.py applies them for both drivers.

The reliability pattern is the ZeroMQ guide's Lazy Pirate (chapter 4): send, wait at most
``timeout`` seconds, and if nothing came back, throw the socket away and resend on a fresh one,
``retries`` times in all. The socket is thrown away, not reused, because a ZeroMQ socket may still
hold the unanswered request in its queue and would deliver it to a server that comes back later,
running the job once more for nobody.

A send that would block is an attempt that failed, never a wait
(:meth:`RequestState.on_send_blocked`). libzmq queues at most ``SNDHWM`` messages (1,000) for a
server that is not there, and a blocking send past that waits until the server comes back, which
may be never: no deadline would fire, and ``timeout`` would bound nothing. So the drivers send
without blocking and report ``EAGAIN`` here.

On the wire the client speaks MDP/0.2 (ZeroMQ RFC 18) over a DEALER socket with zmqserver's
request header first in the body (protocol/, docs/protocol.md). The header carries a request id,
which is what lets a reply be matched to its request: every attempt of one request reuses its id
(the server may then recognise a retry), and each new request takes the next id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import RequestTimeout, Status, error_for
from ..protocol import (
    MAX_SERVICE_NAME,
    ClientReply,
    encode_client_request,
    encode_request_header,
    parse_client_reply,
)
from .ids import RequestIds

__all__ = [
    "Payload",
    "ReplyBody",
    "RequestIds",
    "RequestState",
    "Response",
    "check_policy",
    "encode_payload",
    "encode_service",
    "unwrap",
]

#: What a caller may send: one frame (bytes, or str sent as UTF-8), or a sequence of frames.
Payload = bytes | str | Sequence[bytes | str]

#: What a caller gets back: ``bytes`` for a one-frame body, ``list[bytes]`` for any other count.
ReplyBody = bytes | list[bytes]

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


# -- helpers shared by every driver ---------------------------------------------------------------


def encode_payload(payload: Payload) -> list[bytes]:
    """The request body frames for ``payload``; ``str`` frames are encoded as UTF-8.

    ``bytes`` and ``str`` are checked first because both are themselves sequences: without that,
    ``"abc"`` would become three one-letter frames. An empty sequence is refused because RFC 18
    gives a request one or more body frames.
    """
    if isinstance(payload, bytes):  # the common case first
        return [bytes(payload)]
    if isinstance(payload, str):
        return [payload.encode()]
    if isinstance(payload, (bytearray, memoryview)):
        return [bytes(payload)]
    frames: list[bytes] = []
    for frame in payload:
        if isinstance(frame, str):
            frames.append(frame.encode())
        elif isinstance(frame, (bytes, bytearray, memoryview)):
            frames.append(bytes(frame))
        else:
            raise TypeError(f"payload frames must be bytes or str, not {type(frame).__name__}")
    if not frames:
        raise ValueError("payload needs at least one frame")
    return frames


def encode_service(service: str | bytes) -> bytes:
    """The service frame for ``service``; ``b""`` asks for the server's default service."""
    name = service.encode() if isinstance(service, str) else bytes(service)
    if len(name) > MAX_SERVICE_NAME:
        raise ValueError(f"service name is {len(name)} bytes long, at most {MAX_SERVICE_NAME}")
    return name


def unwrap(body: list[bytes]) -> ReplyBody:
    """``bytes`` for a one-frame body (the common case, and what a caller expects from a one-frame
    request), otherwise the list of frames, including the empty list for an empty body."""
    return body[0] if len(body) == 1 else body


def check_policy(timeout: float, retries: int) -> None:
    """Refuse a ``timeout`` or ``retries`` no request could be made with (``ValueError``)."""
    # "not timeout > 0" also refuses NaN, which would make every comparison with a deadline false.
    if not timeout > 0 or math.isinf(timeout):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if retries < 1:
        raise ValueError(f"retries must be at least 1 (the first attempt counts), not {retries!r}")


# -- the sans-IO core -----------------------------------------------------------------------------


@dataclass(init=False)
class Response:
    """A reply (or one part of a streamed reply) that belongs to the current request.

    Read-only by convention. Not a frozen (or ``slots=True``) dataclass: mypyc compiles those as
    ordinary Python classes with a generated ``__init__`` (0.4 us a reply, where this costs
    0.1); the ``__slots__`` and ``__init__`` spelled out compile natively (protocol/frames.py).
    """

    __slots__ = ("body", "final")
    body: list[bytes]
    #: False for an MDP/0.2 PARTIAL (more follows), True for the FINAL that ends the request.
    final: bool

    def __init__(self, body: list[bytes], final: bool) -> None:
        self.body = body
        self.final = final


class RequestState:
    """One request's Lazy Pirate state machine: attempts, deadline, and which replies count.

    Drive it like this (``now`` is a monotonic clock in seconds; only the driver reads it)::

        send(state.start(now))
        while not state.done:
            wait for frames until state.deadline
            if frames arrived: response = state.on_frames(frames, now)  # None: not ours, ignore
            else:              send(state.on_timeout(now))             # on a fresh socket

    ``retries`` is the number of attempts in all (the guide's ``REQUEST_RETRIES``): with 3, the
    request is sent at most three times and :class:`~zmqserver.errors.RequestTimeout` is raised by
    the third :meth:`on_timeout`.

    Error replies raise the :class:`~zmqserver.errors.ServerError` subclass for their status
    (:class:`~zmqserver.errors.AppError` when the app raised), from :meth:`on_reply`.
    """

    def __init__(
        self,
        body: Sequence[bytes],
        *,
        request_id: int,
        service: bytes = b"",
        timeout: float = 5.0,
        retries: int = 3,
        flags: int = 0,
        peer: str = "the server",
    ) -> None:
        """``peer`` names the other end in error messages (the client passes its endpoint)."""
        check_policy(timeout, retries)
        self.request_id = request_id & _U64
        self.service = service
        self.timeout = timeout
        self.retries = retries
        self.peer = peer
        self._flags = flags
        # Every attempt is the same request, id included; only the header's timeout changes
        # (see _send), so the frames are built once and the header frame is swapped.
        self._frames = encode_client_request(
            service, list(body), request_id=self.request_id, timeout_ms=1, flags=flags
        )
        self._attempts = 0
        self._deadline: float | None = None
        self._partials = 0
        self._unsent = 0
        self._done = False
        self._complete = False

    # -- what a driver reads --

    @property
    def frames(self) -> list[bytes]:
        """The request as last sent (a copy); attempts differ only in the header's timeout."""
        return list(self._frames)

    @property
    def attempts(self) -> int:
        """How many times the request has been sent so far."""
        return self._attempts

    @property
    def partials(self) -> int:
        """How many PARTIAL replies have arrived for this request."""
        return self._partials

    @property
    def unsent(self) -> int:
        """How many attempts could not be sent (:meth:`on_send_blocked`)."""
        return self._unsent

    @property
    def deadline(self) -> float | None:
        """When :meth:`on_timeout` is due; ``None`` before :meth:`start` and once done."""
        return None if self._done else self._deadline

    @property
    def done(self) -> bool:
        """True once the request ended: a FINAL or error reply arrived, or it timed out."""
        return self._done

    @property
    def complete(self) -> bool:
        """True if the request ended with its FINAL reply (success or error).

        A driver uses this to decide whether its socket is still fit for the next request: after
        anything else (timeout, error part-way through a stream, an abandoned stream) more replies
        to this request may still be on their way, so the socket should be replaced.
        """
        return self._complete

    def expired(self, now: float) -> bool:
        """True if the current attempt's deadline has passed."""
        return self._deadline is not None and not self._done and now >= self._deadline

    # -- events --

    def start(self, now: float) -> list[bytes]:
        """The first attempt: the frames to send now."""
        if self._attempts:
            raise RuntimeError("this request was already started")
        return self._send(now)

    def on_frames(self, frames: list[bytes], now: float) -> Response | None:
        """Decode frames received on the client's socket and hand them to :meth:`on_reply`.

        Raises :class:`~zmqserver.errors.ProtocolError` if they are not an MDP/0.2 reply: the peer
        is not a zmqserver (or Majordomo) broker, and waiting for a better answer would only turn a
        clear error into a timeout.
        """
        return self.on_reply(parse_client_reply(frames), now)

    def on_reply(self, reply: ClientReply, now: float) -> Response | None:
        """Take a reply; return it if it answers this request, ``None`` if it must be ignored.

        Ignored: replies carrying another request id (late answers to an earlier request that was
        given up or abandoned on the same socket) and anything after the request ended.

        A reply *without* a request id is taken as ours. A zmqserver broker echoes the id on every
        reply to a request that carried one, so an id-less reply comes from a broker that could not
        read our header (it answers ``BAD_REQUEST`` with a bare status header) or from a plain
        MDP/0.2 broker. Ignoring it would turn that answer into silence and then a timeout, which is
        exactly what the protocol promises never to do; the driver replaces its socket after every
        request that did not end cleanly, so a stale id-less reply cannot reach a later request.

        A PARTIAL pushes the deadline back: a stream that keeps talking is alive, and ``timeout``
        bounds the silence between messages, not the length of the whole stream.
        """
        if self._done or not self._attempts:
            return None
        if reply.request_id is not None and reply.request_id != self.request_id:
            return None
        if reply.status is not Status.OK:
            # An error ends the request even if the server marked it PARTIAL (no conforming server
            # does); only a FINAL proves nothing more is coming for it.
            self._done = True
            self._complete = reply.final
            message = b"".join(reply.body).decode("utf-8", "replace") or reply.status.reason
            raise error_for(reply.status, message)
        if not reply.final:
            self._partials += 1
            self._deadline = now + self.timeout
            return Response(list(reply.body), final=False)
        self._done = True
        self._complete = True
        return Response(list(reply.body), final=True)

    def on_send_blocked(self, now: float) -> None:
        """The driver could not queue the current attempt without waiting (``EAGAIN``).

        The attempt counts as sent and lost: its deadline stands, and when it passes
        :meth:`on_timeout` resends or gives up as for any attempt that got no reply. Two other
        answers were rejected. Waiting for the send is what made a client hang forever on a server
        that is down (issue 18). Moving on to the next attempt at once would find the queue still
        full and spend every attempt in a moment, so ``RequestTimeout`` would come sooner than
        ``timeout`` x ``retries``, the one bound a caller has to know, and without giving a server
        that is starting up the time to connect and drain the queue.

        A full queue means the server is not reading: down, unreachable, or far behind.
        """
        if self._done or not self._attempts:
            raise RuntimeError("on_send_blocked called on a request that is not waiting")
        self._unsent += 1

    def on_timeout(self, now: float) -> list[bytes]:
        """The deadline passed with no reply: the frames to resend, or raise ``RequestTimeout``.

        The caller must resend on a *new* socket (see the module docstring). Once any PARTIAL has
        arrived the request is not retried: the job is known to be running, a resend would run it
        a second time, and a caller that has already consumed part of the first stream could not
        be handed a second one without duplicating what it has seen.
        """
        if self._done or not self._attempts:
            raise RuntimeError("on_timeout called on a request that is not waiting for a reply")
        if self._partials:
            self._done = True
            raise RequestTimeout(
                f"reply stream from {self.peer} stalled: nothing for {self.timeout:g} s after "
                f"{self._partials} partial {_plural(self._partials, 'reply', 'replies')}"
            )
        if self._attempts >= self.retries:
            self._done = True
            unsent = ""
            if self._unsent:
                unsent = (
                    f"; {self._unsent} could not be sent: the queue to the server was full "
                    "(is it running?)"
                )
            raise RequestTimeout(
                f"no reply from {self.peer} after {self._attempts} "
                f"{_plural(self._attempts, 'attempt', 'attempts')} "
                f"with a timeout of {self.timeout:g} s each{unsent}"
            )
        return self._send(now)

    def _send(self, now: float) -> list[bytes]:
        self._attempts += 1
        self._deadline = now + self.timeout
        # The header's timeout is the job's deadline at the server: all the patience this client
        # has left (this attempt and the ones after it), less a margin so that the server's
        # "expired" answer arrives while we still wait. Advertising only one attempt's timeout
        # would let the server expire a queued job that a resend was about to claim, and would
        # leave its "expired" answer for a client that had already given up. 0 would mean
        # "server default", hence at least 1 ms; u32 milliseconds cap it at about 49 days.
        patience = self.timeout * (self.retries - self._attempts + 1)
        margin = min(0.1 * self.timeout, 0.25)
        timeout_ms = min(max(math.floor((patience - margin) * 1000), 1), _U32)
        self._frames[3] = encode_request_header(self.request_id, timeout_ms, self._flags)
        return list(self._frames)


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many
