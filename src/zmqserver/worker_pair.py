"""A remote worker of a Binary Star pair: registered with both brokers, it serves the active one.

``zmqserver worker --connect tcp://A:6661 --connect tcp://B:6661`` (docs/ha.md). Each worker
holds one DEALER socket per broker and registers (READY) with each. Nothing tells a worker which
broker is active, and nothing needs to: a passive broker keeps its clients' requests unanswered
(supervisor/ha_side.py), so it has no job to send; only the active one dispatches. When the pair
fails over, the new active broker already has the workers, registered and idle, with their
credit: the move costs no reconnection, no new handshake and no wait for a silence to be noticed.

Rejected: one broker at a time, moving on to the next when the current one goes silent (the
Paranoid Pirate liveness every worker already has). The move would wait for that silence
(``heartbeat_liveness`` heartbeats) and then for a handshake, during which the new active
broker has no remote worker; and a worker that lands on the passive broker would need a new
message to be sent on, since the passive broker is alive and answers heartbeats.

What the two registrations cost: a heartbeat each way per broker (the idle one's are read at
each heartbeat, so under steady load from the active broker the loop still never waits), and
each broker counting the worker in its status. Credit is per broker, as each broker keeps it;
a worker runs one job at a time whichever broker sent it, so two active brokers (a split brain,
which the pair resolves within a heartbeat) would each get their share of it, and no job is
sent to both: a job is only ever at the broker its client sent it to. A job running when its
broker dies is answered into the void; its client resends it to the other broker, where it runs
again (the at-least-once of a failover, docs/ha.md).

A broker that sends DISCONNECT (it restarted and does not know this worker, or it is stopping)
gets a fresh registration instead of the worker's exit, at most once a heartbeat: the other
broker may be the active one, and the worker is busy for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import zmq

from ._process import parent_alive
from .errors import ProtocolError
from .protocol import (
    Disconnect,
    JobRequest,
    encode_disconnect,
    encode_heartbeat,
    parse_broker_message,
)
from .status import Report

if TYPE_CHECKING:
    from .security.handshakes import Handshakes
    from .worker import Worker

log = logging.getLogger("zmqserver.worker")

#: Longest extra wait between reconnection attempts to a silent broker (as worker.py's).
MAX_RECONNECT_BACKOFF = 32.0
#: Messages read from a broker that is not the one sending jobs, at each heartbeat at most.
_IDLE_READ_BUDGET = 16
#: Time the last DISCONNECT may take to leave (as worker.py's EXIT_LINGER_MS).
_EXIT_LINGER_MS = 2000

#: What one message from a broker was.
HEARD, JOB, DISCONNECTED = 0, 1, 2


class Link:
    """The worker's registration with one broker of the pair."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.sock: zmq.Socket[bytes] | None = None
        self.recv: Callable[[], list[bytes] | None] = _nothing
        self.send: Callable[[list[bytes]], None] = _drop
        self.fd = -1
        self.handshakes: Handshakes | None = None
        #: When the broker last said anything but DISCONNECT.
        self.seen = 0.0
        #: Extra patience after each reconnection that met silence again.
        self.backoff = 0.0
        #: A DISCONNECT before this time is not acted on (one fresh registration a heartbeat).
        self.reopen_after = 0.0
        #: The broker was told about in the log as gone (said once until it answers again).
        self.gone_logged = False


def _nothing() -> list[bytes] | None:
    return None


def _drop(frames: list[bytes]) -> None:
    pass


class Links:
    """The worker's links, and the poller that waits on them (and on the signal pipe)."""

    def __init__(self, worker: Worker, endpoints: list[str]) -> None:
        self.worker = worker
        self.links = [Link(endpoint) for endpoint in endpoints]
        self.poller = select.poll()
        self.by_fd: dict[int, Link] = {}

    def open(self, link: Link, now: float) -> None:
        """A fresh socket and READY to ``link``'s broker (closing the old one)."""
        worker = self.worker
        self.close(link, 0)
        sock = worker._connect(link.endpoint)
        link.sock, link.recv, link.send = sock, worker._recv, worker._send
        link.fd = worker._sock_fd
        link.handshakes, worker._handshakes = worker._handshakes, None
        link.seen = now
        self.by_fd[link.fd] = link
        self.poller.register(link.fd, select.POLLIN)
        # The heartbeat thread heartbeats every broker while a job runs.
        worker._busy.also([x.sock for x in self.links if x.sock is not None])

    def close(self, link: Link, linger: int) -> None:
        if link.sock is None:
            return
        self.poller.unregister(link.fd)
        del self.by_fd[link.fd]
        if link.handshakes is not None:
            link.handshakes.close()
            link.handshakes = None
        link.sock.close(linger=linger)
        link.sock, link.recv, link.send, link.fd = None, _nothing, _drop, -1


def deliver(worker: Worker, link: Link, frames: list[bytes]) -> int:
    """Act on one message from ``link``'s broker: :data:`JOB` if it was a job (run, and
    answered on that link), :data:`DISCONNECTED`, or :data:`HEARD` (a heartbeat)."""
    try:
        msg = parse_broker_message(frames)
    except ProtocolError as exc:
        log.warning("worker %d: ignoring malformed message from broker: %s", os.getpid(), exc)
        return HEARD
    if isinstance(msg, JobRequest):
        # The reply goes back on the socket the job came from.
        worker.sock, worker._send = link.sock, link.send
        worker._run_job(msg)
        return JOB
    if isinstance(msg, Disconnect):
        return DISCONNECTED
    return HEARD


