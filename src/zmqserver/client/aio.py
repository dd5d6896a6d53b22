"""The asyncio client: many concurrent requests over one DEALER socket, matched by request id.

Only the waiting is asyncio here. Which reply belongs to which request, when to resend, when to
give up and what an error status means are decided by
:class:`~zmqserver.client.pipeline.Pipeline` and :class:`~zmqserver.client.state.RequestState`,
shared with the blocking :class:`~zmqserver.Client`.

One task (the pump) owns the socket's receive side: it reads replies and hands each to the
request waiting for it, and on each request's deadline it resends or fails it. Requests send from
their own tasks. Every send is non-blocking: a send that would block is reported to the pipeline
as a failed attempt, whose deadline then resends or fails it. An awaited send would wait for a
server that is down: past libzmq's 1,000 queued messages no request, and no resend from the pump,
would ever return, and so no ``RequestTimeout`` would either (issue 18).

It is a module of its own, and the package imports it only when asked for ``AsyncClient``, so
that a blocking user never loads asyncio or ``zmq.asyncio``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterable
from types import TracebackType

import zmq
import zmq.asyncio

from ..durable.tsp import DEFAULT_BACKOFF, DEFAULT_RETRIES
from ..errors import Closed, JobPending
from . import durable as tsp
from .durable import (
    JobStatus,
    enqueue_request,
    poll_interval,
    read_result,
    read_status,
    read_ticket,
)
from .options import ClientOptions
from .pipeline import Event
from .state import Payload, ReplyBody, encode_payload, unwrap

__all__ = ["AsyncClient"]


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
        endpoint: str,
        *,
        service: str | bytes = b"",
        timeout: float = 5.0,
        retries: int = 3,
        context: zmq.asyncio.Context | None = None,
        server_key: str | bytes | os.PathLike[str] | None = None,
        client_key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        """``server_key`` and ``client_key_file``: CURVE, as for :class:`~zmqserver.Client`."""
        options = ClientOptions.from_arguments(
            endpoint,
            service=service,
            timeout=timeout,
            retries=retries,
            server_key=server_key,
            client_key_file=client_key_file,
        )
        self.endpoint = options.endpoint
        self.service = options.service
        self.timeout = options.timeout
        self.retries = options.retries
        self.identity = options.identity
        self._pipeline = options.pipeline()
        self._context = context if context is not None else zmq.asyncio.Context.instance()
        self._socket: zmq.asyncio.Socket = options.setup(self._context.socket(zmq.DEALER))
        self._waiters: dict[int, asyncio.Queue[Event]] = {}
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._closed = False

    # -- public API -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def request(self, payload: Payload) -> ReplyBody:
        """Send ``payload`` as one job and return its reply (a streamed reply, joined)."""
        frames: list[bytes] = []
        async for event in self._exchange(payload):
            assert event.response is not None
            frames.extend(event.response.body)
        return unwrap(frames)

    async def stream(self, payload: Payload) -> AsyncIterator[ReplyBody]:
        """Yield each PARTIAL of the reply as it arrives, then the FINAL if it has a body."""
        async for event in self._exchange(payload):
            assert event.response is not None
            if event.response.body or not event.response.final:
                yield unwrap(event.response.body)

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
        give_up = time.monotonic() + wait
        interval: float | None = None
        while True:
            done, reply = read_result(await self._call(tsp.REPLY, [ticket.encode()]), ticket)
            if done:
                return reply
            left = give_up - time.monotonic()
            if left <= 0:
                raise JobPending(f"durable job {ticket} has no result yet")
            interval = poll_interval(interval)
            await asyncio.sleep(min(interval, left))

    async def status(self, ticket: str) -> JobStatus:
        """Where the durable job is (:meth:`zmqserver.Client.status`)."""
        return read_status(await self._call(tsp.STATUS, [ticket.encode()]), ticket)

    async def forget(self, ticket: str) -> None:
        """Delete the durable job and its result (``titanic.close``)."""
        await self._call(tsp.CLOSE, [ticket.encode()])

    async def _call(self, service: bytes, body: list[bytes]) -> list[bytes]:
        frames: list[bytes] = []
        async for event in self._exchange(body, service):
            assert event.response is not None
            frames.extend(event.response.body)
        return frames

    async def close(self) -> None:
        """Close the socket; requests still waiting fail with :class:`Closed`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        for request_id, queue in self._waiters.items():
            queue.put_nowait(Event(request_id, error=Closed("client closed while waiting")))
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

    async def _exchange(
        self, payload: Payload, service: bytes | None = None
    ) -> AsyncIterator[Event]:
        body = encode_payload(payload)
        if self._closed:
            raise Closed(f"client for {self.endpoint} is closed")
        request_id, frames = self._pipeline.submit(body, time.monotonic(), service)
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._waiters[request_id] = queue
        try:
            if not await self._send(frames):
                self._pipeline.on_send_blocked(request_id, time.monotonic())
            self._ensure_pump()
            self._wake.set()  # the pump may be sleeping past this request's deadline
            while True:
                event = await queue.get()
                if event.error is not None:
                    raise event.error
                yield event
                if event.final:
                    return
        finally:
            self._waiters.pop(request_id, None)
            self._pipeline.cancel(request_id)

    def _ensure_pump(self) -> None:
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        pipeline, socket = self._pipeline, self._socket
        receiving: asyncio.Future[list[bytes]] | None = None
        try:
            while True:
                deadline = pipeline.next_deadline()
                if deadline is None and not self._waiters:
                    return  # nothing in flight; the next request restarts the pump
                if receiving is None:
                    receiving = asyncio.ensure_future(socket.recv_multipart())
                waking: asyncio.Future[object] = asyncio.ensure_future(self._wake.wait())
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                waits: set[asyncio.Future[object]] = {receiving, waking}  # type: ignore[arg-type]
                done, _ = await asyncio.wait(
                    waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                waking.cancel()
                self._wake.clear()
                now = time.monotonic()
                if receiving in done:
                    frames = receiving.result()
                    receiving = None
                    self._deliver(pipeline.on_frames(frames, now))
                resend, ended = pipeline.on_tick(now)
                for request_id, frames in resend:
                    if not await self._send(frames):
                        pipeline.on_send_blocked(request_id, now)
                for event in ended:
                    self._deliver(event)
        finally:
            if receiving is not None:
                receiving.cancel()

    async def _send(self, frames: list[bytes]) -> bool:
        """Queue ``frames`` without waiting; False if the queue is full (``EAGAIN``).

        With ``DONTWAIT`` pyzmq's asyncio socket tries the send at once and fails the future with
        ``Again`` instead of waiting for the socket to become writable.
        """
        try:
            await self._socket.send_multipart(frames, flags=zmq.DONTWAIT)
        except zmq.Again:
            return False
        return True

    def _deliver(self, event: Event | None) -> None:
        if event is None:
            return
        queue = self._waiters.get(event.request_id)
        if queue is not None:
            queue.put_nowait(event)
