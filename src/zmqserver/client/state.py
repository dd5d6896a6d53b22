"""The client library: one request's retry logic (sans-IO) and a blocking Lazy Pirate driver.

Rule 1: :class:`RequestState` never touches a socket or a clock. It is handed ``now`` and the
frames that arrived, and it answers with frames to send, a deadline, a reply, or an exception.
Everything that decides *whether* to retry, *which* reply counts and *what* an error reply means
lives there, so the blocking :class:`Client` here and the asyncio client that will follow differ
only in how they wait (STYLE.md, "Policy vs driver"); circus shows what happens otherwise: two
copies of the retry loop that drift apart.

The reliability pattern is the ZeroMQ guide's Lazy Pirate (chapter 4): send, wait at most
``timeout`` seconds, and if nothing came back, throw the socket away and resend on a fresh one,
``retries`` times in all. The socket is thrown away, not reused, because a ZeroMQ socket may still
hold the unanswered request in its queue and would deliver it to a server that comes back later,
running the job once more for nobody.

On the wire the client speaks MDP/0.2 (ZeroMQ RFC 18) over a DEALER socket with zmqserver's
request header first in the body (protocol.py, docs/protocol.md). The header carries a request id,
which is what lets a reply be matched to its request: every attempt of one request reuses its id
(the server may then recognise a retry), and each new request takes the next id.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import zmq

from ..errors import Closed, RequestTimeout, Status, error_for

if TYPE_CHECKING:
    from ..pipeline import Event, Pipeline
from ..protocol import (
    FLAG_RETRYABLE,
    MAX_SERVICE_NAME,
    ClientReply,
    encode_client_request,
    encode_request_header,
    parse_client_reply,
)
from ..security import apply_client, client_credentials

__all__ = [
    "Client",
    "Payload",
    "ReplyBody",
    "RequestIds",
    "RequestState",
    "Response",
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
    if isinstance(payload, str):
        return [payload.encode()]
    if isinstance(payload, bytes | bytearray | memoryview):
        return [bytes(payload)]
    frames: list[bytes] = []
    for frame in payload:
        if isinstance(frame, str):
            frames.append(frame.encode())
        elif isinstance(frame, bytes | bytearray | memoryview):
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


class RequestIds:
    """Request ids for one client: a random 64-bit start, then one more per request.

    A random start (rather than 0) keeps the ids of two clients, or of one client before and after
    a restart, from colliding at a server that remembers recent ids to spot retries. The ``secrets``
    module is used because it reads the OS entropy pool directly, so a forked child does not repeat
    its parent's sequence.
    """

    def __init__(self, start: int | None = None) -> None:
        self._next = secrets.randbits(64) if start is None else start & _U64

    def __next__(self) -> int:
        current = self._next
        self._next = (current + 1) & _U64
        return current

    def __iter__(self) -> Iterator[int]:
        return self


def _check_policy(timeout: float, retries: int) -> None:
    # "not timeout > 0" also refuses NaN, which would make every comparison with a deadline false.
    if not timeout > 0 or math.isinf(timeout):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if retries < 1:
        raise ValueError(f"retries must be at least 1 (the first attempt counts), not {retries!r}")


# -- the sans-IO core -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """A reply (or one part of a streamed reply) that belongs to the current request."""

    body: list[bytes]
    #: False for an MDP/0.2 PARTIAL (more follows), True for the FINAL that ends the request.
    final: bool


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
        _check_policy(timeout, retries)
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
            raise RequestTimeout(
                f"no reply from {self.peer} after {self._attempts} "
                f"{_plural(self._attempts, 'attempt', 'attempts')} "
                f"with a timeout of {self.timeout:g} s each"
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


# -- the blocking driver --------------------------------------------------------------------------


class Client:
    """A blocking client for a zmqserver broker (or any MDP/0.2 broker): Lazy Pirate over DEALER.

    ``endpoint`` is a ZeroMQ endpoint such as ``tcp://127.0.0.1:6660``. ``service`` names the
    service the jobs go to; ``b""`` means the server's default service. Each attempt waits at most
    ``timeout`` seconds for a reply, and a request is sent ``retries`` times in all before
    :class:`~zmqserver.errors.RequestTimeout` is raised. Because a timed-out request is resent, the
    client tells the broker (``FLAG_RETRYABLE``) that the job may also be rerun when its worker
    dies, which answers sooner than waiting out our own timeout; with ``retries=1`` nothing is
    resent and the flag is not set.

    The socket is made from ``context``, or from the process-wide ``zmq.Context.instance()``
    rather than a Context per client, which would cost I/O threads per object. :meth:`close`
    closes the client's socket only, never the context: a context belongs to whoever created it.

    A client is not thread-safe (neither is a ZeroMQ socket): use one per thread.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        service: str | bytes = b"",
        timeout: float = 5.0,
        retries: int = 3,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        server_key: str | bytes | os.PathLike[str] | None = None,
        client_key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        """``server_key`` (the server's Z85 public key, or its ``.key`` file) makes the client
        speak CURVE; ``client_key_file`` is its own ``.key_secret`` (docs/security.md)."""
        _check_policy(timeout, retries)
        self._curve = client_credentials(server_key, client_key_file)
        self.endpoint = endpoint
        self.service = encode_service(service)
        self.timeout = timeout
        self.retries = retries
        self._context = context if context is not None else zmq.Context.instance()
        self._ids = RequestIds()
        # One routing id for the client's whole life, kept across Lazy Pirate reconnects, so the
        # broker can tell a resend from a new request and answer it from its reply cache instead
        # of running the job twice. Random, so it is not guessable; never starting with a zero
        # byte, which ZeroMQ reserves for the ids it makes up itself.
        self.identity = b"zq" + secrets.token_bytes(14)
        self._flags = FLAG_RETRYABLE if retries > 1 else 0
        self._peer = endpoint
        if self.service:
            self._peer += f" (service {self.service.decode('utf-8', 'backslashreplace')!r})"
        self._socket: zmq.Socket[bytes] | None = None
        self._pipeline: Pipeline | None = None
        self._futures: dict[int, PendingReply] = {}
        self._closed = False
        self._busy = False
        # Connect now so that a malformed endpoint fails here, where the caller wrote it, and not
        # at the first request.
        self._socket = self._connect()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Client {self.endpoint!r} service={self.service!r} {state}>"

    # -- public API --

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def request(self, payload: Payload) -> ReplyBody:
        """Send ``payload`` as one job and return its reply.

        Returns ``bytes`` for a one-frame reply and ``list[bytes]`` otherwise. A streamed reply
        (PARTIALs, then a FINAL) is returned whole: the frames of every part, in order.

        Raises :class:`~zmqserver.errors.RequestTimeout` if no attempt was answered,
        :class:`~zmqserver.errors.AppError` if the app raised, another
        :class:`~zmqserver.errors.ServerError` for other error replies, and
        :class:`~zmqserver.errors.Closed` after :meth:`close`.
        """
        if self._futures:
            # Submitted requests are in flight on this socket: wait alongside them rather than
            # replace the socket under them, as a Lazy Pirate retry would.
            return self.submit(payload).result()
        body = encode_payload(payload)
        self._check_open()
        frames: list[bytes] = []
        for response in self._exchange(body):
            frames.extend(response.body)
        return unwrap(frames)

    def stream(self, payload: Payload) -> Iterator[ReplyBody]:
        """Send ``payload`` and yield the reply as it arrives: each PARTIAL, then the FINAL.

        The FINAL is yielded only if its body is not empty (a streaming worker often ends with an
        empty FINAL). Errors are raised as for :meth:`request`, possibly after some parts were
        yielded. Breaking out of the loop abandons the request: the client then replaces its socket
        so the rest of the stream cannot be mistaken for the next reply.
        """
        # Checked here, not in the generator, so that a bad payload or a closed client is reported
        # where stream() is called rather than at the first next().
        body = encode_payload(payload)
        self._check_open()
        return self._stream(body)

    def submit(self, payload: Payload) -> PendingReply:
        """Send ``payload`` now and return a future for its reply, without waiting for it.

        Submitted requests share the client's socket and are matched by request id, so many can
        be in flight at once (pipelining); a timed-out one is resent on the same socket, which a
        zmqserver broker recognises by routing id and request id. The client has no thread of its
        own: the futures complete while it is driven, by any of their ``result()`` calls,
        :meth:`map` or :meth:`request`.
        """
        body = encode_payload(payload)
        self._check_open()
        pipeline = self._get_pipeline()
        request_id, frames = pipeline.submit(body, time.monotonic())
        self._ready_socket().send_multipart(frames)
        future = PendingReply(self, request_id)
        self._futures[request_id] = future
        return future

    def map(self, payloads: Iterable[Payload], *, window: int = 16) -> list[ReplyBody]:
        """Pipelined batch: the replies in the order of ``payloads``, ``window`` at most in flight.

        Raises the first error in that order (requests after it may still be in flight).
        """
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window!r}")
        futures = []
        for payload in payloads:
            while len(self._futures) >= window:
                self._drive(lambda: len(self._futures) < window, None)
            futures.append(self.submit(payload))
        return [future.result() for future in futures]

    def close(self) -> None:
        """Close the socket (unsent requests are dropped: linger 0). Idempotent.

        Futures from :meth:`submit` still pending fail with :class:`~zmqserver.errors.Closed`.
        """
        if self._closed:
            return
        self._closed = True
        self._discard_socket()
        futures, self._futures = self._futures, {}
        for future in futures.values():
            future.set_exception(Closed(f"client for {self.endpoint} closed while waiting"))

    # -- pipelining (submit/map) --

    def _get_pipeline(self) -> Pipeline:
        if self._pipeline is None:
            from ..pipeline import Pipeline  # pipeline.py builds on this module

            self._pipeline = Pipeline(
                service=self.service,
                timeout=self.timeout,
                retries=self.retries,
                flags=self._flags,
                peer=self._peer,
                ids=self._ids,
            )
        return self._pipeline

    def _drive(self, done: Callable[[], bool], timeout: float | None) -> None:
        """Receive, resend and settle pipelined requests until ``done()`` or ``timeout``."""
        pipeline = self._get_pipeline()
        socket = self._ready_socket()
        give_up = None if timeout is None else time.monotonic() + timeout
        while not done():
            now = time.monotonic()
            resend, ended = pipeline.on_tick(now)
            for frames in resend:
                socket.send_multipart(frames)
            for event in ended:
                self._settle(event)
            deadline = pipeline.next_deadline()
            if done() or deadline is None:
                return
            if give_up is not None:
                if now >= give_up:
                    return
                deadline = min(deadline, give_up)
            if socket.poll(math.ceil(max(0.0, deadline - now) * 1000), zmq.POLLIN):
                arrived = pipeline.on_frames(socket.recv_multipart(), time.monotonic())
                if arrived is not None:
                    self._settle(arrived)

    def _settle(self, event: Event) -> None:
        future = self._futures.get(event.request_id)
        if future is None:
            return
        if event.error is not None:
            del self._futures[event.request_id]
            future.set_exception(event.error)
            return
        assert event.response is not None
        future.frames.extend(event.response.body)
        if event.response.final:
            del self._futures[event.request_id]
            future.set_result(unwrap(future.frames))

    def __enter__(self) -> Client:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the Lazy Pirate loop --

    def _stream(self, body: list[bytes]) -> Iterator[ReplyBody]:
        for response in self._exchange(body):
            if response.body or not response.final:
                yield unwrap(response.body)

    def _exchange(self, body: list[bytes]) -> Iterator[Response]:
        self._check_open()
        if self._busy:
            # Only possible by starting a request while iterating over a stream() of the same
            # client: the two would share one socket and one stream of replies.
            raise RuntimeError("this client is already waiting for a reply; finish that first")
        state = RequestState(
            body,
            request_id=next(self._ids),
            service=self.service,
            timeout=self.timeout,
            retries=self.retries,
            flags=self._flags,
            peer=self._peer,
        )
        self._busy = True
        try:
            socket = self._ready_socket()
            socket.send_multipart(state.start(time.monotonic()))
            while True:
                now = time.monotonic()
                if state.expired(now):
                    frames = state.on_timeout(now)  # raises RequestTimeout when out of attempts
                    self._discard_socket()
                    socket = self._ready_socket()
                    socket.send_multipart(frames)
                    continue
                deadline = state.deadline
                assert deadline is not None  # not done, so waiting
                # Rounded up: waking a millisecond early would only cost another trip round.
                if not socket.poll(math.ceil((deadline - now) * 1000), zmq.POLLIN):
                    continue
                response = state.on_frames(socket.recv_multipart(), time.monotonic())
                if response is None:
                    continue  # a late reply to an earlier request
                yield response
                if response.final:
                    return
        finally:
            self._busy = False
            if not state.complete:
                # Timed out, broken reply, error mid-stream, KeyboardInterrupt, or a stream the
                # caller stopped reading: replies to this request may still arrive, and the server
                # may yet receive a queued copy of it. A fresh socket forgets both.
                self._discard_socket()

    # -- socket handling --

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"client for {self.endpoint} is closed")

    def _connect(self) -> zmq.Socket[bytes]:
        # socket_class forces a blocking socket even if the caller passed a zmq.asyncio.Context.
        socket: zmq.Socket[bytes] = self._context.socket(zmq.DEALER, socket_class=zmq.Socket)
        # Linger 0: closing must never block on, or later deliver, a request we gave up on.
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.ROUTING_ID, self.identity)
        if self._curve is not None:
            apply_client(socket, self._curve)
        try:
            socket.connect(self.endpoint)
        except zmq.ZMQError as exc:
            socket.close(linger=0)
            raise ValueError(f"cannot connect to {self.endpoint!r}: {exc}") from exc
        return socket

    def _ready_socket(self) -> zmq.Socket[bytes]:
        if self._socket is None:
            self._socket = self._connect()
        return self._socket

    def _discard_socket(self) -> None:
        if self._socket is not None:
            socket, self._socket = self._socket, None
            socket.close(linger=0)


class PendingReply(Future[ReplyBody]):
    """The future :meth:`Client.submit` returns; asking for its result drives the client.

    A plain :class:`concurrent.futures.Future` completes only if some thread completes it; the
    client has no thread, so ``result()`` and ``exception()`` receive on the client's socket
    (settling other pending replies on the way) until this one is done. Like the client, it must
    be used from the client's thread.
    """

    def __init__(self, client: Client, request_id: int) -> None:
        super().__init__()
        self.client = client
        self.request_id = request_id
        self.frames: list[bytes] = []

    def result(self, timeout: float | None = None) -> ReplyBody:
        if not self.done():
            self.client._drive(self.done, timeout)
        return super().result(timeout=0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.done():
            self.client._drive(self.done, timeout)
        return super().exception(timeout=0)
