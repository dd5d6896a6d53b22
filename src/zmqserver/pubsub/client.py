"""The blocking pub-sub clients: :class:`Subscriber` (CHP's clone client) and :class:`Publisher`.

Drivers only: what to do with a message is :class:`~.agent.Agent`'s decision. A Subscriber
has two sockets, as RFC 12 says: a SUB on P+1 for live updates (subscribed to its subtree and
to HUGZ) and, while it (re)syncs, a DEALER on P for the snapshot. A fresh DEALER each sync, so
that a request sent to a server that was down is never answered twice.

A Publisher is an XPUB connected to the collector (P+2), not a PUB: the collector's
subscription arriving on the XPUB is the sign that the connection is up, so the first update is
not lost to ZeroMQ's "slow joiner" (a PUB drops what it sends before the connection exists).
"""

from __future__ import annotations

import math
import os
import time
import uuid as _uuid
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType

import zmq

from ..security.sockets import ClientCredentials, apply_client, client_credentials
from .agent import SILENCE, SYNC_TIMEOUT, Update
from .driver import SubscriberSockets
from .endpoints import chp_endpoints, servers, text
from .frames import KV, TTL, encode_kv

__all__ = ["Publisher", "Subscriber", "Update"]

#: Seconds a publisher with several collectors waits for the others once one is connected.
CONNECT_GRACE = 0.25
#: Updates a subscriber's SUB socket may queue before ZeroMQ drops (then it resyncs).
RCVHWM = 100_000


def _socket(
    ctx: zmq.Context[zmq.Socket[bytes]], kind: int, credentials: ClientCredentials | None
) -> zmq.Socket[bytes]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if credentials is not None:
        apply_client(sock, credentials)
    return sock


