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
* HUP re-reads the config, starts a new generation first (as many workers as the old one has)
  and retires the old one only once the new one has said READY, so capacity never dips. If the
  new generation cannot load its app, the old one keeps serving: a bad deploy is not an outage.
* One ``manage_workers`` converges the pool on what the autoscaler (scaling.py, sans-IO) plans;
  TTIN/TTOU move its bounds. Its next deadline joins the poll timeout like the router's.
* A worker that exits in an orderly way (recycled, retired) may have its last reply and its
  DISCONNECT still in flight when SIGCHLD arrives; the router hears of its death only after those
  messages, or a short grace, so a job it finished is never reported lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import zmq

from ._process import (
    Credentials,
    drop_privileges,
    endpoint_label,
    ipc_path,
    remove_pid_file,
    reopen_log_files,
    set_title,
    write_pid_file,
)
from .broker import Broker
from .config import App, Config
from .errors import ConfigError, Status
from .routing import Limits, Router
from .scaling import Member, Policy, Scaler, State
from .security import ServerSecurity
from .worker import BOOT_ERROR, worker_main

log = logging.getLogger("zmqserver")

#: After SIGKILL, how long the master waits for the kernel to hand back its children.
KILL_WAIT = 5.0
#: How long a fast stop (INT) lets workers exit before they are killed.
FAST_STOP_TIMEOUT = 2.0
#: How long the router waits for the last messages of a worker that exited in an orderly way,
#: after its exit is known. They were sent before it exited, so they are in the kernel or in
#: libzmq's I/O thread already: this only bounds the wait if one was lost.
DEPARTURE_GRACE = 1.0
#: How soon to try forking again after fork() failed (out of memory or processes).
SPAWN_RETRY = 1.0

HANDLED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
    signal.SIGUSR1,
)


@dataclass(slots=True, eq=False)
class WorkerProcess:
    pid: int
    identity: bytes
    generation: int
    started: float
    retiring: bool = False


