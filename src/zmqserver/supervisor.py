"""The master process: one event loop that supervises the worker pools, and runs the broker.

Shape borrowed from gunicorn's arbiter, minus its historical scars:

* Signal handlers only append the signal number to a queue. CPython's C-level handler also writes
  a byte to a socketpair registered with ``signal.set_wakeup_fd``; that socket sits in the same
  poll as the two ROUTER sockets, so a signal interrupts the wait at once and is handled in the
  loop, never in the handler. The wait's timeout comes from the next deadline (heartbeats,
  shutdown), never from a fixed polling interval: an idle server sleeps. The Arbiter runs the
  turns that only move messages inside the compiled broker (``Broker.serve``), which returns to
  this loop whenever any of the above, or the autoscaler, has something to do.
* Children are reaped in the loop with ``waitpid(-1, WNOHANG)`` until there are none left to reap.
* A worker that exits with :data:`~zmqserver.worker.BOOT_ERROR` (the app failed to import) halts
  the server instead of feeding a fork loop.
* HUP re-reads the config, starts a new generation first (as many workers as the old one has)
  and retires the old one only once the new one has said READY, so capacity never dips. If the
  new generation cannot load its app, the old one keeps serving: a bad deploy is not an outage.
* One ``manage_workers`` converges each pool on what its autoscaler (scaling.py, sans-IO) plans;
  TTIN/TTOU move its bounds. Its next deadline joins the poll timeout like the router's.
* A worker that exits in an orderly way (recycled, retired) may have its last reply and its
  DISCONNECT still in flight when SIGCHLD arrives; the router hears of its death only after those
  messages, or a short grace, so a job it finished is never reported lost.

There is one pool per service (``services``; a server with one app has one pool). Each pool has
its own options, app, autoscaler and generation number, and the router a queue per service;
signals act on every pool: HUP reloads them all, TTIN and TTOU add or retire one worker in each.

:class:`Supervisor` is all of the above. :class:`Arbiter` adds the broker (both ROUTER sockets,
the routing core, ZAP) and learns its workers' states from the router; :class:`PoolSupervisor` is
a remote pool (``zmqserver worker --connect``): no broker, workers connect to another host's
backend, and their states come from a status pipe (status.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import secrets
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
from .broker import Broker, Dispatcher, Limits, poll_timeout_ms
from .config import App, Config, ServiceSpec
from .errors import ConfigError, Status
from .scaling import Member, Policy, Scaler, State
from .security import ClientCredentials, ServerSecurity
from .status import Report, StatusChannel, StatusWriter
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
#: How long the autoscaler may lag behind traffic. Jobs coming and going change which workers
#: are idle many thousand times a second; planning on each change cost the broker a sizeable
#: part of its CPU (with 100 workers, a third). So such a change only schedules a look this
#: much later, and the plan sees the pools as they are then. What must not wait (a signal, an
#: exited child, a worker registering or leaving, a deadline the last plan asked for) gets
#: a look at once.
SCALE_CHECK = 0.05

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
class Pool:
    """One service's workers: its options and app, its autoscaler, its generation number."""

    name: str
    config: Config
    app: App | None  # loaded in the master (a callable, or preload_app); None: workers import it
    scaler: Scaler
    generation: int = 0
    #: During a reload, the new generation grows to at least the old one's size.
    reload_floor: int = 0
    #: What to go back to if the new generation cannot load its app: (config, app).
    previous: tuple[Config, App | None] | None = None

    def use(self, config: Config, app: App | None) -> None:
        """Run with ``config`` from now on (HUP, or going back on a failed one)."""
        self.config, self.app = config, app
        self.scaler.reset(Policy.from_config(config))


@dataclass(slots=True, eq=False)
class WorkerProcess:
    pid: int
    identity: bytes
    pool: Pool
    generation: int
    started: float
    retiring: bool = False


#: How a worker looks from outside this turn: booting, idle, busy or detached.
StateOf = Callable[[WorkerProcess], State]


