"""``zmqserver.publish(key, value, ttl=None)``: an app's updates, sent from inside a worker.

The master's pub-sub component sets :data:`route` before any worker is forked (the private
ipc:// collector socket, and the CURVE keys the local workers use when the backend has them);
a forked worker inherits it. A remote pool's master sets it from its config (the broker's
host, port ``pubsub_port`` + 2). Outside a worker, ``ZMQSERVER_PUBSUB`` (an endpoint, the
pub-sub port ``tcp://host:P``) says where to publish.

Lazy: nothing is opened until the first publish, and then one XPUB socket on a context of the
process's own (made after the fork, never inherited), so a worker of an app that never publishes
pays nothing. Not in worker.py (compiled) because it is not on any job's path.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..security.sockets import ClientCredentials
from .endpoints import broker_collector, chp_endpoints

if TYPE_CHECKING:
    import zmq

    from .client import Publisher


@dataclass(frozen=True, slots=True)
class Route:
    """Where this process's updates go: the collector, and the CURVE keys to reach it."""

    collector: str
    credentials: ClientCredentials | None = None
    #: A Binary Star pair's remote pool: the other broker's collector too. Each update goes to
    #: both, as a Publisher given both servers sends it: the passive one keeps it until the
    #: active one publishes it, and publishes it itself if that one dies first (docs/ha.md).
    also: tuple[str, ...] = ()


def pool_route(connect: str, pubsub_port: int) -> Route:
    """A remote pool's route: its broker's host, port ``pubsub_port`` + 2; a pair's pool
    (``connect`` naming both backends, commas between) publishes to both brokers."""
    first, *others = (
        broker_collector(part.strip(), pubsub_port) for part in connect.split(",") if part.strip()
    )
    return Route(first, also=tuple(others))


#: Set by the master before it forks (component.py, or a remote pool's supervisor).
route: Route | None = None

_lock = threading.Lock()
_publisher: Publisher | None = None  # made in this process
_context: zmq.Context[zmq.Socket[bytes]] | None = None
_owner = 0  # the pid that made them: a forked child makes its own


def _current() -> Publisher:
    global _publisher, _context, _owner
    pid = os.getpid()
    if _publisher is not None and _owner == pid:
        return _publisher
    with _lock:
        if _publisher is not None and _owner == pid:
            return _publisher
        where = route
        if where is None:
            env = os.environ.get("ZMQSERVER_PUBSUB")
            if not env:
                raise RuntimeError(
                    "zmqserver.publish: pub-sub is off (set pubsub_port on the server, or "
                    "ZMQSERVER_PUBSUB=tcp://host:PORT outside a worker)"
                )
            where = Route(chp_endpoints(env)[2])
        import zmq

        from .client import Publisher

        # A context of this process's own: one inherited across fork must never be used.
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        publisher = Publisher(
            "",
            collector=[where.collector, *where.also],
            credentials=where.credentials,
            context=ctx,
        )
        _publisher, _context, _owner = publisher, ctx, pid
        return publisher


def flush(linger: float = 2.0) -> None:
    """Let this process's queued updates leave (up to ``linger`` seconds), then close.

    A worker ends with ``os._exit`` (no atexit handlers), so its supervisor calls this first.
    """
    global _publisher, _context
    if _publisher is None or _owner != os.getpid():
        return
    _publisher.close(linger)
    if _context is not None:
        _context.term()
    _publisher = _context = None


def publish(key: str | bytes, value: str | bytes, ttl: float | None = None) -> None:
    """Publish ``key = value`` through the server's pub-sub (an empty value deletes the key;
    ``ttl`` seconds: the server deletes it then). Fire-and-forget, never blocks a job for long:
    the first call waits for its connection (up to 5 s), later ones not at all.
    """
    _current().publish(key, value, ttl)