def run_pair(worker: Worker, endpoints: list[str]) -> int:
    """The worker's loop with one registration per broker; the exit code, as ``Worker.run``."""
    worker._install_signals()
    links = Links(worker, endpoints)
    now = time.monotonic()
    for link in links.links:
        links.open(link, now)
    wake_fd = worker._wakeup.fileno()
    links.poller.register(wake_fd, select.POLLIN)
    try:
        return _loop(worker, links, wake_fd)
    finally:
        _leave(worker, links)


def _loop(worker: Worker, links: Links, wake_fd: int) -> int:
    config = worker.config
    interval = config.heartbeat_interval
    silence_limit = interval * config.heartbeat_liveness
    all_links = links.links
    current = all_links[0]  # the broker that sent the last job: read first
    now = time.monotonic()
    heartbeat_at = now + interval
    while not worker.stopping:
        link = current
        frames = link.recv()
        if frames is None:
            # Every socket's ZMQ_FD is edge-triggered (worker.py's run()): each must have been
            # read empty before the poll below is a complete wait.
            for other in all_links:
                if other is not current:
                    frames = other.recv()
                    if frames is not None:
                        link = other
                        break
        if frames is None:
            events = links.poller.poll(int(max(0.0, heartbeat_at - now) * 1000) + 1)
            now = time.monotonic()
            for fd, _ in events:
                if fd == wake_fd:
                    worker._wakeup.drain()
                elif frames is None and not worker.stopping and fd in links.by_fd:
                    link = links.by_fd[fd]
                    frames = link.recv()
        if frames is not None and _heard(worker, links, link, frames, now) == JOB:
            current = link
            if _should_exit(worker):
                break
            now = link.seen = time.monotonic()
        if (frames is None or now >= heartbeat_at) and worker._master_gone():
            return 0
        if now >= heartbeat_at:
            heartbeat_at = now + interval
            for other in all_links:
                if other.sock is not None:
                    with contextlib.suppress(zmq.Again):
                        other.sock.send_multipart(encode_heartbeat(), zmq.NOBLOCK)
                if other is not current:
                    # Under steady load from the active broker the loop never waits: read the
                    # other broker's heartbeats here, or it would look silent.
                    for _ in range(_IDLE_READ_BUDGET):
                        frames = other.recv()
                        if frames is None:
                            break
                        if _heard(worker, links, other, frames, now) == JOB:
                            current = other
                            now = other.seen = time.monotonic()
        for other in all_links:
            if now - other.seen > silence_limit + other.backoff:
                # Paranoid Pirate, per broker: a fresh connection and READY, waiting longer
                # after each attempt that meets silence again.
                if other.handshakes is not None and other.handshakes.refused():
                    log.error(
                        "worker %d: the broker at %s did not answer the handshake: check "
                        "server_key / key_file / backend_allow; retrying, less and less often",
                        os.getpid(),
                        other.endpoint,
                    )
                elif not other.gone_logged:
                    log.warning(
                        "worker %d: no word from the broker at %s in %.1fs; reconnecting",
                        os.getpid(),
                        other.endpoint,
                        now - other.seen,
                    )
                    other.gone_logged = True
                links.open(other, now)
                other.backoff = min(max(2 * other.backoff, interval), MAX_RECONNECT_BACKOFF)
    return 0


def _heard(worker: Worker, links: Links, link: Link, frames: list[bytes], now: float) -> int:
    """One message from ``link``'s broker; a DISCONNECT re-registers (once a heartbeat)."""
    what = deliver(worker, link, frames)
    if what == DISCONNECTED:
        if now >= link.reopen_after:
            log.info(
                "worker %d: the broker at %s sent DISCONNECT; registering again",
                os.getpid(),
                link.endpoint,
            )
            links.open(link, now)
            link.reopen_after = now + worker.config.heartbeat_interval
        return what
    link.seen = now
    link.backoff = 0.0
    if link.gone_logged:
        log.info("worker %d: the broker at %s answers again", os.getpid(), link.endpoint)
        link.gone_logged = False
    if worker.status is not None:
        worker.status(Report.IDLE)  # a broker answers: registered (or a job)
    return what


def _should_exit(worker: Worker) -> bool:
    """max_requests / max_worker_memory, checked between jobs as worker.py does."""
    if worker.max_jobs and worker.jobs_done >= worker.max_jobs:
        log.info("worker %d served %d jobs (max_requests); exiting", os.getpid(), worker.jobs_done)
        return True
    return bool(worker.config.max_worker_memory and worker._over_memory())


def _leave(worker: Worker, links: Links) -> None:
    """Tell every broker (an orderly exit), and close every socket but the one
    ``Worker.close`` closes (``worker.sock``)."""
    alive = parent_alive(worker.master_pid)
    for link in links.links:
        if link.sock is not None and alive:
            with contextlib.suppress(zmq.Again):
                link.sock.send_multipart(encode_disconnect(), zmq.NOBLOCK)
    keep = links.links[0]
    worker.sock = keep.sock
    worker._handshakes, keep.handshakes = keep.handshakes, None
    worker._busy.also([])
    for link in links.links[1:]:
        links.close(link, _EXIT_LINGER_MS if alive else 0)