class Supervisor:
    """Keeps each service's current generation of workers at its autoscaler's size.

    What a subclass adds: where workers connect, how the master learns their states
    (:meth:`_state_of`, :meth:`_backlog`), and the sockets or pipes its loop waits on.
    """

    def __init__(
        self,
        config: Config,
        apps: Mapping[str, App] | None = None,
        *,
        reload: Callable[[], Config] | None = None,
        credentials: Credentials | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """``apps`` are the callables already loaded in the master, by service name (forked
        children share them); any other service's workers import its app after the fork.

        ``reload`` rebuilds the config for HUP; ``credentials`` are taken on once the master has
        what needs root; ``on_ready`` is called once it is up (a daemon's "started").
        """
        self.config = config.validate()
        apps = apps or {}
        self.pools = {
            name: Pool(name, service, apps.get(name), Scaler(Policy.from_config(service)))
            for name, service in self._service_configs(self.config).items()
        }
        self.pid = os.getpid()
        self.reload = reload
        self.credentials = credentials
        self.on_ready = on_ready
        self.scale_deadline = math.inf
        #: Something changed that the autoscaler must see at once (see SCALE_CHECK).
        self._scale_now = True
        #: Traffic changed the pools' states: when the autoscaler looks (infinity: no change).
        self._scale_check_at = math.inf
        #: What the pools looked like to the last plan (:meth:`_scale_inputs`).
        self._scale_seen: tuple[int, ...] = ()
        #: SIGCHLD came: a child is waiting to be reaped.
        self._reap_due = False
        #: Workers that exited in an orderly way, by identity: when the router stops waiting.
        self.departed: dict[bytes, float] = {}
        self.workers: dict[int, WorkerProcess] = {}
        self.exit_code = 0
        self.stopping = False
        self.stop_deadline = 0.0
        self.killed = False
        self._signals: deque[int] = deque()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        #: Where workers connect, and their CURVE keys if the backend wants them.
        self.worker_endpoint = ""
        self.worker_credentials: ClientCredentials | None = None

    # -- what subclasses provide ------------------------------------------------------------------

    def _service_configs(self, config: Config) -> dict[str, Config]:
        return config.service_configs()

    def _open(self) -> bool:
        """Bind or open what the loop waits on; False (having logged why) if it cannot."""
        raise NotImplementedError

    def _register(self, poller: zmq.Poller) -> None:
        """Add the subclass's sockets and file descriptors to the loop's poller."""

    def _before_wait(self, now: float) -> float:
        """Work due at ``now`` before the loop sleeps (sending what the turn produced, too);
        the deadline it must wake up for."""
        return math.inf

    def _on_events(self, events: dict[Any, int], now: float) -> None:
        """Read what became readable."""

    def _scale_inputs(self) -> tuple[int, ...]:
        """A cheap summary of what the autoscalers see, compared each turn (see SCALE_CHECK).

        A change in the first number (a worker registered or left) is acted on at once; a change
        in the others (idle workers, queued jobs) within SCALE_CHECK.
        """
        return ()

    def _close(self) -> None:
        """Release what :meth:`_open` made (the workers are gone by now)."""

    def _on_stop(self, graceful: bool) -> None:
        """Stop taking jobs (a broker answers queued jobs)."""

    def _on_reload(self) -> None:
        """HUP: reload what is not in the config (key directories)."""

    def _on_config(self) -> None:
        """The pools' configs changed (HUP, or a failed one rolled back)."""

    def _state_of(self, pool: Pool) -> StateOf:
        """How each of the pool's workers looks this turn (one snapshot per turn)."""
        raise NotImplementedError

    def _backlog(self, pool: Pool) -> tuple[int, float | None]:
        """Jobs queued for the pool's service, and when the oldest arrived (None: none)."""
        return 0, None

    def _registered(self, identity: bytes) -> bool:
        """Whether the broker still counts ``identity`` among its workers."""
        return False

    def _gone(self, identity: bytes, reason: str) -> None:
        """A worker is dead for good (its goodbye, if any, has come or never will)."""

    def _identity(self, pid: int) -> bytes:
        """A worker's routing id. The master knows it from the pid alone, with no handshake."""
        return b"pid:%d" % pid

    def _owned_paths(self) -> list[str]:
        """Files (ipc:// sockets) to hand to ``user`` before dropping privileges."""
        return []

    def _admit_user(self, creds: Credentials) -> None:
        """About to become ``creds``: let that user's workers in."""

    def _child_status(self) -> StatusWriter | None:
        """In a new worker: its status reporter, if the master reads one."""
        return None

    # -- lifecycle --------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; return the process exit code."""
        if not self._open():
            return 1
        try:
            self._take_over()
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

    def _take_over(self) -> None:
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
        own = self._owned_paths()
        own += [f for f in (config.log_file, config.pid_file) if f is not None]
        self._admit_user(creds)
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
        """Wait for sockets, signals and deadlines; handle them; repeat.

        Housekeeping is paid for when it has something to do, not on every turn: a loaded
        broker turns this loop thousands of times a second. Reaping waits for SIGCHLD; the
        autoscaler for a signal, a reaped child, a change of registrations, its own deadline, or
        (throttled by SCALE_CHECK) a change of idle workers or queued jobs; departures for one
        to be pending.
        """
        assert self._wake_r is not None
        poller = zmq.Poller()
        self._register(poller)
        wake_fd = self._wake_r.fileno()
        poller.register(wake_fd, zmq.POLLIN)
        signals = self._signals
        monotonic = time.monotonic
        self.manage_workers()
        while True:
            now = monotonic()
            deadline = min(self._before_wait(now), self.scale_deadline, self._scale_check_at)
            if self.departed:
                deadline = min(deadline, *self.departed.values())
            if self.stopping:
                if not self.workers and not self.departed:
                    return
                deadline = min(deadline, self.stop_deadline)
            self._wait(poller, wake_fd, deadline, now)
            while signals:
                self._handle_signal(signals.popleft())
                self._scale_now = True  # TTIN/TTOU/HUP act at once; so does a reaped child
            if self._reap_due:
                self._reap_due = False
                self.reap()
            now = monotonic()
            if self.departed:
                self._settle_departures(now)
            self._maybe_manage(now)
            if self.stopping and now >= self.stop_deadline:
                self._kill_all()
            # What this turn produced is sent by _before_wait, at the top, with what on_tick adds.

    def _wait(self, poller: zmq.Poller, wake_fd: int, deadline: float, now: float) -> None:
        """Sleep until something is readable or ``deadline``; handle what is."""
        ready = poller.poll(poll_timeout_ms(deadline - now))
        if ready:
            events = dict(ready)
            self._on_events(events, time.monotonic())
            if wake_fd in events:
                self._drain_wakeup()

    def _maybe_manage(self, now: float) -> None:
        """Run :meth:`manage_workers` if something it depends on changed (see SCALE_CHECK)."""
        seen = self._scale_inputs()
        if seen != self._scale_seen:
            if seen[:1] != self._scale_seen[:1]:
                self._scale_now = True
            elif self._scale_check_at == math.inf:
                self._scale_check_at = now + SCALE_CHECK
        if self._scale_now or now >= self._scale_check_at or now >= self.scale_deadline:
            self.manage_workers()

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
        self._close()
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
        """Reap in the loop, after this turn's signals (several children may share a SIGCHLD)."""
        self._reap_due = True

    def handle_term(self) -> None:
        self.stop(graceful=True)

    handle_quit = handle_term

    def handle_int(self) -> None:
        self.stop(graceful=False)

    def handle_hup(self) -> None:
        """Reload: re-read the config, start a new generation, retire the old one once ready.

        In every pool, the new generation starts as large as the current one (capacity never
        dips), each new worker imports the app afresh (unless ``preload_app``), and the old
        workers get SIGTERM only once every new one has registered, each finishing its job
        before it exits.
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
        for pool in self.pools.values():
            pool.reload_floor = max(pool.reload_floor, len(self._current(pool)))
            pool.generation += 1
            log.info(
                "HUP: starting worker generation %d (%d worker(s))%s",
                pool.generation,
                max(pool.reload_floor, pool.config.min_servers),
                self._of(pool),
            )
        self._on_reload()

    def _apply(self, fresh: Config) -> None:
        """Take on a reloaded config: the options HUP may change; warn about the others."""
        old = self.config
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(Config):
            before, after = getattr(old, f.name), getattr(fresh, f.name)
            if before == after:
                continue
            if f.name == "services":
                after = _reloaded_services(old, fresh)
                if after != before:
                    changes[f.name] = after
            elif f.metadata.get("reload") and not (f.name == "app" and old.preload_app):
                changes[f.name] = after
                log.info("HUP: %s is now %r (was %r)", f.name, after, before)
            else:
                log.warning("HUP: %s changed to %r; it takes effect after a restart", f.name, after)
        try:
            config = old.replace(**changes).validate()
        except ConfigError as exc:  # a combination of new and kept values
            log.error("HUP: %s; keeping the previous config", exc)
            return
        self.config = config
        logging.getLogger("zmqserver").setLevel(config.log_level_number)
        services = self._service_configs(config)
        for pool in self.pools.values():
            new = services[pool.name]
            app = pool.app
            if new.app != pool.config.app:
                app = new.app if callable(new.app) else None
            pool.previous = (pool.config, pool.app)
            pool.use(new, app)
        self._on_config()

    def handle_ttin(self) -> None:
        """One worker more in every pool, at once; autoscaling keeps at least that many."""
        for pool in self.pools.values():
            floor = pool.scaler.more(len(self._current(pool)))
            log.info("TTIN: at least %d worker(s) now%s", floor, self._of(pool))

    def handle_ttou(self) -> None:
        """One worker fewer in every pool (an idle one, gracefully); no regrowth past that."""
        for pool in self.pools.values():
            ceiling = pool.scaler.fewer(len(self._current(pool)))
            log.info("TTOU: at most %d worker(s) now%s", ceiling, self._of(pool))

    def handle_usr1(self) -> None:
        """Reopen the log file (logrotate's postrotate); workers follow by themselves."""
        count = reopen_log_files(logging.getLogger("zmqserver"))
        log.info("USR1: reopened %d log file(s)", count)

    def _of(self, pool: Pool) -> str:
        """`` for service 'name'`` in log lines, when there is more than one pool."""
        return f" for service {pool.name!r}" if len(self.pools) > 1 else ""

    # -- stopping ---------------------------------------------------------------------------------

    def stop(self, graceful: bool, exit_code: int = 0) -> None:
        """Stop taking jobs and stop the workers: gracefully (finish running jobs) or now."""
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
        self._on_stop(graceful)
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

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    # -- workers ----------------------------------------------------------------------------------

    def reap(self, block: bool = False) -> None:
        """Collect every exited child and tell the router about the workers among them."""
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
            if code == 0 and self._registered(proc.identity):
                # An orderly exit (recycled, retired, stopped) happens between jobs, after the
                # last reply and a DISCONNECT were sent; SIGCHLD can overtake them. Declaring
                # the worker dead now would report a finished job as lost.
                self.departed[proc.identity] = time.monotonic() + DEPARTURE_GRACE
            else:
                self._gone(proc.identity, f"process {pid} ended with {how}")
            if code == BOOT_ERROR and not self.stopping and not proc.retiring:
                if not self._roll_back(proc):
                    log.error(
                        "worker %d could not load the app %r%s (see above); stopping the server",
                        pid,
                        proc.pool.config.app,
                        self._of(proc.pool),
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
        for identity, due in list(self.departed.items()):
            if not self._registered(identity):
                del self.departed[identity]  # its DISCONNECT arrived: the router knows
            elif now >= due:
                del self.departed[identity]
                self._gone(identity, "it exited without a DISCONNECT")

    def _roll_back(self, failed: WorkerProcess) -> bool:
        """A worker of a new generation could not load its app: keep the old generation.

        Returns False when there is nothing to go back to (no reload in progress), and the
        server must stop instead. The old workers join a fresh generation number, so the failed
        one's workers, retired here, are the only "old" ones left. Only the failed worker's
        pool goes back; other services keep their new generation.
        """
        pool = failed.pool
        old = [
            p
            for p in self.workers.values()
            if p.pool is pool and p.generation != pool.generation and not p.retiring
        ]
        if failed.generation != pool.generation or not old:
            return False
        log.error(
            "HUP: worker generation %d%s could not load the app %r (see above); the %d "
            "worker(s) of the previous generation keep serving",
            pool.generation,
            self._of(pool),
            pool.config.app,
            len(old),
        )
        if pool.previous is not None:
            pool.use(*pool.previous)
            pool.previous = None
            self._on_config()
        for proc in self._current(pool):
            proc.retiring = True
            self._signal(proc.pid, signal.SIGTERM)
        pool.generation += 1
        for proc in old:
            proc.generation = pool.generation
        pool.reload_floor = 0
        return True

    def _current(self, pool: Pool) -> list[WorkerProcess]:
        """Workers of the pool's current generation that are not on their way out."""
        return [
            p
            for p in self.workers.values()
            if p.pool is pool and p.generation == pool.generation and not p.retiring
        ]

    def manage_workers(self) -> None:
        """Carry out each autoscaler's plan; retire an old generation once the new one is ready."""
        self._scale_now = False
        self._scale_check_at = math.inf
        self._scale_seen = self._scale_inputs()
        if self.stopping:
            return
        now = time.monotonic()
        self.scale_deadline = math.inf
        # Grouped once: this runs on every loop turn, and a scan of every worker per pool would
        # cost pools x workers each time.
        groups: dict[str, list[WorkerProcess]] = {name: [] for name in self.pools}
        for proc in self.workers.values():
            if not proc.retiring:
                groups[proc.pool.name].append(proc)
        for name, pool in self.pools.items():
            self._manage(pool, groups[name], now)

    def _manage(self, pool: Pool, running: list[WorkerProcess], now: float) -> None:
        """``running``: the pool's workers that are not retiring, of every generation."""
        old = [p for p in running if p.generation != pool.generation]
        if not old:
            pool.reload_floor = 0
        state_of = self._state_of(pool)
        current = [p for p in running if p.generation == pool.generation]
        members = [Member(p.pid, p.started, state_of(p)) for p in current]
        backlog, oldest = self._backlog(pool)
        plan = pool.scaler.plan(
            members, now, backlog=backlog, oldest=oldest, floor=pool.reload_floor
        )
        self.scale_deadline = min(self.scale_deadline, plan.deadline)
        if plan.spawn:
            # Replacing exited workers is logged where they exit; growth is news.
            level = logging.DEBUG if plan.reason.startswith("below") else logging.INFO
            log.log(level, "starting %d worker(s)%s: %s", plan.spawn, self._of(pool), plan.reason)
            for _ in range(plan.spawn):
                self.spawn(pool)
        if plan.retire:
            log.info("retiring %d worker(s)%s: %s", len(plan.retire), self._of(pool), plan.reason)
            self._retire([self.workers[pid] for pid in plan.retire], len(plan.retire), state_of)
        # The new generation is ready once every one of its workers has registered (one just
        # started has not: a plan that spawned means not yet).
        ready = (State.IDLE, State.BUSY)
        if old and not plan.spawn and all(state_of(p) in ready for p in current if not p.retiring):
            log.info(
                "generation %d%s ready; retiring %d old worker(s)",
                pool.generation,
                self._of(pool),
                len(old),
            )
            self._retire(old, len(old), state_of)
            pool.previous = None  # the reload is done: nothing to roll back to any more

    def _retire(self, candidates: list[WorkerProcess], count: int, state_of: StateOf) -> None:
        """Gracefully stop ``count`` workers: idle ones first, then the oldest.

        SIGTERM lets a worker finish its job; one that was idle sends DISCONNECT, and a job the
        router handed it meanwhile goes back to the queue unread.
        """
        ranked = sorted(candidates, key=lambda p: (state_of(p) is not State.IDLE, p.started))
        for proc in ranked[:count]:
            proc.retiring = True
            self._signal(proc.pid, signal.SIGTERM)

    def spawn(self, pool: Pool) -> None:
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
            identity = self._identity(pid)
            if self.departed.pop(identity, None) is not None:
                # The pid was reused within the grace: the old worker's goodbye will not come.
                self._gone(identity, "its pid was reused")
            self.workers[pid] = WorkerProcess(pid, identity, pool, pool.generation, now)
            log.debug("spawned worker %d (generation %d)%s", pid, pool.generation, self._of(pool))
            return
        # In the child. Nothing here may return into the master's loop: always os._exit.
        code = 1
        try:
            self._reset_child_state()
            code = worker_main(
                pool.config,
                pool.app,
                self._identity(os.getpid()),
                self.worker_endpoint,
                self.pid,
                credentials=self.worker_credentials,
                status=self._child_status(),
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


class Arbiter(Supervisor):
    """The broker's master: both ROUTER sockets, the routing core, ZAP, and the local pools."""

    def __init__(
        self,
        config: Config,
        apps: Mapping[str, App] | None = None,
        *,
        reload: Callable[[], Config] | None = None,
        credentials: Credentials | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config, apps, reload=reload, credentials=credentials, on_ready=on_ready)
        # Key files are read and checked here, so a bad one stops the server before it binds.
        self.security = ServerSecurity.load(self.config)
        self.ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self.broker: Broker | None = None
        self.router: Dispatcher | None = None
        self._bound: list[str] = []

    def _open(self) -> bool:
        config = self.config
        self.ctx = zmq.Context()
        self.router = Dispatcher(
            config.default_service_name.encode(),
            services=tuple(name.encode() for name in self.pools),
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_liveness=config.heartbeat_liveness,
            limits=_limits(config),
            service_limits=self._service_limits(),
            now=time.monotonic(),
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
            return False
        self.worker_endpoint = local
        self.worker_credentials = security.worker_credentials
        self._bound = [front, back, local]
        back_label = endpoint_label(back) if security.public_backend is not None else "local"
        set_title(f"{config.proc_name} broker {endpoint_label(front)}-{back_label}")
        if len(self.pools) == 1 and config.default_service is None:
            services = f"service {next(iter(self.pools))!r}"
        else:
            names = ", ".join(repr(name) for name in self.pools)
            services = f"services {names} (plain clients: {config.default_service_name!r})"
        log.info("zmqserver %d: clients on %s, workers on %s, %s", self.pid, front, back, services)
        return True

    def _before_wait(self, now: float) -> float:
        assert self.router is not None
        assert self.broker is not None
        self.router.on_tick(now)
        self.broker.on_tick(now)
        self._after_turn()
        return min(self.router.next_deadline(), self.broker.next_deadline())

    def _wait(self, poller: zmq.Poller, wake_fd: int, deadline: float, now: float) -> None:
        # Turns that only move messages run inside the broker (compiled), which returns when
        # this loop has something to do; the generic path (zmq.Poller, _on_events) serves the
        # rest of the Supervisor family.
        broker = self.broker
        assert broker is not None
        zap = self.security.zap_socket
        items: list[tuple[Any, int]] = [
            (broker.frontend, zmq.POLLIN),
            (broker.backend, zmq.POLLIN),
            (wake_fd, zmq.POLLIN),
        ]
        if zap is not None:
            items.append((zap, zmq.POLLIN))
        watch_load = self._scale_check_at == math.inf
        others = broker.serve(items, deadline, self._signals, self._scale_seen, watch_load)
        if zap is not None and zap in others:
            self.security.handle_zap()  # handshakes waiting for a yes or no
        if wake_fd in others:
            self._drain_wakeup()

    def _after_turn(self) -> None:
        assert self.router is not None
        assert self.broker is not None
        self.broker.flush()
        self._kill_hung(self.router.take_kills())

    def _close(self) -> None:
        if self.router is not None and self.broker is not None:
            self.router.shutdown()
            self.router.fail_running(Status.SHUTTING_DOWN, "server stopped")
            self.broker.flush()
            self.broker.close()
        self.security.close()
        if self.ctx is not None:
            self.ctx.term()

    def _on_stop(self, graceful: bool) -> None:
        assert self.router is not None
        self.router.shutdown()
        if not graceful:
            self.router.fail_running(Status.SHUTTING_DOWN, "server stopped before the job ended")

    def _on_reload(self) -> None:
        self.security.reload()

    def _on_config(self) -> None:
        if self.router is not None:
            self.router.set_limits(_limits(self.config), self._service_limits())

    def _service_limits(self) -> dict[bytes, Limits]:
        return {name.encode(): _limits(pool.config) for name, pool in self.pools.items()}

    def _state_of(self, pool: Pool) -> StateOf:
        assert self.router is not None
        idle = set(self.router.idle_workers(pool.name.encode()))
        registered = self.router.workers
        return lambda proc: _state(proc.identity, idle, registered)

    def _backlog(self, pool: Pool) -> tuple[int, float | None]:
        assert self.router is not None
        name = pool.name.encode()
        return self.router.waiting(name), self.router.oldest_queued(name)

    def _registered(self, identity: bytes) -> bool:
        return self.router is not None and identity in self.router.workers

    def _scale_inputs(self) -> tuple[int, ...]:
        return () if self.router is None else self.router.scale_inputs()

    def _gone(self, identity: bytes, reason: str) -> None:
        assert self.router is not None
        self.router.worker_gone(identity, reason)

    def _owned_paths(self) -> list[str]:
        return [path for path in map(ipc_path, self._bound) if path is not None]

    def _admit_user(self, creds: Credentials) -> None:
        self.security.admit_local_user(creds.uid, creds.gid)

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


#: A remote worker's report, as the autoscaler sees it.
_REPORTED = {Report.CONNECTING: State.DETACHED, Report.IDLE: State.IDLE, Report.BUSY: State.BUSY}


class PoolSupervisor(Supervisor):
    """A remote pool (``zmqserver worker --connect tcp://BROKER:6661``): no broker of its own.

    The same pools, signals and options as a broker's, minus the broker: no frontend, no
    backend binding, no ZAP. Workers connect to ``config.connect`` (with CURVE when
    ``server_key`` is set) and reconnect with backoff when the broker goes silent; a worker the
    broker sends DISCONNECT (a restarted broker does not know it) exits and is replaced, and the
    replacement registers afresh. Each worker reports idle/busy/cut off through a pipe, so
    spare-server autoscaling works as on the broker's host, minus scaling on queue wait (the
    queue is on the broker).
    """

    def __init__(
        self,
        config: Config,
        apps: Mapping[str, App] | None = None,
        *,
        reload: Callable[[], Config] | None = None,
        credentials: Credentials | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        if config.connect is None:
            raise ConfigError(
                "connect: a remote pool needs its broker's backend endpoint "
                "(--connect tcp://BROKER:6661)"
            )
        super().__init__(config, apps, reload=reload, credentials=credentials, on_ready=on_ready)
        self.worker_endpoint = config.connect
        if self.config.server_key is not None:
            # Read and checked now, so a bad key file stops the pool before it forks.
            self.worker_credentials = ClientCredentials.load(
                self.config.server_key, self.config.key_file
            )
        # Routing ids must be unique among every pool of the broker, on every host: the pid,
        # the host, and a random tag per pool process (pids repeat across hosts and restarts).
        tag = f"{socket.gethostname()}.{secrets.token_hex(4)}"
        self._tag = tag.encode("ascii", "replace")
        self.status: StatusChannel | None = None
        self.reports: dict[bytes, Report] = {}
        self._reports_read = 0

    def _service_configs(self, config: Config) -> dict[str, Config]:
        # A worker's title shows its backend: here, the broker it connects to.
        return {
            name: service.replace(backend=config.connect)
            for name, service in config.service_configs().items()
        }

    def _open(self) -> bool:
        config = self.config
        self.status = StatusChannel()
        set_title(f"{config.proc_name} pool {(config.connect or '').removeprefix('tcp://')}")
        log.info(
            "zmqserver pool %d: workers connect to %s%s, service(s) %s",
            self.pid,
            config.connect,
            " with CURVE" if self.worker_credentials is not None else "",
            ", ".join(repr(name) for name in self.pools),
        )
        return True

    def _register(self, poller: zmq.Poller) -> None:
        assert self.status is not None
        poller.register(self.status.fileno(), zmq.POLLIN)

    def _on_events(self, events: dict[Any, int], now: float) -> None:
        assert self.status is not None
        if self.status.fileno() not in events:
            return
        for pid, report in self.status.read():
            proc = self.workers.get(pid)
            if proc is not None:
                self.reports[proc.identity] = report
                self._reports_read += 1

    def _scale_inputs(self) -> tuple[int, ...]:
        # Workers heard from (a first report is a registration), and reports since.
        return (len(self.reports), self._reports_read)

    def _close(self) -> None:
        if self.status is not None:
            self.status.close()

    def _state_of(self, pool: Pool) -> StateOf:
        reports = self.reports

        def state(proc: WorkerProcess) -> State:
            report = reports.get(proc.identity)
            return State.BOOTING if report is None else _REPORTED[report]

        return state

    def _gone(self, identity: bytes, reason: str) -> None:
        self.reports.pop(identity, None)

    def _identity(self, pid: int) -> bytes:
        return b"pid:%d@%s" % (pid, self._tag)

    def _child_status(self) -> StatusWriter | None:
        assert self.status is not None
        return self.status.writer()


def _reloaded_services(old: Config, fresh: Config) -> tuple[ServiceSpec, ...]:
    """The services HUP takes on: the same ones, each with its options from ``fresh``.

    Adding, removing or reordering services needs a restart (the router's queues and the
    default service are set up at start-up); a service's options, app included, reload.
    """
    before = [spec.name for spec in old.services]
    after = [spec.name for spec in fresh.services]
    if before != after:
        log.warning(
            "HUP: services changed to %s; that takes effect after a restart (the options of "
            "the services that remain are reloaded)",
            after or "none",
        )
    by_name = {spec.name: spec for spec in fresh.services}
    reloaded = []
    for spec in old.services:
        settings = by_name.get(spec.name, spec).settings
        kept = spec.settings
        if old.preload_app and settings.get("app") != kept.get("app"):
            log.warning(
                "HUP: services.%s.app changed; with preload_app it takes effect after a restart",
                spec.name,
            )
            settings.pop("app", None)
            if "app" in kept:
                settings["app"] = kept["app"]
        for key in sorted(set(settings) | set(kept)):
            if settings.get(key) != kept.get(key):
                log.info(
                    "HUP: services.%s.%s is now %r (was %r)",
                    spec.name,
                    key,
                    settings.get(key),
                    kept.get(key),
                )
        reloaded.append(ServiceSpec(spec.name, tuple(settings.items())))
    return tuple(reloaded)


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
        worker_credit=config.worker_credit,
        prefetch_below=config.prefetch_below,
    )


def _state(identity: bytes, idle: set[bytes], registered: Mapping[bytes, object]) -> State:
    if identity in idle:
        return State.IDLE
    if identity in registered:
        return State.BUSY
    return State.BOOTING
