"""The master process: one event loop that runs the broker and supervises the worker pool.

Shape borrowed from gunicorn's arbiter, minus its historical scars:

* Signal handlers only append the signal number to a queue. CPython's C-level handler also writes
  a byte to a socketpair registered with ``signal.set_wakeup_fd``; that socket sits in the same
  ``zmq.Poller`` as the two ROUTER sockets, so a signal interrupts the wait at once and is handled
  in the loop, never in the handler. The wait's timeout comes from the next deadline (heartbeats,
  shutdown), never from a fixed polling interval: an idle server sleeps.
* Children are reaped in the loop with ``waitpid(-1, WNOHANG)`` until there are none left to reap.
* A worker that exits with :data:`~zmqserver.worker.BOOT_ERROR` (the app failed to import) halts
  the server instead of feeding a fork loop.
* HUP starts a new generation first and retires the old one only once the new one has said READY,
  so capacity never dips; TTIN/TTOU move a target count and one ``manage_workers`` converges.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import zmq

from ._process import endpoint_label, set_title
from .broker import Broker
from .config import App, Config
from .errors import Status
from .routing import Limits, Router
from .worker import BOOT_ERROR, worker_main

log = logging.getLogger("zmqserver")

#: After SIGKILL, how long the master waits for the kernel to hand back its children.
KILL_WAIT = 5.0
#: How long a fast stop (INT) lets workers exit before they are killed.
FAST_STOP_TIMEOUT = 2.0

HANDLED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
)


@dataclass(slots=True, eq=False)
class WorkerProcess:
    pid: int
    identity: bytes
    generation: int
    started: float
    retiring: bool = False


class Arbiter:
    """Runs the broker and keeps ``target`` workers of the current generation alive."""

    def __init__(self, config: Config, app: App | None = None) -> None:
        """``app`` is a callable already loaded in the master (forked children share it).

        Without it, each worker imports ``config.app`` itself after the fork.
        """
        self.config = config.validate()
        self.app = app
        self.pid = os.getpid()
        self.target = config.min_servers
        self.generation = 0
        self.workers: dict[int, WorkerProcess] = {}
        self.exit_code = 0
        self.stopping = False
        self.stop_deadline = 0.0
        self.killed = False
        self._signals: deque[int] = deque()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self.ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self.broker: Broker | None = None
        self.router: Router | None = None
        self.worker_endpoint = ""

    # -- lifecycle --------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; return the process exit code."""
        config = self.config
        self.ctx = zmq.Context()
        now = time.monotonic()
        self.router = Router(
            config.service.encode(),
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_liveness=config.heartbeat_liveness,
            limits=Limits(
                job_timeout=config.job_timeout,
                kill_grace=config.kill_grace,
                retry_jobs=config.retry_jobs,
                max_attempts=config.max_attempts,
                max_queue=config.max_queue,
                max_message_size=config.max_message_size,
                reply_cache=config.reply_cache,
            ),
            now=now,
        )
        try:
            self.broker = Broker(
                self.ctx,
                self.router,
                config.frontend_endpoint,
                config.backend_endpoint,
                max_message_size=config.max_message_size,
            )
        except OSError as exc:
            log.error("%s", exc.strerror or exc)
            self.ctx.term()
            return 1
        front, back = self.broker.endpoints()
        self.worker_endpoint = _connectable(back)
        set_title(f"{config.proc_name} broker {endpoint_label(front)}-{endpoint_label(back)}")
        log.info(
            "zmqserver %d: clients on %s, workers on %s, service %r",
            self.pid,
            front,
            back,
            config.service,
        )
        self._install_signals()
        try:
            self._loop()
        finally:
            self._cleanup()
        return self.exit_code

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)

    def _loop(self) -> None:
        assert self.broker is not None
        assert self.router is not None
        assert self._wake_r is not None
        broker, router = self.broker, self.router
        poller = zmq.Poller()
        poller.register(broker.frontend, zmq.POLLIN)
        poller.register(broker.backend, zmq.POLLIN)
        wake_fd = self._wake_r.fileno()
        poller.register(wake_fd, zmq.POLLIN)
        self.manage_workers()
        while True:
            now = time.monotonic()
            router.on_tick(now)
            broker.flush()
            self._kill_hung(router.take_kills())
            deadline = router.next_deadline()
            if self.stopping:
                if not self.workers:
                    return
                deadline = min(deadline, self.stop_deadline)
            events = dict(poller.poll(_ms(deadline - now)))
            now = time.monotonic()
            if broker.backend in events:
                broker.read_backend(now)
            if broker.frontend in events:
                broker.read_frontend(now)
            if wake_fd in events:
                self._drain_wakeup()
            while self._signals:
                self._handle_signal(self._signals.popleft())
            self.reap()
            self.manage_workers()
            if self.stopping and time.monotonic() >= self.stop_deadline:
                self._kill_all()
            broker.flush()
            self._kill_hung(router.take_kills())

    def _drain_wakeup(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(256):
                pass
        except BlockingIOError:
            pass

    def _cleanup(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self._kill_all()
        if self.router is not None and self.broker is not None:
            self.router.shutdown()
            self.router.fail_running(Status.SHUTTING_DOWN, "server stopped")
            self.broker.flush()
            self.broker.close()
        if self.ctx is not None:
            self.ctx.term()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        log.info("zmqserver %d: stopped", self.pid)

    # -- signals ----------------------------------------------------------------------------------

    def _handle_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        handler = getattr(self, f"handle_{name[3:].lower()}", None)
        if handler is not None:
            handler()

    def handle_chld(self) -> None:
        """Reaping happens on every loop turn; the signal only needed to wake the loop."""

    def handle_term(self) -> None:
        self.stop(graceful=True)

    handle_quit = handle_term

    def handle_int(self) -> None:
        self.stop(graceful=False)

    def handle_hup(self) -> None:
        """Start a new generation of workers; the old one retires once the new one is READY."""
        if self.stopping:
            return
        self.generation += 1
        log.info("HUP: starting worker generation %d", self.generation)

    def handle_ttin(self) -> None:
        if self.target < self.config.max_servers:
            self.target += 1
        log.info("TTIN: target is now %d worker(s)", self.target)

    def handle_ttou(self) -> None:
        if self.target > 1:
            self.target -= 1
        log.info("TTOU: target is now %d worker(s)", self.target)

    # -- stopping ---------------------------------------------------------------------------------

    def stop(self, graceful: bool, exit_code: int = 0) -> None:
        """Stop taking jobs and stop the workers: gracefully (finish running jobs) or now."""
        assert self.router is not None
        if exit_code:
            self.exit_code = exit_code
        if self.stopping and graceful:
            return
        timeout = self.config.graceful_timeout if graceful else FAST_STOP_TIMEOUT
        log.info(
            "%s stop: %d worker(s) to stop within %.1fs",
            "graceful" if graceful else "fast",
            len(self.workers),
            timeout,
        )
        self.stopping = True
        self.stop_deadline = time.monotonic() + timeout
        self.router.shutdown()
        if not graceful:
            self.router.fail_running(Status.SHUTTING_DOWN, "server stopped before the job ended")
        sig = signal.SIGTERM if graceful else signal.SIGINT
        for proc in self.workers.values():
            self._signal(proc.pid, sig)

    def _kill_all(self) -> None:
        """SIGKILL every remaining worker and wait (bounded) until the kernel reaps them."""
        if not self.workers:
            return
        if not self.killed:
            log.warning("killing %d worker(s) that did not stop in time", len(self.workers))
            self.killed = True
        for proc in self.workers.values():
            self._signal(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT
        while self.workers and time.monotonic() < deadline:
            self.reap(block=True)

    def _kill_hung(self, identities: list[bytes]) -> None:
        """SIGKILL the local workers the router gave up on (silent, or past a job's deadline).

        The router has already answered or rerouted their jobs; reaping starts a replacement.
        Workers that are not ours (remote pools) were sent DISCONNECT, which is all we can do.
        """
        for identity in identities:
            for proc in self.workers.values():
                if proc.identity == identity:
                    log.warning("killing hung worker %d", proc.pid)
                    self._signal(proc.pid, signal.SIGKILL)

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    # -- workers ----------------------------------------------------------------------------------

    def reap(self, block: bool = False) -> None:
        """Collect every exited child and tell the router about the workers among them."""
        assert self.router is not None
        while self.workers:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                return
            if pid == 0:
                return
            proc = self.workers.pop(pid, None)
            if proc is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
            self.router.worker_gone(proc.identity, f"process {pid} ended with {how}")
            if code == BOOT_ERROR and not self.stopping:
                log.error(
                    "worker %d could not load the app %r (see above); stopping the server",
                    pid,
                    self.config.app,
                )
                self.stop(graceful=False, exit_code=BOOT_ERROR)
            elif self.stopping or proc.retiring:
                log.debug("worker %d exited (%s)", pid, how)
            elif code != 0:
                log.warning("worker %d died (%s); starting a new one", pid, how)
            else:
                log.info("worker %d exited; starting a new one", pid)
            if block:
                return

    def manage_workers(self) -> None:
        """Converge the pool on ``target`` workers of the current generation."""
        if self.stopping:
            return
        assert self.router is not None
        current = [
            p for p in self.workers.values() if p.generation == self.generation and not p.retiring
        ]
        for _ in range(self.target - len(current)):
            self.spawn()
        if len(current) > self.target:
            self._retire(current, len(current) - self.target)
        old = [
            p for p in self.workers.values() if p.generation != self.generation and not p.retiring
        ]
        if old:
            fresh = [p for p in self.workers.values() if p.generation == self.generation]
            if all(p.identity in self.router.workers for p in fresh):
                log.info(
                    "generation %d ready; retiring %d old worker(s)", self.generation, len(old)
                )
                self._retire(old, len(old))

    def _retire(self, candidates: list[WorkerProcess], count: int) -> None:
        """Gracefully stop ``count`` workers: idle ones first, then the oldest."""
        assert self.router is not None
        idle = set(self.router.idle_workers())
        ranked = sorted(candidates, key=lambda p: (p.identity not in idle, p.started))
        for proc in ranked[:count]:
            proc.retiring = True
            self._signal(proc.pid, signal.SIGTERM)

    def spawn(self) -> None:
        now = time.monotonic()
        pid = os.fork()
        if pid:
            identity = _identity(pid)
            self.workers[pid] = WorkerProcess(pid, identity, self.generation, now)
            log.debug("spawned worker %d (generation %d)", pid, self.generation)
            return
        # In the child. Nothing here may return into the master's loop: always os._exit.
        code = 1
        try:
            self._reset_child_state()
            code = worker_main(
                self.config, self.app, _identity(os.getpid()), self.worker_endpoint, self.pid
            )
        except BaseException:
            log.exception("worker %d crashed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)

    def _reset_child_state(self) -> None:
        """Drop what the child inherited from the master's loop (never its ZeroMQ context)."""
        signal.set_wakeup_fd(-1)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._signals.clear()
        self.workers.clear()


def _ms(seconds: float) -> int:
    """A poll timeout in whole milliseconds, rounded up so the loop never wakes early and spins."""
    return max(0, math.ceil(seconds * 1000))


def _identity(pid: int) -> bytes:
    """A local worker's routing id. The master knows it from the pid alone, with no handshake."""
    return b"pid:%d" % pid


def _connectable(endpoint: str) -> str:
    """Where a local worker connects for a backend bound to ``endpoint``."""
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        if host in ("0.0.0.0", "*", ""):
            host = "127.0.0.1"
        elif host in ("[::]", "::"):
            host = "[::1]"
        return f"tcp://{host}:{port}"
    return endpoint
