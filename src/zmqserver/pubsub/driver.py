"""What the blocking :class:`~.client.Subscriber` and the asyncio
:class:`~.aio.AsyncSubscriber` share: their sockets and what to do with each message. Only how
they wait differs (``zmq_poll`` or the event loop), so that is all each of them holds.

The decisions are the :class:`~.agent.Agent`'s (sans-IO); this is the sockets around it, as
RFC 12 has them: a SUB on the server's P+1 (subscribed to the subtree and to HUGZ) and, while a
snapshot comes, a DEALER on its P, a fresh one each time, so that an answer to a request given
up on is never taken.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import zmq

from ..security.sockets import apply_client, client_credentials
from .agent import Agent, Update
from .endpoints import servers, text
from .frames import HUGZ

#: The socket class: ``zmq.Socket`` (blocking) or ``zmq.asyncio.Socket``.
SockT = TypeVar("SockT", bound="zmq.Socket[Any]")


class SubscriberSockets(Generic[SockT]):
    """A subscriber's sockets and state; subclasses add ``recv`` (how to wait)."""

    def __init__(
        self,
        endpoint: str | Sequence[str],
        prefix: str | bytes,
        *,
        silence: float,
        sync_timeout: float,
        rcvhwm: int,
        context: zmq.Context[SockT],
        server_key: str | bytes | os.PathLike[str] | None,
        client_key_file: str | os.PathLike[str] | None,
        updates: str | None,
    ) -> None:
        self.endpoints = servers(endpoint, updates)
        self._credentials = client_credentials(server_key, client_key_file)
        self._ctx = context
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
        self._dealer: SockT | None = None
        self._ready: deque[Update] = deque()
        self._sync(now)

    @property
    def endpoint(self) -> str:
        """The snapshot endpoint of the server in use."""
        return self.endpoints[self.agent.server][0]

    @property
    def state(self) -> dict[bytes, bytes]:
        """The keys under the prefix and their values, as of the last update delivered."""
        return self.agent.map

    @property
    def sequence(self) -> int:
        return self.agent.sequence

    @property
    def gaps(self) -> int:
        return self.agent.gaps

    @property
    def silences(self) -> int:
        return self.agent.silences

    @property
    def snapshots(self) -> int:
        return self.agent.snapshots

    @property
    def moves(self) -> int:
        """Moves to another server (several endpoints only)."""
        return self.agent.moves

    def close(self) -> None:
        """Close the sockets (never the context)."""
        if self._dealer is not None:
            self._dealer.close(linger=0)
            self._dealer = None
        self._sub.close(linger=0)

    # -- for the drivers ----------------------------------------------------------------------

    def _socket(self, kind: int) -> SockT:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if self._credentials is not None:
            apply_client(sock, self._credentials)
        return sock

    def _subscribe(self) -> SockT:
        """A SUB on the live endpoint of the server in use."""
        sub = self._socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, self._rcvhwm)
        sub.setsockopt(zmq.SUBSCRIBE, self.agent.subtree)
        if self.agent.subtree:
            sub.setsockopt(zmq.SUBSCRIBE, HUGZ)
        sub.connect(self.endpoints[self.agent.server][1])
        return sub

    def _sync(self, now: float) -> None:
        if self._dealer is not None:
            self._dealer.close(linger=0)
        self._dealer = self._socket(zmq.DEALER)
        self._dealer.connect(self.endpoint)
        self._dealer.send_multipart(self.agent.request(now), zmq.NOBLOCK)

    def _listening(self) -> SockT:
        """The socket to read now: the DEALER while a snapshot comes (the SUB queues), else
        the SUB."""
        sock = self._dealer if self.agent.syncing else self._sub
        assert sock is not None
        return sock

    def _restart_if_due(self, now: float) -> bool:
        """After a silence or a snapshot that did not come: a new snapshot (from the next
        server, with a SUB there, if the agent moved). True if one was asked for."""
        agent = self.agent
        server = agent.server
        if not agent.timed_out(now):
            return False
        if agent.server != server:  # moved: updates from the new server only
            self._sub.close(linger=0)
            self._sub = self._subscribe()
        self._sync(now)
        return True

    def _feed(self, sock: SockT, frames: list[bytes], now: float) -> bool:
        """One message from ``sock`` to the agent; True when the driver must stop reading
        ``sock`` (the snapshot ended, or a gap asked for a new one)."""
        agent = self.agent
        if sock is self._dealer:
            self._ready.extend(agent.on_snapshot(frames, now))
            if not agent.syncing:
                sock.close(linger=0)
                self._dealer = None
                return True
            return False
        update, resync = agent.on_live(frames, now)
        if resync:
            self._sync(now)
            return True
        if update is not None:
            self._ready.append(update)
        return False
