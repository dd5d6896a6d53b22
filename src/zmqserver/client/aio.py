"""The asyncio client: many concurrent requests over one DEALER socket, matched by request id.

Only the waiting is asyncio here. Which reply belongs to which request, when to resend, when to
give up and what an error status means are decided by
:class:`~zmqserver.client.pipeline.Pipeline` and :class:`~zmqserver.client.state.RequestState`,
shared with the blocking :class:`~zmqserver.Client`.

The socket is a plain (blocking-API) pyzmq socket, used only without waiting, and the event loop
watches its file descriptor itself (``loop.add_reader``): when it turns readable, every queued
reply is read at once and handed to the future of the request it answers. One timer, set for the
earliest deadline, resends or fails requests that time out. ``zmq.asyncio`` was the first driver
and was dropped for speed: it makes futures, tasks and reader registrations per call, and a
request through it cost about 95 us of CPU where this costs a fraction (bench/clientlib.py).

Two rules of libzmq's file descriptor make the watching correct. It is edge-triggered, so a
wake-up reads until ``EAGAIN``. And a send may consume the wake-up meant for a reply that
arrived meanwhile (libzmq processes its pending commands in any call), so sends schedule a read
(one per turn of the loop, however many requests were sent in it), which finds any such reply.

Every send is non-blocking: a send that would block is reported to the pipeline as a failed
attempt, whose deadline then resends or fails it. Waiting for the send would wait for a server
that is down: past libzmq's 1,000 queued messages no request, and no resend, would ever return,
and so no ``RequestTimeout`` would either (issue 18).

It is a module of its own, and the package imports it only when asked for ``AsyncClient``, so
that a blocking user never loads asyncio.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any

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
from .state import Payload, ReplyBody, encode_payload, unwrap
from .wire import Wire

__all__ = ["AsyncClient"]


class _Joined:
    """A :meth:`AsyncClient.request` waiting: the parts of its reply, joined, then its future."""

    __slots__ = ("future", "frames")

    def __init__(self, future: asyncio.Future[list[bytes]]) -> None:
        self.future = future
        self.frames: list[bytes] = []

    def deliver(self, event: Event) -> None:
        if self.future.done():
            return  # its caller was cancelled
        if event.error is not None:
            self.future.set_exception(event.error)
            return
        assert event.response is not None
        self.frames.extend(event.response.body)
        if event.response.final:
            self.future.set_result(self.frames)


class _Streamed:
    """A :meth:`AsyncClient.stream` waiting: each part, queued for the consumer as it arrives."""

    __slots__ = ("queue",)

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def deliver(self, event: Event) -> None:
        self.queue.put_nowait(event)


class AsyncClient:
    """An asyncio client for a zmqserver broker; the same semantics as :class:`~zmqserver.Client`.

    ``timeout`` bounds each attempt, ``retries`` counts attempts in all; a request that gets no
    reply is resent on the same socket (the broker recognises the resend and does not run the
    job twice) and fails with :class:`~zmqserver.errors.RequestTimeout` after the last attempt.
    Error replies raise the :class:`~zmqserver.errors.ServerError` subclass for their status.

    Create it inside a running event loop; use ``async with`` or ``await client.close()``.
    """

    def __init__(
        self,
        endpoint: str | Sequence[str],
        *,
        service: str | bytes = b"",
        timeout: float = 5.0,
        retries: int = 3,
        context: zmq.Context[Any] | None = None,
        server_key: str | bytes | os.PathLike[str] | None = None,
        client_key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        """``server_key`` and ``client_key_file``: CURVE, as for :class:`~zmqserver.Client`.

        ``context`` may be a ``zmq.Context`` or a ``zmq.asyncio.Context``: either makes the
        plain socket this client drives.
        """
        options = ClientOptions.from_arguments(
            endpoint,
            service=service,
            timeout=timeout,
            retries=retries,
            server_key=server_key,
            client_key_file=client_key_file,
        )
        self._options = options
        #: Every endpoint given (a Binary Star pair: docs/ha.md); :attr:`endpoint`: the one in use.
        self.endpoints = options.endpoints
        self._failover = options.failover()
        self.service = options.service
        self.timeout = options.timeout
        #: False once the server refused a long poll for a durable job's result (older).
        self._long_poll = True
        self.retries = options.retries
        self.identity = options.identity
        self._pipeline = options.pipeline()
        self._context = context if context is not None else zmq.Context.instance()
        # socket_class: a plain socket even from a zmq.asyncio.Context (see the module docstring).
        socket = self._context.socket(zmq.DEALER, socket_class=zmq.Socket)
        self._wire = Wire(options.setup(socket))
        self._socket: zmq.Socket[bytes] = self._wire.socket
        try:
            options.check_endpoints(
                lambda: self._context.socket(zmq.DEALER, socket_class=zmq.Socket)
            )
        except BaseException:
            self._socket.close(linger=0)
            raise
        self._waiting: dict[int, _Joined | _Streamed] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_soon = False
        self._closed = False

    # -- public API -------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The endpoint in use (with several, the one the client last moved to)."""
        return self._failover.current

    @property
    def closed(self) -> bool:
        return self._closed

    async def request(self, payload: Payload) -> ReplyBody:
        """Send ``payload`` as one job and return its reply (a streamed reply, joined)."""
        return unwrap(await self._request(encode_payload(payload), None))

    async def _request(self, body: list[bytes], service: bytes | None) -> list[bytes]:
        """One request (to ``service``, default: the client's); every frame of its reply."""
        loop = self._ready()
        request_id, frames = self._pipeline.submit(body, time.monotonic(), service)
        future: asyncio.Future[list[bytes]] = loop.create_future()
        self._waiting[request_id] = _Joined(future)
        try:
            self._send(request_id, frames)
            return await future
        finally:
            del self._waiting[request_id]
            self._pipeline.cancel(request_id)  # a no-op unless we were cancelled or closed

    async def stream(self, payload: Payload) -> AsyncIterator[ReplyBody]:
        """Yield each PARTIAL of the reply as it arrives, then the FINAL if it has a body."""
        body = encode_payload(payload)
        self._ready()
        request_id, frames = self._pipeline.submit(body, time.monotonic())
        waiter = _Streamed()
        self._waiting[request_id] = waiter
        try:
            self._send(request_id, frames)
            while True:
                event = await waiter.queue.get()
                if event.error is not None:
                    raise event.error
                assert event.response is not None
                if event.response.body or not event.response.final:
                    yield unwrap(event.response.body)
                if event.response.final:
                    return
        finally:
            del self._waiting[request_id]
            self._pipeline.cancel(request_id)

    def submit(self, payload: Payload) -> asyncio.Task[ReplyBody]:
        """Start a request now and return a task (a future) for its reply."""
        return asyncio.ensure_future(self.request(payload))

    async def map(self, payloads: Iterable[Payload], *, window: int = 64) -> list[ReplyBody]:
        """Pipelined batch: replies in the order of ``payloads``, at most ``window`` in flight.

        The first error (after all started requests have finished) is raised.
        """
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window!r}")
        items = list(payloads)
        results: list[ReplyBody] = [b""] * len(items)
        slots = asyncio.Semaphore(window)

        async def one(index: int, payload: Payload) -> None:
            async with slots:
                results[index] = await self.request(payload)

        await asyncio.gather(*(one(i, p) for i, p in enumerate(items)))
        return results

    # -- durable jobs (docs/durable.md; the same as the blocking Client's) --

    async def enqueue(
        self,
        payload: Payload,
        *,
        service: str | bytes | None = None,
        delay: float | None = None,
        eta: float | None = None,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
    ) -> str:
        """Store a durable job; its ticket once committed (:meth:`zmqserver.Client.enqueue`)."""
        ticket, body = enqueue_request(
            payload,
            self.service if service is None else service,
            delay=delay,
            eta=eta,
            retries=retries,
            backoff=backoff,
        )
        return read_ticket(await self._call(tsp.REQUEST, body), ticket)

    async def result(self, ticket: str, *, wait: float = 0.0) -> ReplyBody:
        """The durable job's reply, waiting up to ``wait`` seconds (:meth:`Client.result`)."""
        poll = ResultWait(ticket, wait, self.timeout, time.monotonic(), self._long_poll)
        while True:
            frames = await self._call(tsp.REPLY, poll.request(time.monotonic()))
            try:
                done, reply, pause = poll.reply(frames, time.monotonic())
            finally:
                self._long_poll = poll.long_poll
            if done:
                return reply
            if pause > 0:
                await asyncio.sleep(pause)

    async def status(self, ticket: str) -> JobStatus:
        """Where the durable job is (:meth:`zmqserver.Client.status`)."""
        return read_status(await self._call(tsp.STATUS, [ticket.encode()]), ticket)

    async def forget(self, ticket: str) -> None:
        """Delete the durable job and its result (``titanic.close``)."""
        await self._call(tsp.CLOSE, [ticket.encode()])

    async def _call(self, service: bytes, body: list[bytes]) -> list[bytes]:
        return await self._request(body, service)

    async def close(self) -> None:
        """Close the socket; requests still waiting fail with :class:`Closed`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._socket.FD)
        for request_id, waiter in list(self._waiting.items()):
            waiter.deliver(Event(request_id, error=Closed("client closed while waiting")))
        self._socket.close(linger=0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- driving ----------------------------------------------------------------------------------

    def _ready(self) -> asyncio.AbstractEventLoop:
        """The running loop, watching our socket from the first request on."""
        if self._closed:
            raise Closed(f"client for {self.endpoint} is closed")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed():
                raise RuntimeError("an AsyncClient belongs to the event loop it was first used in")
            self._loop = loop
            self._timer = None
            loop.add_reader(self._socket.FD, self._read)
        return loop

    def _send(self, request_id: int, frames: list[bytes]) -> None:
        """Send without waiting; a full queue is a failed attempt (the module docstring)."""
        if not self._wire.send(frames):
            self._pipeline.on_send_blocked(request_id, time.monotonic())
        if self._timer is None:
            self._arm()
        self._check_events()

    def _check_events(self) -> None:
        """Read soon, in case a reply is queued whose wake-up a send or a read consumed.

        Once per turn of the loop, however many requests were sent in it: the read is one C
        call when nothing is there, where asking the socket's ``EVENTS`` after each send cost
        a microsecond a request. It runs before the loop waits again (a callback made ready now
        makes the loop's next wait a poll that does not block), so no reply is left unseen.
        """
        if not self._read_soon:
            assert self._loop is not None
            self._read_soon = True
            self._loop.call_soon(self._read)

    def _read(self) -> None:
        """The socket's fd turned readable (or a send saw a reply queued): read every reply."""
        self._read_soon = False
        if self._closed:
            return
        recv, pipeline, waiting = self._wire.recv, self._pipeline, self._waiting
        now = time.monotonic()
        while (frames := recv()) is not None:
            event = pipeline.on_frames(frames, now)
            if event is not None and (waiter := waiting.get(event.request_id)) is not None:
                waiter.deliver(event)

    def _arm(self) -> None:
        """Set the one timer for the earliest deadline, if a request is in flight.

        Requests that end early leave it set: it then fires for nothing and is set again for the
        next deadline, about once a ``timeout``, which is cheaper than moving it per reply.
        """
        deadline = self._pipeline.next_deadline()
        if deadline is not None and self._loop is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        now = time.monotonic()
        resend, ended = self._pipeline.on_tick(now)
        if (resend or ended) and self._failover.on_timeout(now, self.timeout):
            self._move()
        for request_id, frames in resend:
            if not self._wire.send(frames):
                self._pipeline.on_send_blocked(request_id, now)
        for event in ended:
            waiter = self._waiting.get(event.request_id)
            if waiter is not None:
                waiter.deliver(event)
        self._arm()
        if resend:
            self._check_events()

    def _move(self) -> None:
        """Replace the socket with one connected to the next server of a Binary Star pair;
        requests still in flight on the old one resend to it as they time out (failover.py)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._socket.FD)
        self._wire.close()
        socket = self._context.socket(zmq.DEALER, socket_class=zmq.Socket)
        self._wire = Wire(self._options.setup(socket, self._failover.current))
        self._socket = self._wire.socket
        if loop is not None and not loop.is_closed():
            loop.add_reader(self._socket.FD, self._read)
