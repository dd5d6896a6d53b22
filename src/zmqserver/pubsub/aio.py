"""The asyncio subscriber: :class:`AsyncSubscriber`, the same :class:`~.agent.Agent` as the
blocking one, waiting with ``zmq.asyncio`` instead of ``zmq_poll``."""

from __future__ import annotations

import math
import os
import time
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

import zmq
import zmq.asyncio

from .agent import SILENCE, SYNC_TIMEOUT, Update
from .client import RCVHWM
from .driver import SubscriberSockets

__all__ = ["AsyncSubscriber"]


class AsyncSubscriber(SubscriberSockets[zmq.asyncio.Socket]):
    """:class:`~zmqserver.Subscriber` for asyncio: ``async for update in sub`` or
    ``await sub.recv(timeout)``. Sockets from ``context`` or ``zmq.asyncio.Context.instance()``.
    """

    def __init__(
        self,
        endpoint: str | Sequence[str],
        prefix: str | bytes = b"",
        *,
        silence: float = SILENCE,
        sync_timeout: float = SYNC_TIMEOUT,
        rcvhwm: int = RCVHWM,
        context: zmq.asyncio.Context | None = None,
        server_key: str | bytes | os.PathLike[str] | None = None,
        client_key_file: str | os.PathLike[str] | None = None,
        updates: str | None = None,
    ) -> None:
        super().__init__(
            endpoint,
            prefix,
            silence=silence,
            sync_timeout=sync_timeout,
            rcvhwm=rcvhwm,
            context=context or zmq.asyncio.Context.instance(),
            server_key=server_key,
            client_key_file=client_key_file,
            updates=updates,
        )

    async def recv(self, timeout: float | None = None) -> Update | None:
        """The next update, or None if none came within ``timeout`` seconds (None: wait)."""
        until = math.inf if timeout is None else time.monotonic() + timeout
        while not self._ready:
            sock = self._listening()
            await self._drain(sock)  # what is queued first: it may be what keeps the server alive
            if self._ready:
                break
            if sock is not self._listening():
                continue  # the snapshot ended (or restarted): wait on the other socket
            now = time.monotonic()
            if self._restart_if_due(now):
                continue
            if now >= until:
                return None
            wait = min(until, self.agent.next_deadline()) - now
            await sock.poll(max(0, int(wait * 1000) + 1))
        return self._ready.popleft()

    async def _drain(self, sock: zmq.asyncio.Socket) -> None:
        """Read what ``sock`` holds (a bounded batch), feeding the agent."""
        for _ in range(1000):
            try:
                frames = await sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if self._feed(sock, frames, time.monotonic()):
                return

    async def __aiter__(self) -> AsyncIterator[Update]:
        while True:
            update = await self.recv()
            if update is not None:
                yield update

    async def __aenter__(self) -> AsyncSubscriber:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