class Arbiter:
    """Runs the broker and keeps the current generation of workers at the autoscaler's size."""

    def __init__(
        self,
        config: Config,
        app: App | None = None,
        *,
        reload: Callable[[], Config] | None = None,
        credentials: Credentials | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """``app`` is a callable already loaded in the master (forked children share it).

        Without it, each worker imports ``config.app`` itself after the fork. ``reload``
        rebuilds the config for HUP; ``credentials`` are taken on after binding; ``on_ready``
        is called once the ports are bound and the pid file written (a daemon's "started").
        """
        self.config = config.validate()
        # Key files are read and checked here, so a bad one stops the server before it binds.
        self.security = ServerSecurity.load(self.config)
        self.app = app
        self.pid = os.getpid()
        self.reload = reload
        self.credentials = credentials
        self.on_ready = on_ready
        self.scaler = Scaler(Policy.from_config(self.config))
        self.scale_deadline = math.inf
        #: During a reload, the new generation grows to at least the old one's size.
        self.reload_floor = 0
        #: What to go back to if the new generation cannot load its app: (config, app).
        self.previous: tuple[Config, App | None] | None = None
        #: Workers that exited in an orderly way, by identity: when the router stops waiting.
        self.departed: dict[bytes, float] = {}
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
            limits=_limits(config),
            now=now,
        )
        # Local workers always connect to a private ipc:// socket (docs/security.md); the
        # configured backend endpoint is bound as well only when it is open to remote pools.
        security = self.security
        try:
            security.start(self.ctx)  # the ZAP handler, before any socket binds
            local = security.local_endpoint()
            self.broker = Broker(
                self.ctx,
                self.router,
                config.frontend_endpoint,
                security.public_backend or local,
                max_message_size=config.max_message_size,
                secure=security.apply,
                pass_client_key=config.pass_client_key,
            )
            front, back = self.broker.endpoints()
            if security.public_backend is not None:
                security.bind_local(self.broker.backend)
        except OSError as exc:
            log.error("%s", exc.strerror or exc)
            if self.broker is not None:
                self.broker.close()
            security.close()
            self.ctx.term()
            return 1
        self.worker_endpoint = local
        back_label = endpoint_label(back) if security.public_backend is not None else "local"
        set_title(f"{config.proc_name} broker {endpoint_label(front)}-{back_label}")
        log.info(
            "zmqserver %d: clients on %s, workers on %s, service %r",
            self.pid,
            front,
            back,
            config.service,
        )
        try:
            self._take_over([front, back, self.worker_endpoint])
            self._install_signals()
            if self.on_ready is not None:
                self.on_ready()
            self._loop()
        except OSError as exc:  # the pid file, or becoming another user
            log.error("cannot start: %s", exc)
            self.exit_code = 1
        finally:
            self._cleanup()
        return self.exit_code

    def _take_over(self, endpoints: list[str]) -> None:
        """Write the pid file, then become ``user``/``group``: what needs root comes first.

        Privileges go before the first fork, so no worker (which runs user code) and no part of
        the master's loop (which parses frames from the network) ever runs as root. The files
        the server must keep using are handed to the new user first: the ipc:// sockets (the
        workers connect to the private one), the log file (USR1 reopens it).
        """
        config = self.config
        if config.pid_file is not None:
            write_pid_file(config.pid_file, self.pid)
        creds = self.credentials
        if creds is None:
            return
        own = [path for path in map(ipc_path, endpoints) if path is not None]
        own += [f for f in (config.log_file, config.pid_file) if f is not None]
        self.security.admit_local_user(creds.uid, creds.gid)
        drop_privileges(creds, own)
        log.info("running as uid %d, gid %d", creds.uid, creds.gid)

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
        zap = self.security.zap_socket
        if zap is not None:
            poller.register(zap, zmq.POLLIN)
        self.manage_workers()
        while True:
            now = time.monotonic()
            router.on_tick(now)
            broker.flush()
            self._kill_hung(router.take_kills())
            deadline = min(
                router.next_deadline(),
                self.scale_deadline,
                min(self.departed.values(), default=math.inf),
            )
            if self.stopping:
                if not self.workers and not self.departed:
                    return
                deadline = min(deadline, self.stop_deadline)
            events = dict(poller.poll(_ms(deadline - now)))
            now = time.monotonic()
            if zap in events:
                self.security.handle_zap()  # handshakes waiting for a yes or no
            if broker.backend in events:
                broker.read_backend(now)
            if broker.frontend in events:
                broker.read_frontend(now)
            if wake_fd in events:
                self._drain_wakeup()
            while self._signals:
                self._handle_signal(self._signals.popleft())
            self.reap()
            self._settle_departures(time.monotonic())
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
        self.security.close()
        if self.ctx is not None:
            self.ctx.term()
        if self.config.pid_file is not None:
            remove_pid_file(self.config.pid_file, self.pid)
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
        """Reload: re-read the config, start a new generation, retire the old one once ready.

        The new generation starts as large as the current one (capacity never dips), each new
        worker imports the app afresh (unless ``preload_app``), and the old workers get SIGTERM
        only once every new one has registered, each finishing its job before it exits.
        """
        if self.stopping:
            return
        if self.reload is not None:
            try:
                fresh = self.reload()
            except ConfigError as exc:
                log.error("HUP: the config is not valid (%s); nothing reloaded", exc)
                return
            self._apply(fresh)
        current = self._current()
        self.reload_floor = max(self.reload_floor, len(current))
        self.generation += 1
        log.info(
            "HUP: starting worker generation %d (%d worker(s))",
            self.generation,
            max(self.reload_floor, self.config.min_servers),
        )
        self.security.reload()

    def _apply(self, fresh: Config) -> None:
        """Take on a reloaded config: the options HUP may change; warn about the others."""
        old = self.config
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(Config):
            before, after = getattr(old, f.name), getattr(fresh, f.name)
            if before == after:
                continue
            if f.metadata.get("reload") and not (f.name == "app" and old.preload_app):
                changes[f.name] = after
                log.info("HUP: %s is now %r (was %r)", f.name, after, before)
            else:
                log.warning("HUP: %s changed to %r; it takes effect after a restart", f.name, after)
        try:
            config = old.replace(**changes).validate()
        except ConfigError as exc:  # a combination of new and kept values
            log.error("HUP: %s; keeping the previous config", exc)
            return
        self.previous = (old, self.app)
        app = self.app
        if "app" in changes:
            app = config.app if callable(config.app) else None
        self._use(config, app)

    def handle_ttin(self) -> None:
        """One worker more, at once; autoscaling keeps at least that many (up to max_servers)."""
        floor = self.scaler.more(len(self._current()))
        log.info("TTIN: at least %d worker(s) now", floor)

    def handle_ttou(self) -> None:
        """One worker fewer (an idle one, gracefully); autoscaling grows no further than that."""
        ceiling = self.scaler.fewer(len(self._current()))
        log.info("TTOU: at most %d worker(s) now", ceiling)

    def handle_usr1(self) -> None:
        """Reopen the log file (logrotate's postrotate); workers follow by themselves."""
        count = reopen_log_files(logging.getLogger("zmqserver"))
        log.info("USR1: reopened %d log file(s)", count)

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
        self.scale_deadline = math.inf
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
            if code == 0 and proc.identity in self.router.workers:
                # An orderly exit (recycled, retired, stopped) happens between jobs, after the
                # last reply and a DISCONNECT were sent; SIGCHLD can overtake them. Declaring
                # the worker dead now would report a finished job as lost.
                self.departed[proc.identity] = time.monotonic() + DEPARTURE_GRACE
            else:
                self.router.worker_gone(proc.identity, f"process {pid} ended with {how}")
            if code == BOOT_ERROR and not self.stopping and not proc.retiring:
                if not self._roll_back(proc):
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

    def _settle_departures(self, now: float) -> None:
        """Tell the router about orderly exits whose goodbye never came (see :meth:`reap`)."""
        assert self.router is not None
        for identity, due in list(self.departed.items()):
            if identity not in self.router.workers:
                del self.departed[identity]  # its DISCONNECT arrived: the router knows
            elif now >= due:
                del self.departed[identity]
                self.router.worker_gone(identity, "it exited without a DISCONNECT")

    def _roll_back(self, failed: WorkerProcess) -> bool:
        """A worker of a new generation could not load its app: keep the old generation.

        Returns False when there is nothing to go back to (no reload in progress), and the
        server must stop instead. The old workers join a fresh generation number, so the failed
        one's workers, retired here, are the only "old" ones left.
        """
        old = [
            p for p in self.workers.values() if p.generation != self.generation and not p.retiring
        ]
        if failed.generation != self.generation or not old:
            return False
        log.error(
            "HUP: worker generation %d could not load the app %r (see above); the %d worker(s) "
            "of the previous generation keep serving",
            self.generation,
            self.config.app,
            len(old),
        )
        if self.previous is not None:
            self._use(*self.previous)
            self.previous = None
        for proc in self._current():
            proc.retiring = True
            self._signal(proc.pid, signal.SIGTERM)
        self.generation += 1
        for proc in old:
            proc.generation = self.generation
        self.reload_floor = 0
        return True

    def _use(self, config: Config, app: App | None) -> None:
        """Run with ``config`` from now on (HUP, or going back on a failed one)."""
        self.config, self.app = config, app
        self.scaler.reset(Policy.from_config(config))
        logging.getLogger("zmqserver").setLevel(config.log_level_number)
        if self.router is not None:
            self.router.limits = _limits(config)

    def _current(self) -> list[WorkerProcess]:
        """Workers of the current generation that are not on their way out."""
        return [
            p for p in self.workers.values() if p.generation == self.generation and not p.retiring
        ]

    def manage_workers(self) -> None:
        """Carry out the autoscaler's plan; retire an old generation once the new one is ready."""
        if self.stopping:
            return
        router = self.router
        assert router is not None
        now = time.monotonic()
        old = [
            p for p in self.workers.values() if p.generation != self.generation and not p.retiring
        ]
        if not old:
            self.reload_floor = 0
        idle = set(router.idle_workers())
        members = [
            Member(p.pid, p.started, _state(p.identity, idle, router.workers))
            for p in self._current()
        ]
        plan = self.scaler.plan(
            members,
            now,
            backlog=router.waiting(),
            oldest=router.oldest_queued(),
            floor=self.reload_floor,
        )
        self.scale_deadline = plan.deadline
        if plan.spawn:
            # Replacing exited workers is logged where they exit; growth is news.
            level = logging.DEBUG if plan.reason.startswith("below") else logging.INFO
            log.log(level, "starting %d worker(s): %s", plan.spawn, plan.reason)
            for _ in range(plan.spawn):
                self.spawn()
        if plan.retire:
            log.info("retiring %d worker(s): %s", len(plan.retire), plan.reason)
            self._retire([self.workers[pid] for pid in plan.retire], len(plan.retire))
        if old and all(p.identity in router.workers for p in self._current()):
            log.info("generation %d ready; retiring %d old worker(s)", self.generation, len(old))
            self._retire(old, len(old))
            self.previous = None  # the reload is done: nothing to roll back to any more

    def _retire(self, candidates: list[WorkerProcess], count: int) -> None:
        """Gracefully stop ``count`` workers: idle ones first, then the oldest.

        SIGTERM lets a worker finish its job; one that was idle sends DISCONNECT, and a job the
        router handed it meanwhile goes back to the queue unread.
        """
        assert self.router is not None
        idle = set(self.router.idle_workers())
        ranked = sorted(candidates, key=lambda p: (p.identity not in idle, p.started))
        for proc in ranked[:count]:
            proc.retiring = True
            self._signal(proc.pid, signal.SIGTERM)

    def spawn(self) -> None:
        now = time.monotonic()
        # Our signals stay blocked across the fork until the child has dropped the master's
        # handlers: a SIGTERM from stop() that reached the child before that would be swallowed
        # by the master's handler (copied into the child), and the worker would run on until
        # killed. Blocked, it stays pending and the default action takes it.
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:  # EAGAIN, ENOMEM: the next loop turn plans again
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            log.error("cannot start a worker: %s", exc.strerror)
            self.scale_deadline = min(self.scale_deadline, now + SPAWN_RETRY)
            return
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            identity = _identity(pid)
            if self.departed.pop(identity, None) is not None:
                # The pid was reused within the grace: the old worker's goodbye will not come.
                assert self.router is not None
                self.router.worker_gone(identity, "its pid was reused")
            self.workers[pid] = WorkerProcess(pid, identity, self.generation, now)
            log.debug("spawned worker %d (generation %d)", pid, self.generation)
            return
        # In the child. Nothing here may return into the master's loop: always os._exit.
        code = 1
        try:
            self._reset_child_state()
            code = worker_main(
                self.config,
                self.app,
                _identity(os.getpid()),
                self.worker_endpoint,
                self.pid,
                credentials=self.security.worker_credentials,
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
            # HUP, TTIN, TTOU, USR1 are the master's business; their default actions (end,
            # stop, end) would hit a worker that got one meant for its process group.
            master_only = sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1)
            signal.signal(sig, signal.SIG_IGN if master_only else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)  # blocked by spawn()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._signals.clear()
        self.workers.clear()
        self.departed.clear()


def _ms(seconds: float) -> int:
    """A poll timeout in whole milliseconds, rounded up so the loop never wakes early and spins."""
    return max(0, math.ceil(seconds * 1000))


def _limits(config: Config) -> Limits:
    """The router's reliability policy, from the config (again on HUP)."""
    return Limits(
        job_timeout=config.job_timeout,
        kill_grace=config.kill_grace,
        retry_jobs=config.retry_jobs,
        max_attempts=config.max_attempts,
        max_queue=config.max_queue,
        max_message_size=config.max_message_size,
        reply_cache=config.reply_cache,
    )


def _state(identity: bytes, idle: set[bytes], registered: Mapping[bytes, object]) -> State:
    if identity in idle:
        return State.IDLE
    if identity in registered:
        return State.BUSY
    return State.BOOTING


def _identity(pid: int) -> bytes:
    """A local worker's routing id. The master knows it from the pid alone, with no handshake."""
    return b"pid:%d" % pid
