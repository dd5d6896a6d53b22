"""The blocking client: Lazy Pirate over a DEALER socket, waiting in ``zmq_poll``.

This is a driver and nothing more (STYLE.md, "Policy vs driver"): which reply counts, when to
resend and what an error status means are decided by
:class:`~zmqserver.client.state.RequestState` (one request at a time) and
:class:`~zmqserver.client.pipeline.Pipeline` (``submit``/``map``), shared with the asyncio
client. It is a module of its own so that a blocking user imports neither asyncio nor
``zmq.asyncio``, and so that the retry policy can be read without the socket code around it.

Every send is non-blocking (wire.py): a send that would block, because libzmq's queue for a
server that is not there is full, is reported to the core as a failed attempt instead of waiting
for a server that may never come (state.py, :meth:`RequestState.on_send_blocked`). wire.py also
says how a message gets to the socket: one C call on the compiled path.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures._base import FINISHED as _FINISHED
from concurrent.futures._base import PENDING as _PENDING_STATE
from concurrent.futures._base import RUNNING as _RUNNING
from types import TracebackType
from typing import cast

import zmq

from ..durable.tsp import DEFAULT_BACKOFF, DEFAULT_RETRIES
from ..errors import Closed
from . import durable as tsp
from .durable import (
    JobStatus,
    ResultWait,
    enqueue_request,
    read_status,
    read_ticket,
)
from .options import ClientOptions
from .pipeline import Event
from .state import (
    Payload,
    ReplyBody,
    Response,
    encode_payload,
    unwrap,
)
from .wire import Wire

__all__ = ["Client", "PendingReply"]


class Client:
    """A blocking client for a zmqserver broker (or any MDP/0.2 broker): Lazy Pirate over DEALER.

    ``endpoint`` is a ZeroMQ endpoint such as ``tcp://127.0.0.1:6660``, or several (a list, or
    one string with commas): the servers of a Binary Star pair (docs/ha.md). The client talks to
    one at a time and moves to the next after an attempt times out. ``service`` names the
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
        endpoint: str | Sequence[str],
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
        options = ClientOptions.from_arguments(
            endpoint,
            service=service,
            timeout=timeout,
            retries=retries,
            server_key=server_key,
            client_key_file=client_key_file,
        )
        self._options = options
        #: Every endpoint given; :attr:`endpoint` is the one in use.
        self.endpoints = options.endpoints
        self._failover = options.failover()
        self.service = options.service
        self.timeout = options.timeout
        #: False once the server refused a long poll for a durable job's result (older).
        self._long_poll = True
        self.retries = options.retries
        self.identity = options.identity
        self._context = context if context is not None else zmq.Context.instance()
        self._wire: Wire | None = None
        #: The requests of submit/map in flight, and the ids and policy of every request.
        self._pipeline = options.pipeline()
        self._futures: dict[int, PendingReply | _Slot] = {}
        #: The one Condition this client's futures share (PendingReply says why).
        self._condition = threading.Condition()
        self._closed = False
        self._busy = False
        # Connect now so that a malformed endpoint fails here, where the caller wrote it, and not
        # at the first request.
        self._wire = self._connect()
        try:
            options.check_endpoints(
                lambda: self._context.socket(zmq.DEALER, socket_class=zmq.Socket)
            )
        except BaseException:
            self._discard_socket()
            raise

    @property
    def endpoint(self) -> str:
        """The endpoint in use (with several, the one the client last moved to)."""
        return self._failover.current

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

        Raises ``RuntimeError`` while futures from :meth:`submit` are pending: this Lazy Pirate
        exchange replaces the socket they wait on.
        """
        # Checked here, not in the generator, so that a bad payload or a closed client is reported
        # where stream() is called rather than at the first next().
        body = encode_payload(payload)
        self._check_open()
        if self._futures:
            # The Lazy Pirate loop would read (and drop) their replies on the shared socket, and
            # on a timeout close that socket under them, losing the copies queued in it.
            raise RuntimeError(
                "submitted requests are waiting on this client; wait for their replies first "
                "(request() can wait alongside them)"
            )
        return self._stream(body)

    def submit(self, payload: Payload) -> PendingReply:
        """Send ``payload`` now and return a future for its reply, without waiting for it.

        Submitted requests share the client's socket and are matched by request id, so many can
        be in flight at once (pipelining); a timed-out one is resent on the same socket, which a
        zmqserver broker recognises by routing id and request id. The client has no thread of its
        own: the futures complete while it is driven, by any of their ``result()`` calls,
        :meth:`map` or :meth:`request`.

        Never waits for the server: with the server down, the future fails with
        :class:`~zmqserver.errors.RequestTimeout` after ``timeout`` x ``retries``, however many
        requests were submitted.
        """
        request_id = self._send_new(payload)
        future = PendingReply(self, request_id)
        self._futures[request_id] = future
        return future

    def _send_new(self, payload: Payload) -> int:
        """Start a pipelined request for ``payload`` and send it; its request id."""
        body = encode_payload(payload)
        self._check_open()
        pipeline = self._pipeline
        now = time.monotonic()
        request_id, frames = pipeline.submit(body, now)
        if not self._ready().send(frames):
            pipeline.on_send_blocked(request_id, now)
        return request_id

    def map(self, payloads: Iterable[Payload], *, window: int = 16) -> list[ReplyBody]:
        """Pipelined batch: the replies in the order of ``payloads``, ``window`` at most in flight.

        Raises the first error in that order (requests after it may still be in flight).
        """
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window!r}")
        # No future per payload: each reply goes straight into its place in ``results`` (a
        # future with its lock, per job, and a list of them all alive until the end cost about
        # a quarter of map's CPU, much of it in the garbage collector; BENCHMARKS.md).
        batch = _Batch(self)
        results = batch.results
        futures = self._futures
        for index, payload in enumerate(payloads):
            while len(futures) >= window:
                self._drive(lambda: len(futures) < window, None)
            results.append(_PENDING)
            futures[self._send_new(payload)] = _Slot(batch, index)
        for index in range(len(results)):
            if results[index] is _PENDING:
                self._drive(functools.partial(_arrived, results, index), None)
            if results[index] is _FAILED:
                raise batch.errors[index]
        return cast("list[ReplyBody]", results)

    # -- durable jobs (docs/durable.md) --

    def enqueue(
        self,
        payload: Payload,
        *,
        service: str | bytes | None = None,
        delay: float | None = None,
        eta: float | None = None,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
    ) -> str:
        """Store ``payload`` as a durable job for ``service`` (default: the client's) and return
        its ticket once the server has committed it; the job runs later, even if the server
        restarts first (at-least-once).

        ``delay`` (seconds) or ``eta`` (Unix time): not before then. ``retries``: how many times
        the job runs again after its app raised :class:`~zmqserver.Retry` or its worker was lost,
        waiting ``backoff`` seconds, then twice that, and so on. The server needs ``--store``.
        """
        ticket, body = enqueue_request(
            payload,
            self.service if service is None else service,
            delay=delay,
            eta=eta,
            retries=retries,
            backoff=backoff,
        )
        return read_ticket(self._call(tsp.REQUEST, body), ticket)

    def result(self, ticket: str, *, wait: float = 0.0) -> ReplyBody:
        """The reply of the durable job ``ticket``, waiting up to ``wait`` seconds for it.

        Raises :class:`~zmqserver.errors.JobPending` if it has none by then,
        :class:`~zmqserver.errors.JobFailed` if it failed for good (its last error),
        :class:`~zmqserver.errors.UnknownTicket` if the server does not know the ticket.
        """
        poll = ResultWait(ticket, wait, self.timeout, time.monotonic(), self._long_poll)
        while True:
            frames = self._call(tsp.REPLY, poll.request(time.monotonic()))
            try:
                done, reply, pause = poll.reply(frames, time.monotonic())
            finally:
                self._long_poll = poll.long_poll
            if done:
                return reply
            if pause > 0:
                time.sleep(pause)

    def status(self, ticket: str) -> JobStatus:
        """Where the durable job ``ticket`` is: its state, attempts, next start, last error."""
        return read_status(self._call(tsp.STATUS, [ticket.encode()]), ticket)

    def forget(self, ticket: str) -> None:
        """Delete the durable job ``ticket`` and its result (``titanic.close``)."""
        self._call(tsp.CLOSE, [ticket.encode()])

    def _call(self, service: bytes, body: list[bytes]) -> list[bytes]:
        """One request to ``service`` (not the client's), its reply's frames."""
        if self._futures:
            raise RuntimeError("submitted requests are waiting on this client; wait for them first")
        frames: list[bytes] = []
        for response in self._exchange(body, service):
            frames.extend(response.body)
        return frames

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

    def _drive(self, done: Callable[[], bool], timeout: float | None) -> None:
        """Receive, resend and settle pipelined requests until ``done()`` or ``timeout``.

        Replies already queued are read without a poll (one call less per reply while a window
        is full, which is when it matters); the wait happens only when there is none.
        """
        pipeline = self._pipeline
        wire = self._ready()
        give_up = None if timeout is None else time.monotonic() + timeout
        # The earliest deadline, asked again only once it has passed or before a wait: requests
        # only end or move their deadline later while this runs, so the one known is never late.
        deadline = pipeline.next_deadline()
        while not done():
            frames = wire.recv()
            now = time.monotonic()
            if frames is not None:
                arrived = pipeline.on_frames(frames, now)
                if arrived is not None:
                    self._settle(arrived)
            if deadline is not None and now >= deadline:
                deadline = pipeline.next_deadline()
            if deadline is not None and now >= deadline:
                resend, ended = pipeline.on_tick(now)
                if (resend or ended) and self._failover.on_timeout(now, self.timeout):
                    # A Binary Star pair's other server: requests still in flight here resend
                    # to it when they time out in turn (failover.py).
                    self._discard_socket()
                    wire = self._ready()
                for request_id, resent in resend:
                    if not wire.send(resent):
                        pipeline.on_send_blocked(request_id, now)
                for event in ended:
                    self._settle(event)
                deadline = pipeline.next_deadline()
                continue
            if frames is not None:
                continue  # more may be queued: read before waiting
            deadline = pipeline.next_deadline()
            if deadline is None:
                return  # nothing in flight
            if give_up is not None:
                if now >= give_up:
                    return
                deadline = min(deadline, give_up)
            # Rounded up: waking a millisecond early would only cost another trip round.
            wire.wait(math.ceil((deadline - now) * 1000))

    def _forget(self, request_id: int) -> None:
        """Stop waiting for a pipelined request (its future was cancelled)."""
        self._futures.pop(request_id, None)
        self._pipeline.cancel(request_id)

    def _settle(self, event: Event) -> None:
        response = event.response
        if response is not None and not response.final:  # a part of a streamed reply
            pending = self._futures.get(event.request_id)
            if pending is not None:
                pending.frames.extend(response.body)
            return
        future = self._futures.pop(event.request_id, None)
        if future is None:
            return
        if response is None:
            assert event.error is not None
            future.set_exception(event.error)
        elif future.frames:  # the FINAL of a streamed reply: join the parts
            future.frames.extend(response.body)
            future.set_result(unwrap(future.frames))
        else:
            future.set_result(unwrap(response.body))

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

    def _exchange(self, body: list[bytes], service: bytes | None = None) -> Iterator[Response]:
        self._check_open()
        if self._busy:
            # Only possible by starting a request while iterating over a stream() of the same
            # client: the two would share one socket and one stream of replies.
            raise RuntimeError("this client is already waiting for a reply; finish that first")
        state = self._pipeline.new_state(body, service)
        self._busy = True
        try:
            wire = self._ready()
            now = time.monotonic()
            if not wire.send(state.start(now)):
                state.on_send_blocked(now)
            while True:
                now = time.monotonic()
                if state.expired(now):
                    self._failover.on_timeout(now, self.timeout)  # the next server, if several
                    frames = state.on_timeout(now)  # raises RequestTimeout when out of attempts
                    self._discard_socket()
                    wire = self._ready()
                    if not wire.send(frames):
                        state.on_send_blocked(now)
                    continue
                deadline = state.deadline
                assert deadline is not None  # not done, so waiting
                # Rounded up: waking a millisecond early would only cost another trip round.
                received = wire.recv_within(math.ceil((deadline - now) * 1000))
                if received is None:
                    continue
                response = state.on_frames(received, time.monotonic())
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

    def _connect(self) -> Wire:
        # socket_class forces a blocking socket even if the caller passed a zmq.asyncio.Context.
        socket: zmq.Socket[bytes] = self._context.socket(zmq.DEALER, socket_class=zmq.Socket)
        return Wire(self._options.setup(socket, self._failover.current))

    def _ready(self) -> Wire:
        if self._wire is None:
            self._wire = self._connect()
        return self._wire

    @property
    def _socket(self) -> zmq.Socket[bytes] | None:
        """The socket now in use (a Lazy Pirate retry replaces it), or None between sockets."""
        return None if self._wire is None else self._wire.socket

    def _discard_socket(self) -> None:
        if self._wire is not None:
            wire, self._wire = self._wire, None
            wire.close()


class PendingReply(Future[ReplyBody]):
    """The future :meth:`Client.submit` returns; asking for its result drives the client.

    A plain :class:`concurrent.futures.Future` completes only if some thread completes it; the
    client has no thread, so ``result()`` and ``exception()`` receive on the client's socket
    (settling other pending replies on the way) until this one is done. Like the client, it must
    be used from the client's thread. ``cancel()`` stops waiting for the reply (the job may still
    run: its request was sent) and the reply is ignored when it comes.

    It is a :class:`~concurrent.futures.Future` (``add_done_callback``, ``cancel``,
    ``concurrent.futures.wait`` and ``as_completed`` work as for any), lighter where nothing but
    the client's own thread looks at it, which is the pipelining case: a Future makes a Condition
    and its RLock per future, and takes the lock to settle it and again to read it (2.7 us a
    request, a sixth of ``submit``'s cost; BENCHMARKS.md). Here the futures of one client share one
    Condition, made with the client, and a future that nothing waits on (no ``wait()`` or
    callback installed) is settled and read without it; anything else takes Future's own path.
    """

    def __init__(self, client: Client, request_id: int) -> None:
        # Future.__init__ is not called: it would make the Condition this class avoids. These are
        # the attributes it sets (CPython's concurrent/futures/_base.py since 3.2), which Future's
        # methods and concurrent.futures.wait/as_completed read.
        self._condition = client._condition
        self._state = _PENDING_STATE
        self._result: ReplyBody | None = None
        self._exception: BaseException | None = None
        self._waiters = []
        self._done_callbacks: list[Callable[[Future[ReplyBody]], object]] = []
        self.client = client
        self.request_id = request_id
        self.frames: list[bytes] = []

    def set_result(self, result: ReplyBody) -> None:
        if self._state == _PENDING_STATE and not self._waiters and not self._done_callbacks:
            # What Future.set_result does when no waiter or callback needs telling.
            self._result = result
            self._state = _FINISHED
        else:
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if self._state == _PENDING_STATE and not self._waiters and not self._done_callbacks:
            self._exception = exception
            self._state = _FINISHED
        else:
            super().set_exception(exception)

    def done(self) -> bool:
        return self._state != _PENDING_STATE and self._state != _RUNNING

    def result(self, timeout: float | None = None) -> ReplyBody:
        if self._state == _PENDING_STATE:
            self.client._drive(self.done, timeout)
        if self._state == _FINISHED and self._exception is None:
            return cast("ReplyBody", self._result)
        return super().result(timeout=0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == _PENDING_STATE:
            self.client._drive(self.done, timeout)
        return super().exception(timeout=0)

    def cancel(self) -> bool:
        """Stop waiting for the reply (True), unless it already came (False).

        The request was sent, so the job may still run; its reply is then dropped, and the
        client no longer counts the request as in flight (``request()`` and ``stream()`` see no
        pending future for it)."""
        if self._state == _PENDING_STATE:
            self.client._forget(self.request_id)
        return super().cancel()


#: What a :meth:`Client.map` result holds until its reply came, or after its request failed.
_PENDING: object = object()
_FAILED: object = object()


def _arrived(results: list[object], index: int) -> bool:
    return results[index] is not _PENDING


class _Batch:
    """One :meth:`Client.map` call's results, in the order of its payloads, and its errors."""

    __slots__ = ("client", "results", "errors")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.results: list[object] = []
        self.errors: dict[int, BaseException] = {}


class _Slot:
    """A :meth:`Client.map` request in flight: where its reply goes (a lighter future)."""

    __slots__ = ("batch", "index", "frames")

    def __init__(self, batch: _Batch, index: int) -> None:
        self.batch = batch
        self.index = index
        self.frames: list[bytes] = []

    def set_result(self, result: ReplyBody) -> None:
        self.batch.results[self.index] = result

    def set_exception(self, exception: BaseException) -> None:
        self.batch.errors[self.index] = exception
        self.batch.results[self.index] = _FAILED

    def done(self) -> bool:
        return self.batch.results[self.index] is not _PENDING

    def exception(self) -> BaseException | None:
        """The error that ended the request, or None; waits for it as PendingReply's does."""
        if not self.done():
            self.batch.client._drive(self.done, None)
        return self.batch.errors.get(self.index)
