"""The metrics port: ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``, ``/status.json`` and
the live dashboard (``/``), over HTTP/1.0-style one-request connections.

Rule 1: a component of the master, with no thread. Its listening socket and its connections
are non-blocking fds in the master's wait; a request is read, answered and the connection
closed within the turn it becomes complete. A response the kernel cannot take at once (a slow
reader of a large page) is finished on later turns, retried every :data:`RETRY` seconds only
while it is pending, so an idle server still sleeps. Connections that send nothing within
:data:`IDLE_TIMEOUT` are dropped, and at most :data:`MAX_CONNECTIONS` are kept (the oldest
goes), so a slow or hostile client cannot hold the master.

Rejected: ``http.server`` in a thread (a second thread in the master that forks workers, and
a lock around the status), and prometheus-client's own server (a thread too).
"""

from __future__ import annotations

import errno
import importlib.resources
import json
import logging
import math
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq

from .._process import Credentials
from ..config import Config
from . import prometheus
from .component import Handle, Host, StartError, WatchItem

if TYPE_CHECKING:
    from .master import Master

log = logging.getLogger("zmqserver")

MAX_REQUEST = 8192
MAX_CONNECTIONS = 64
IDLE_TIMEOUT = 10.0
RETRY = 0.01


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    peer: str
    deadline: float
    inbox: bytes = b""
    outbox: bytes = b""
    writing: bool = False


def _response(status: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def dashboard_page() -> bytes:
    """The dashboard: one static file of the package (HTML, CSS and JS; no CDN, no build)."""
    return importlib.resources.files("zmqserver").joinpath("dashboard.html").read_bytes()


class HttpComponent:
    """The metrics port, in the master's loop."""

    def __init__(self, config: Config) -> None:
        self.listener: socket.socket | None = None
        self.conns: dict[int, _Conn] = {}
        self.master: Master | None = None
        self.address = ("", 0)
        self._page: bytes | None = None

    # -- Component --------------------------------------------------------------------------------

    def open(self, host: Host) -> None:
        from .master import Master

        assert isinstance(host, Master)
        self.master = host
        config = host.config
        assert config.metrics_port is not None
        family = socket.AF_INET6 if ":" in config.metrics_host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((config.metrics_host, config.metrics_port))
            listener.listen(64)
        except OSError as exc:
            listener.close()
            raise StartError(
                f"cannot bind the metrics port {config.metrics_host}:{config.metrics_port}: "
                f"{exc.strerror or exc}"
            ) from exc
        listener.setblocking(False)
        self.listener = listener
        self.address = listener.getsockname()[:2]
        log.info("metrics and dashboard on http://%s:%d/", *self.address)

    def watch(self) -> list[WatchItem]:
        if self.listener is None:
            return []
        items: list[WatchItem] = [(self.listener.fileno(), zmq.POLLIN)]
        items += [(fd, zmq.POLLIN) for fd, conn in self.conns.items() if not conn.writing]
        return items

    def next_deadline(self) -> float:
        if not self.conns:
            return math.inf
        soonest = min(conn.deadline for conn in self.conns.values())
        if any(conn.writing for conn in self.conns.values()):
            return min(soonest, time.monotonic() + RETRY)
        return soonest

    def handle(self, ready: Collection[Handle], now: float) -> None:
        listener = self.listener
        if listener is None:
            return
        if listener.fileno() in ready:
            self._accept(listener, now)
        for fd, conn in list(self.conns.items()):
            if conn.writing:
                self._write(fd, conn)
            elif fd in ready:
                self._read(fd, conn)
            elif now >= conn.deadline:
                self._drop(fd)

    def on_stop(self, graceful: bool) -> None:
        pass  # /readyz says 503 from now on; the rest still answers

    def on_reload(self) -> None:
        self._page = None

    def on_config(self, config: Config) -> None:
        pass

    def owned_paths(self) -> list[str]:
        return []

    def admit_user(self, creds: Credentials) -> None:
        pass

    def close(self) -> None:
        for fd in list(self.conns):
            self._drop(fd)
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    # -- connections ------------------------------------------------------------------------------

    def _accept(self, listener: socket.socket, now: float) -> None:
        for _ in range(MAX_CONNECTIONS):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: try again next turn
                log.warning("metrics port: cannot accept: %s", exc.strerror)
                return
            sock.setblocking(False)
            if len(self.conns) >= MAX_CONNECTIONS:
                oldest = min(self.conns, key=lambda fd: self.conns[fd].deadline)
                self._drop(oldest)
            self.conns[sock.fileno()] = _Conn(sock, str(peer[0]), now + IDLE_TIMEOUT)

    def _read(self, fd: int, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        if not data:
            self._drop(fd)
            return
        conn.inbox += data
        end = conn.inbox.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.inbox) > MAX_REQUEST:
                conn.outbox = _response("431 Request Header Fields Too Large", b"", "text/plain")
                conn.writing = True
                self._write(fd, conn)
            return
        line = conn.inbox.split(b"\r\n", 1)[0].decode("latin-1")
        conn.outbox = self.respond(line)
        conn.writing = True
        self._write(fd, conn)

    def _write(self, fd: int, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                log.debug("metrics port: send failed: %s", exc)
            self._drop(fd)
            return
        conn.outbox = conn.outbox[sent:]
        if not conn.outbox:
            self._drop(fd)

    def _drop(self, fd: int) -> None:
        conn = self.conns.pop(fd, None)
        if conn is not None:
            conn.sock.close()

    # -- routes -----------------------------------------------------------------------------------

    def respond(self, request_line: str) -> bytes:
        """The whole response to one request line (``GET /path HTTP/1.1``)."""
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _response("400 Bad Request", b"bad request\n", "text/plain")
        method, target = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", b"GET only\n", "text/plain")
        master = self.master
        assert master is not None
        if target == "/healthz":
            # Answered from inside the master's loop: that it answers is the loop turning.
            return _response("200 OK", b"ok\n", "text/plain")
        if target == "/readyz":
            ready, why = readiness(master)
            status = "200 OK" if ready else "503 Service Unavailable"
            return _response(status, (why + "\n").encode(), "text/plain")
        if target == "/metrics":
            doc = master.status()
            counters = getattr(getattr(master.view, "dispatcher", None), "metrics", None)
            text = prometheus.render(doc, counters.services if counters is not None else {})
            return _response("200 OK", text.encode(), prometheus.CONTENT_TYPE)
        if target == "/status.json":
            body = json.dumps(master.status()).encode()
            return _response("200 OK", body, "application/json")
        if target in ("/", "/index.html"):
            if self._page is None:
                self._page = dashboard_page()
            return _response("200 OK", self._page, "text/html; charset=utf-8")
        return _response("404 Not Found", b"not found\n", "text/plain")


def readiness(master: Master) -> tuple[bool, str]:
    """Ready when not stopping and every service has a registered (idle or busy) worker."""
    if master.stopping:
        return False, "stopping"
    missing = []
    for pool in master.pools.values():
        state_of = master.view.state_of(pool)
        if not any(state_of(proc).value in ("idle", "busy") for proc in master.flock.current(pool)):
            missing.append(pool.name)
    if missing:
        return False, "no registered worker for: " + ", ".join(missing)
    return True, "ready"
