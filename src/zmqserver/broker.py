"""The broker's I/O shell: two ROUTER sockets feeding the routing core.

All decisions live in routing.py; this module only moves frames between sockets and the
:class:`~zmqserver.routing.Router`, and turns send failures into events the router understands.
The event loop that calls it belongs to the supervisor (one loop, one thread, one poller).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

import zmq

from ._io import recv_batch, recv_batch_with_user_id, send
from .routing import Port, Router

log = logging.getLogger("zmqserver.broker")

#: Messages read from one socket before the loop looks at the other one and at signals, so a
#: flood on one port cannot starve the other.
BATCH = 256

#: How long queued replies may take to leave when the broker closes.
CLOSE_LINGER_MS = 1000


class Broker:
    """Binds the frontend and backend ROUTERs and shuttles frames to and from ``router``."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        router: Router,
        frontend: str,
        backend: str,
        *,
        max_message_size: int = 0,
        secure: Callable[[zmq.Socket[bytes], str], None] | None = None,
        pass_client_key: bool = False,
    ) -> None:
        """``secure(socket, "frontend" | "backend")`` sets security options before each bind."""
        self.router = router
        #: Read each request's ZAP User-Id (the client's CURVE key) and hand it to the router.
        self.pass_client_key = pass_client_key
        self.frontend = self._router_socket(ctx, frontend, "frontend", max_message_size, secure)
        try:
            self.backend = self._router_socket(ctx, backend, "backend", secure=secure)
        except BaseException:
            self.frontend.close(linger=0)
            raise
        self.sockets = {Port.FRONTEND: self.frontend, Port.BACKEND: self.backend}
        self.dropped_replies = 0

    @staticmethod
    def _router_socket(
        ctx: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        name: str,
        max_message_size: int = 0,
        secure: Callable[[zmq.Socket[bytes], str], None] | None = None,
    ) -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.ROUTER)
        # ROUTER_MANDATORY turns "peer gone" into EHOSTUNREACH instead of a silent drop, so a
        # reply to a vanished client is logged and a job for a vanished worker is rerouted.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # HANDOVER lets a client that reconnects with its routing id (our Lazy Pirate client
        # does) take over from its dead connection, so a resend reaches the same pending job.
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if max_message_size:
            # The router answers a request over max_message_size with a clear too_large error.
            # libzmq's own limit, per frame, is a backstop four times higher: a peer that sends a
            # frame that big is disconnected before the broker buffers all of it.
            sock.setsockopt(zmq.MAXMSGSIZE, 4 * max_message_size)
        sock.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        if secure is not None:
            secure(sock, name)  # CURVE, ZAP domain: a listener copies the options at bind time
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise OSError(exc.errno, f"cannot bind the {name} to {endpoint}: {exc}") from exc
        return sock

    def endpoints(self) -> tuple[str, str]:
        """The endpoints actually bound (with real port numbers when bound to port 0)."""
        return (
            self.frontend.getsockopt_string(zmq.LAST_ENDPOINT),
            self.backend.getsockopt_string(zmq.LAST_ENDPOINT),
        )

    def read_frontend(self, now: float) -> None:
        on_client = self.router.on_client
        if self.pass_client_key:
            for frames, user_id in recv_batch_with_user_id(self.frontend, BATCH):
                on_client(frames[0], frames[1:], now, user_id)
            return
        for frames in recv_batch(self.frontend, BATCH):
            on_client(frames[0], frames[1:], now)

    def read_backend(self, now: float) -> None:
        on_worker = self.router.on_worker
        for frames in recv_batch(self.backend, BATCH):
            on_worker(frames[0], frames[1:], now)

    def flush(self) -> None:
        """Send everything the router wants sent; route around peers that are gone."""
        router, sockets = self.router, self.sockets
        while router.outbox:
            for port, identity, frames in router.take_outbox():
                try:
                    send(sockets[port], identity, frames)
                except zmq.ZMQError as exc:
                    if exc.errno not in (errno.EHOSTUNREACH, errno.EAGAIN):
                        raise
                    self._undeliverable(port, identity, exc)

    def _undeliverable(self, port: Port, identity: bytes, exc: zmq.ZMQError) -> None:
        if port is Port.FRONTEND:
            # The client disconnected (or stopped reading) before its reply: the job's one
            # outcome is this logged drop.
            self.dropped_replies += 1
            log.info("reply to client %s dropped: %s", identity.hex(), exc.strerror)
        else:
            # The worker vanished before taking the message: whatever job it carried was never
            # delivered, so it can go to another worker.
            self.router.worker_gone(identity, f"unreachable: {exc.strerror}", undelivered=True)

    def close(self) -> None:
        self.frontend.close()
        self.backend.close()
