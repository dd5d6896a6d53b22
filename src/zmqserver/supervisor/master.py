"""The master process: one event loop that hosts the components and supervises the workers.

Shape borrowed from gunicorn's arbiter, minus its historical scars:

* Signal handlers only record the signal (signals.py). CPython's C-level handler also writes a
  byte to the wake-up socketpair (_wakeup.py), which sits in the same wait as every component's
  sockets, so a signal interrupts the wait at once and is handled in the loop, never in the
  handler. The wait's timeout comes from the next deadline (the components', the autoscaler's,
  shutdown), never from a fixed polling interval: an idle server sleeps.
* Everything but the loop, the signals and the worker processes is a component
  (component.py): the broker, a remote pool's status pipe, anything added later. The loop waits
  on all of their sockets at once and hands each what became readable. A busy component may run
  the wait itself (the broker's compiled loop does), returning when the master has work: the
  :class:`~zmqserver._wakeup.Wake` flag, a deadline, or the autoscaler's inputs moving.
* The workers (fork, reap, scale, retire, roll back) are the flock's (workers.py); what they do
  once they run, the :class:`~.component.WorkerView`'s.
* HUP re-reads the config (reload.py), starts a new generation first (as many workers as the old
  one has) and retires the old one only once the new one has said READY, so capacity never dips.
* TTIN/TTOU move each autoscaler's bounds; its next deadline joins the wait's timeout.

There is one pool per service (``services``; a server with one app has one pool). Each pool has
its own options, app, autoscaler and generation number; signals act on every pool: HUP reloads
them all, TTIN and TTOU add or retire one worker in each.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import zmq

from .._process import (
    Credentials,
    drop_privileges,
    may_remove_in,
    remove_pid_file,
    reopen_log_files,
    write_pid_file,
)
from ..broker import poll_timeout_ms
from ..config import App, Config
from ..errors import ConfigError
from ..logsetup import set_level
from ..scaling import Policy, Scaler
from ..worker import BOOT_ERROR
from .component import Component, Handle, StartError, Waiter, WatchItem, WorkerView
from .observe import snapshot
from .reload import reload_pools, reloaded_config
from .signals import SignalQueue
from .workers import Flock, Pool, WorkerProcess

log = logging.getLogger("zmqserver")

#: How long a fast stop (INT) lets workers exit before they are killed.
FAST_STOP_TIMEOUT = 2.0
#: How long the autoscaler may lag behind traffic. Jobs coming and going change which workers
#: are idle many thousand times a second; planning on each change cost the broker a sizeable
#: part of its CPU (with 100 workers, a third). So such a change only schedules a look this
#: much later, and the plan sees the pools as they are then. What must not wait (a signal, an
#: exited child, a worker registering or leaving, a deadline the last plan asked for) gets
#: a look at once.
SCALE_CHECK = 0.05


class Master:
    """Keeps each service's current generation of workers at its autoscaler's size, and runs
    the loop its components live in.

    ``view`` is the component that says where workers connect and what state they are in
    (it must be one of ``components``); ``waiter``, if any, the one that runs the loop's wait.
    """

    def __init__(
        self,
        config: Config,
        view: WorkerView,
        components: Sequence[Component],
        apps: Mapping[str, App] | None = None,
        *,
        waiter: Waiter | None = None,
        reload: Callable[[], Config] | None = None,
        credentials: Credentials | None = None,
        on_ready: Callable[[], None] | None = None,
        where: str = "",
    ) -> None:
        """``config`` is validated already. ``apps`` are the callables already loaded in the
        master, by service name (forked children share them); any other service's workers
        import its app after the fork.

        ``reload`` rebuilds the config for HUP; ``credentials`` are taken on once the master has
        what needs root; ``on_ready`` is called once it is up, every pool's workers registered
        (a daemon's "started"), when the ready line is logged. ``where`` ends the ready line
        (``frontend tcp://*:6660``).
        """
        self.config = config
        self.view = view
        self.components = list(components)
        self.waiter = waiter
        apps = apps or {}
        self.pools = {
            name: Pool(name, service, apps.get(name), Scaler(Policy.from_config(service)))
            for name, service in view.service_configs(config).items()
        }
        self.pid = os.getpid()
        self.reload = reload
        self.credentials = credentials
        self.on_ready = on_ready
        self.signals = SignalQueue()
        self.flock = Flock(
            self.pools,
            view,
            self.pid,
            on_config=self._on_config,
            on_boot_error=lambda: self.stop(graceful=False, exit_code=BOOT_ERROR),
            reset_child=self.signals.reset_in_child,
        )
        #: Something changed that the autoscaler must see at once (see SCALE_CHECK).
        self._scale_now = True
        #: Traffic changed the pools' states: when the autoscaler looks (infinity: no change).
        self._scale_check_at = math.inf
        #: What the pools looked like to the last plan (:meth:`WorkerView.scale_inputs`).
        self._scale_seen: tuple[int, ...] = ()
        #: SIGCHLD came: a child is waiting to be reaped.
        self._reap_due = False
        self.exit_code = 0
        self.stopping = False
        self.stop_deadline = 0.0
        self.where = where
        #: The ready line to log once every pool's workers have registered ("ready" at start,
        #: "reloaded" after a HUP); None once logged.
        self._announce: str | None = "ready"
        #: When the master started (the status document's uptime).
        self.started = time.monotonic()

    # -- what components may ask (component.Host) ------------------------------------------------

    @property
    def workers(self) -> dict[int, WorkerProcess]:
        """The live worker processes, by pid."""
        return self.flock.workers

    @property
    def scale_deadline(self) -> float:
        """When the last plan asked to be looked at again."""
        return self.flock.scale_deadline

    @scale_deadline.setter
    def scale_deadline(self, when: float) -> None:
        self.flock.scale_deadline = when

    def kill_worker(self, identity: bytes, why: str) -> bool:
        return self.flock.kill(identity, why)

    # -- control (commands.py) --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The status document (observe.py): services, workers, rates, latencies."""
        doc = snapshot(self, getattr(self.view, "dispatcher", None), self.started)
        for component in self.components:
            # A component with something to show (durable jobs) adds its own section.
            section = getattr(component, "status_section", None)
            if section is not None:
                doc.update(section())
        return doc

    def command_done(self) -> None:
        """A control command changed the pools: plan the workers on this turn, as for a signal."""
        self._scale_now = True

    # -- lifecycle --------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; return the process exit code."""
        for index, component in enumerate(self.components):
            try:
                component.open(self)
            except StartError as exc:
                log.error("%s", exc)
                for opened in reversed(self.components[: index + 1]):
                    opened.close()
                return 1
        try:
            self._take_over()
            wakeup = self.signals.install()
            self._loop(wakeup.fileno())
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
        own = [path for component in self.components for path in component.owned_paths()]
        own += [f for f in (config.log_file, config.pid_file) if f is not None]
        if config.pid_file is not None:
            directory = os.path.dirname(os.path.abspath(config.pid_file))
            groups = {creds.gid, *(os.getgrouplist(creds.user, creds.gid) if creds.user else ())}
            if not may_remove_in(directory, creds.uid, groups):
                log.warning(
                    "pid_file: uid %d cannot remove files in %s, so the pid file is emptied at "
                    "exit, not removed (use a directory it owns, e.g. /run/zmqserver)",
                    creds.uid,
                    directory,
                )
        for component in self.components:
            component.admit_user(creds)
        drop_privileges(creds, own)
        log.info("running as uid %d, gid %d", creds.uid, creds.gid)

    def _loop(self, wake_fd: int) -> None:
        """Wait for sockets, signals and deadlines; handle them; repeat.

        Housekeeping is paid for when it has something to do, not on every turn: a loaded
        broker turns this loop many times a second. Reaping waits for SIGCHLD; the autoscaler
        for a signal, a reaped child, a change of registrations, its own deadline, or
        (throttled by SCALE_CHECK) a change of idle workers or queued jobs; departures for one
        to be pending.
        """
        monotonic = time.monotonic
        components = self.components
        flock = self.flock
        wake_item = (wake_fd, zmq.POLLIN)
        self.manage_workers()
        while True:
            now = monotonic()
            deadline = min(flock.scale_deadline, self._scale_check_at)
            items: list[WatchItem] = []
            for component in components:
                deadline = min(deadline, component.next_deadline())
                items += component.watch()
            items.append(wake_item)
            if flock.departed:
                deadline = min(deadline, *flock.departed.values())
            if self.stopping:
                if not flock.workers and not flock.departed:
                    return
                deadline = min(deadline, self.stop_deadline)
            self.view.watch_scale(self._scale_seen, self._scale_check_at == math.inf)
            ready = self._wait(items, deadline, now)
            now = monotonic()
            if wake_fd in ready:
                assert self.signals.wakeup is not None
                self.signals.wakeup.drain()
            for component in components:
                component.handle(ready, now)
            if self.signals.dispatch(self):
                self._scale_now = True  # TTIN/TTOU/HUP act at once; so does a reaped child
            if self._reap_due:
                self._reap_due = False
                flock.reap()
            now = monotonic()
            if flock.departed:
                flock.settle_departures(now)
            self._maybe_manage(now)
            if self.stopping and now >= self.stop_deadline:
                flock.kill_all()

    def _wait(self, items: list[WatchItem], deadline: float, now: float) -> Collection[Handle]:
        """Sleep until something in ``items`` is readable, ``deadline`` or a signal; what is."""
        wake = self.signals.wake
        if self.waiter is not None:
            return self.waiter.wait(items, deadline, wake)
        poller = zmq.Poller()
        for handle, events in items:
            poller.register(handle, events)
        timeout = 0 if wake.pending else poll_timeout_ms(deadline - now)
        return [handle for handle, _ in poller.poll(timeout)]

    def _maybe_manage(self, now: float) -> None:
        """Run :meth:`manage_workers` if something it depends on changed (see SCALE_CHECK)."""
        seen = self.view.scale_inputs()
        if seen != self._scale_seen:
            if seen[:1] != self._scale_seen[:1]:
                self._scale_now = True
            elif self._scale_check_at == math.inf:
                self._scale_check_at = now + SCALE_CHECK
        if self._scale_now or now >= self._scale_check_at or now >= self.flock.scale_deadline:
            self.manage_workers()

    def manage_workers(self) -> None:
        """Carry out each autoscaler's plan (see :meth:`Flock.manage_workers`)."""
        self._scale_now = False
        self._scale_check_at = math.inf
        self._scale_seen = self.view.scale_inputs()
        if self.stopping:
            return
        self.flock.manage_workers(time.monotonic())
        if self._announce is not None:
            self._maybe_announce(self._announce)

    def _maybe_announce(self, what: str) -> None:
        """Log the ready line once every pool is ready (see :meth:`Flock.ready`).

        Checked only while a line is due (start-up, a HUP), as the autoscaler plans: a worker
        registering is news the plan hears at once, so the line comes on the turn it happens.
        """
        counts = self.flock.ready()
        if counts is None:
            return
        self._announce = None
        if self.on_ready is not None:
            # A daemon's starting command returns 0 only now, not when the ports are bound.
            ready, self.on_ready = self.on_ready, None
            ready()
        total = sum(counts.values())
        pools = ", ".join(f"{name} ({count})" for name, count in counts.items())
        label = "service" if len(counts) == 1 else "services"
        kept = [pool.name for pool in self.pools.values() if pool.rolled_back]
        note = f"; {', '.join(kept)} kept the previous generation" if kept else ""
        where = f"; {self.where}" if self.where else ""
        log.info("zmqserver %s: %d workers, %s %s%s%s", what, total, label, pools, where, note)

    def _on_config(self) -> None:
        for component in self.components:
            component.on_config(self.config)

    def _cleanup(self) -> None:
        self.signals.uninstall()
        self.flock.kill_all()
        for component in reversed(self.components):
            component.close()
        if self.config.pid_file is not None:
            remove_pid_file(self.config.pid_file, self.pid)
        log.info("zmqserver %d: stopped", self.pid)

    # -- signals (signals.py calls handle_<name>) -------------------------------------------------

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
        self._announce = "reloaded"
        for pool in self.pools.values():
            pool.reload_floor = max(pool.reload_floor, len(self.flock.current(pool)))
            pool.generation += 1
            pool.rolled_back = False
            pool.restarts.reset()  # the new generation starts at once, with a clean record
            log.info(
                "HUP: starting worker generation %d (%d worker(s))%s",
                pool.generation,
                max(pool.reload_floor, pool.config.min_servers),
                self.flock.of(pool),
            )
        for component in self.components:
            component.on_reload()

    def _apply(self, fresh: Config) -> None:
        """Take on a reloaded config: the options HUP may change; warn about the others."""
        config = reloaded_config(self.config, fresh)
        if config is None:
            return
        self.config = config
        if config.log_config is None:
            set_level(config.log_level_number)
        reload_pools(self.pools, self.view.service_configs(config))
        self._on_config()

    def handle_ttin(self) -> None:
        """One worker more in every pool, at once; autoscaling keeps at least that many."""
        for pool in self.pools.values():
            floor = pool.scaler.more(len(self.flock.current(pool)))
            log.info("TTIN: at least %d worker(s) now%s", floor, self.flock.of(pool))

    def handle_ttou(self) -> None:
        """One worker fewer in every pool (an idle one, gracefully); no regrowth past that."""
        for pool in self.pools.values():
            ceiling = pool.scaler.fewer(len(self.flock.current(pool)))
            log.info("TTOU: at most %d worker(s) now%s", ceiling, self.flock.of(pool))

    def handle_usr1(self) -> None:
        """Reopen the log file (logrotate's postrotate); workers follow by themselves."""
        count, failures = 0, list[str]()
        for logger in (logging.getLogger(), logging.getLogger("zmqserver")):
            done, failed = reopen_log_files(logger)
            count, failures = count + done, failures + failed
        if failures:
            log.warning(
                "USR1: could not reopen %s; still logging to the file(s) opened before",
                "; ".join(failures),
            )
        log.info("USR1: reopened %d log file(s)", count)

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
            len(self.flock.workers),
            timeout,
        )
        self.stopping = self.flock.stopping = True
        self.flock.scale_deadline = math.inf
        self.stop_deadline = time.monotonic() + timeout
        for component in self.components:
            component.on_stop(graceful)
        self.flock.signal_all(signal.SIGTERM if graceful else signal.SIGINT)