class Subscriber(SubscriberSockets["zmq.Socket[bytes]"]):
    """Snapshot then live updates of the keys under ``prefix``, kept in step with the server.

    ``endpoint`` is the server's snapshot port, ``tcp://host:P`` (the pub-sub port; updates come
    from P+1). Iterate to get :class:`Update` objects: first the snapshot (``update.snapshot``),
    then each change as it happens, in sequence order. After a gap (this subscriber fell behind
    and ZeroMQ dropped updates) or a silent server, it takes a new snapshot and delivers the
    difference, so that :attr:`state` always ends up as the server's. :attr:`gaps`,
    :attr:`silences` and :attr:`snapshots` count those events.

    Not thread-safe (one per thread); :meth:`close` closes its sockets, never the context.
    """

    def __init__(
        self,
        endpoint: str | Sequence[str],
        prefix: str | bytes = b"",
        *,
        silence: float = SILENCE,
        sync_timeout: float = SYNC_TIMEOUT,
        rcvhwm: int = RCVHWM,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        server_key: str | bytes | os.PathLike[str] | None = None,
        client_key_file: str | os.PathLike[str] | None = None,
        updates: str | None = None,
    ) -> None:
        """``endpoint``: one server's pub-sub port, or several (a list, or ``"a,b"``: the
        servers of a Binary Star pair, docs/ha.md; the subscriber uses one at a time and moves
        to the next when it falls silent or answers no snapshot). ``updates`` overrides the
        live endpoint of a single server (else P+1 of ``endpoint``); ``server_key`` and
        ``client_key_file`` as for :class:`~zmqserver.Client` (CURVE)."""
        super().__init__(
            endpoint,
            prefix,
            silence=silence,
            sync_timeout=sync_timeout,
            rcvhwm=rcvhwm,
            context=context or zmq.Context.instance(),
            server_key=server_key,
            client_key_file=client_key_file,
            updates=updates,
        )

    def recv(self, timeout: float | None = None) -> Update | None:
        """The next update, or None if none came within ``timeout`` seconds (None: wait)."""
        until = math.inf if timeout is None else time.monotonic() + timeout
        while not self._ready:
            sock = self._listening()
            self._drain(sock)  # what is queued first: it may be what keeps the server alive
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
            sock.poll(max(0, int(wait * 1000) + 1))
        return self._ready.popleft()

    def _drain(self, sock: zmq.Socket[bytes]) -> None:
        """Read what ``sock`` holds (a bounded batch), feeding the agent."""
        for _ in range(1000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if self._feed(sock, frames, time.monotonic()):
                return

    def __iter__(self) -> Iterator[Update]:
        while True:
            update = self.recv()
            if update is not None:
                yield update

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Publisher:
    """Sends updates (KVSET) to a CHP server's collector, ``tcp://host:P`` -> P+2.

    ``publish(key, value, ttl=None)`` sets a key (``ttl``: seconds before the server deletes
    it); an empty value, or :meth:`delete`, deletes it. Updates are fire-and-forget, as on any
    PUB socket: the server numbers them and publishes them to subscribers. The first publish
    waits up to ``connect_timeout`` seconds for the connection (see the module's docstring).
    """

    def __init__(
        self,
        endpoint: str | Sequence[str],
        *,
        connect_timeout: float = 5.0,
        sndhwm: int = 100_000,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        server_key: str | bytes | os.PathLike[str] | None = None,
        client_key_file: str | os.PathLike[str] | None = None,
        collector: str | Sequence[str] | None = None,
        credentials: ClientCredentials | None = None,
    ) -> None:
        """``endpoint``: one server's pub-sub port, or several (a list, or ``"a,b"``): each
        update goes to every server's collector (P+2), as the guide's clonecli6 sends it, so
        that the passive server of a Binary Star pair can publish what the active one received
        but never published before it died (docs/ha.md). ``collector`` overrides the endpoint
        with collector endpoints (one, or a list)."""
        if collector is not None:
            self.endpoints = [collector] if isinstance(collector, str) else list(collector)
        else:
            self.endpoints = [chp_endpoints(part)[2] for part, _ in servers(endpoint)]
        self.endpoint = self.endpoints[0]
        if credentials is None:
            credentials = client_credentials(server_key, client_key_file)
        self._ctx = context or zmq.Context.instance()
        self._sock = _socket(self._ctx, zmq.XPUB, credentials)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        # Every collector's subscription, not only the first (XPUB passes one per topic):
        # wait_connected counts them.
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        for where in self.endpoints:
            self._sock.connect(where)
        self.connect_timeout = connect_timeout
        self._connected = False

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until a collector has subscribed (its connection is up); whether one has.

        With several collectors, the others get :data:`CONNECT_GRACE` seconds more after the
        first (an update sent before a collector's connection is up never reaches it), not the
        whole timeout: one server of a pair may be down for good.
        """
        if self._connected:
            return True
        wait = self.connect_timeout if timeout is None else timeout
        until = time.monotonic() + wait
        heard = 0
        while heard < len(self.endpoints):
            left = until - time.monotonic()
            if left <= 0 or not self._sock.poll(max(0, int(left * 1000))):
                break
            self._sock.recv(zmq.NOBLOCK)  # a collector's subscription message
            heard += 1
            if heard == 1:
                until = min(until, time.monotonic() + CONNECT_GRACE)
        self._connected = heard > 0
        return self._connected

    def publish(
        self,
        key: str | bytes,
        value: str | bytes,
        ttl: float | None = None,
        properties: Mapping[bytes, bytes] | None = None,
    ) -> None:
        """Send one update (an empty ``value`` deletes ``key``); never blocks past the first
        connection wait: at the send HWM, ZeroMQ drops, as a PUB does."""
        if not self._connected:
            self.wait_connected()
        props = dict(properties or {})
        if ttl is not None:
            props[TTL] = b"%g" % ttl
        kv = KV(text(key), 0, text(value), props, _uuid.uuid4().bytes)
        self._sock.send_multipart(encode_kv(kv), zmq.NOBLOCK)

    def delete(self, key: str | bytes) -> None:
        self.publish(key, b"")

    def close(self, linger: float = 1.0) -> None:
        """Close the socket, giving queued updates ``linger`` seconds to leave."""
        self._sock.close(linger=int(linger * 1000))

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
