"""The asyncio subscriber: :class:`AsyncSubscriber`, the same :class:`~.agent.Agent` as the
blocking one, waiting with ``zmq.asyncio`` instead of ``zmq_poll``."""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

import zmq
import zmq.asyncio

from ..security.sockets import ClientCredentials, apply_client, client_credentials
from .agent import SILENCE, SYNC_TIMEOUT, Agent, Update
from .client import RCVHWM
from .endpoints import servers, text
from .frames import HUGZ

__all__ = ["AsyncSubscriber"]


class AsyncSubscriber:
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
        self.endpoints = servers(endpoint, updates)
        self._credentials = client_credentials(server_key, client_key_file)
        self._ctx = context or zmq.asyncio.Context.instance()
        self._rcvhwm = rcvhwm
        now = time.monotonic()
        self.agent = Agent(
            text(prefix),
            now,
            silence=silence,
            sync_timeout=sync_timeout,
            servers=len(self.endpoints),
        )
        self._sub = self._subscribe()
        self._dealer: zmq.asyncio.Socket | None = None
        self._ready: deque[Update] = deque()
        self._sync(now)

    @property
    def endpoint(self) -> str:
        """The snapshot endpoint of the server in use."""
        return self.endpoints[self.agent.server][0]

    def _subscribe(self) -> zmq.asyncio.Socket:
        sub = self._socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, self._rcvhwm)
        sub.setsockopt(zmq.SUBSCRIBE, self.agent.subtree)
        if self.agent.subtree:
            sub.setsockopt(zmq.SUBSCRIBE, HUGZ)
        sub.connect(self.endpoints[self.agent.server][1])
        return sub

    def _socket(self, kind: int) -> zmq.asyncio.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        credentials: ClientCredentials | None = self._credentials
        if credentials is not None:
            apply_client(sock, credentials)
        return sock

    @property
    def state(self) -> dict[bytes, bytes]:
        return self.agent.map

    def _sync(self, now: float) -> None:
        if self._dealer is not None:
            self._dealer.close(linger=0)
        self._dealer = self._socket(zmq.DEALER)
        self._dealer.connect(self.endpoint)
        self._dealer.send_multipart(self.agent.request(now), zmq.NOBLOCK)

    async def recv(self, timeout: float | None = None) -> Update | None:
        """The next update, or None if none came within ``timeout`` seconds (None: wait)."""
        until = math.inf if timeout is None else time.monotonic() + timeout
        agent = self.agent
        while not self._ready:
            sock = self._dealer if agent.syncing else self._sub
            assert sock is not None
            await self._drain(sock)  # what is queued first: it may be what keeps the server alive
            if self._ready:
                break
            if sock is not (self._dealer if agent.syncing else self._sub):
                continue  # the snapshot ended (or restarted): wait on the other socket
            now = time.monotonic()
            server = agent.server
            if agent.timed_out(now):
                if agent.server != server:  # moved: updates from the new server only
                    self._sub.close(linger=0)
                    self._sub = self._subscribe()
                self._sync(now)
                continue
            if now >= until:
                return None
            wait = min(until, agent.next_deadline()) - now
            await sock.poll(max(0, int(wait * 1000) + 1))
        return self._ready.popleft()

    async def _drain(self, sock: zmq.asyncio.Socket) -> None:
        """Read what ``sock`` holds (a bounded batch), feeding the agent."""
        agent = self.agent
        for _ in range(1000):
            try:
                frames = await sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            now = time.monotonic()
            if sock is self._dealer:
                self._ready.extend(agent.on_snapshot(frames, now))
                if not agent.syncing:
                    sock.close(linger=0)
                    self._dealer = None
                    return
            else:
                update, resync = agent.on_live(frames, now)
                if resync:
                    self._sync(now)
                    return
                if update is not None:
                    self._ready.append(update)

    async def __aiter__(self) -> AsyncIterator[Update]:
        while True:
            update = await self.recv()
            if update is not None:
                yield update

    def close(self) -> None:
        if self._dealer is not None:
            self._dealer.close(linger=0)
            self._dealer = None
        self._sub.close(linger=0)

    async def __aenter__(self) -> AsyncSubscriber:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
