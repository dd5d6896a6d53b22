"""The worker processes: fork, reap, scale, retire, and roll back a failed reload.

Rule 1: everything here is about processes the master forked; what they do once they run (their
states, their goodbyes) comes from the :class:`~.component.WorkerView`, and when to act is the
loop's business (master.py).

* Children are reaped with ``waitpid(-1, WNOHANG)`` until there are none left to reap.
* A worker that exits with :data:`~zmqserver.worker.BOOT_ERROR` (the app failed to import) halts
  the server instead of feeding a fork loop, unless a reload is under way: then the old
  generation keeps serving (a bad deploy is not an outage). So do
  :data:`~.backoff.CRASH_LOOP_LIMIT` workers in a row that die before they register (an app that
  segfaults or calls ``os._exit`` while it imports), with the same exit status.
* Workers that keep dying are replaced after a growing delay (backoff.py, sans-IO): a deadline
  the plan waits for, never a sleep.
* One :meth:`Flock.manage_workers` converges each pool on what its autoscaler (scaling.py,
  sans-IO) plans, and retires an old generation once the new one is ready.
* A forked worker first closes every file descriptor the master opened for itself (its ports,
  client connections, libzmq's eventfds, its wake-up socketpair): see :meth:`Flock.spawn`.
* A worker that exits in an orderly way (recycled, retired) may have its last reply and its
  DISCONNECT still in flight when SIGCHLD arrives; the view hears of its death only after those
  messages, or a short grace, so a job it finished is never reported lost.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .._process import FdSnapshot, close_fds_except, output_fds
from ..bootreport import BootReports
from ..config import App, Config
from ..logsetup import drop_startup_relays
from ..scaling import Member, Policy, Scaler, State
from ..status import StatusWriter
from ..worker import BOOT_ERROR, worker_main
from .backoff import Restarts, describe_exit, summarize
from .component import StateOf, WorkerView
from .signals import HANDLED_SIGNALS

log = logging.getLogger("zmqserver")

#: After SIGKILL, how long the master waits for the kernel to hand back its children.
KILL_WAIT = 5.0
#: How long the view waits for the last messages of a worker that exited in an orderly way,
#: after its exit is known. They were sent before it exited, so they are in the kernel or in
#: libzmq's I/O thread already: this only bounds the wait if one was lost.
DEPARTURE_GRACE = 1.0
#: How soon to try forking again after fork() failed (out of memory or processes).
SPAWN_RETRY = 1.0


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
    #: Recent deaths: when the next worker may start, and whether the app cannot start at all.
    restarts: Restarts = field(default_factory=Restarts)
    #: The last HUP's new generation could not start; the previous one kept serving.
    rolled_back: bool = False

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
    #: It has registered (said READY, or reported on the status pipe) at some point.
    registered: bool = False
    #: Why it was recycled, when it was: asked to go (a reload, the autoscaler, TTOU), or gone
    #: by itself between jobs (max_requests, max_worker_memory). Empty for any other end.
    recycled: str = ""
    #: Its exit status once reaped (os.waitstatus_to_exitcode: -N for signal N).
    exit_code: int | None = None


class Flock:
    """The pools and their worker processes, kept at each autoscaler's size.

    ``on_config`` is called when a failed reload puts a pool's previous config back;
    ``on_boot_error`` when a worker could not load its app and there is no previous generation
    to fall back on (the server must stop); ``reset_child`` runs first thing in each forked
    child (drops the master's signal set-up).
    """

    def __init__(
        self,
        pools: dict[str, Pool],
        view: WorkerView,
        master_pid: int,
        *,
        on_config: Callable[[], None] = lambda: None,
        on_boot_error: Callable[[], None] = lambda: None,
        reset_child: Callable[[], None] = lambda: None,
    ) -> None:
        self.pools = pools
        self.view = view
        self.master_pid = master_pid
        self.on_config = on_config
        self.on_boot_error = on_boot_error
        self.reset_child = reset_child
        self.workers: dict[int, WorkerProcess] = {}
        #: Workers that exited in an orderly way, by identity: when the view stops waiting.
        self.departed: dict[bytes, float] = {}
        #: When the last plan asked to be looked at again (infinity: not before a change).
        self.scale_deadline = math.inf
        self.stopping = False
        self.killed = False
        #: What the process had open before the master opened anything of its own (the
        #: components open in Master.run, after this): the caller's and the app's (preload_app
        #: imports it first), stdio, the log file. Workers keep these, and close the rest.
        self.inherited = FdSnapshot.take()
        #: Why workers could not start, written by them, logged here once (bootreport.py).
        #: Made after the snapshot: a worker keeps its write end only.
        self.boot_reports = BootReports()

    def of(self, pool: Pool) -> str:
        """`` for service 'name'`` in log lines, when there is more than one pool."""
        return f" for service {pool.name!r}" if len(self.pools) > 1 else ""

    # -- stopping ---------------------------------------------------------------------------------

    def signal_all(self, sig: int) -> None:
        for proc in self.workers.values():
            send_signal(proc.pid, sig)

    def kill_all(self) -> None:
        """SIGKILL every remaining worker and wait (bounded) until the kernel reaps them."""
        if not self.workers:
            return
        if not self.killed:
            log.warning("killing %d worker(s) that did not stop in time", len(self.workers))
            self.killed = True
        self.signal_all(signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT
        while self.workers and time.monotonic() < deadline:
            self.reap(block=True)

    def kill(self, identity: bytes, why: str) -> bool:
        """SIGKILL the worker with routing id ``identity``, if it is ours."""
        for proc in self.workers.values():
            if proc.identity == identity:
                log.warning("killing %s worker %d", why, proc.pid)
                send_signal(proc.pid, signal.SIGKILL)
                return True
        return False

    # -- reaping ----------------------------------------------------------------------------------

    def reap(self, block: bool = False) -> None:
        """Collect every exited child and tell the view about the workers among them."""
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
            proc.exit_code = code
            # Asked before the view hears of the death (it forgets the worker then), and only
            # of a death that counts (stopping the whole flock would ask it of every worker).
            leaving = self.stopping or proc.retiring
            registered = proc.registered or (not leaving and self._registered(proc))
            how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
            if code == 0 and registered and not leaving:
                proc.recycled = _own_limit(proc.pool.config)
            if code == 0 and self.view.registered(proc.identity):
                # An orderly exit (recycled, retired, stopped) happens between jobs, after the
                # last reply and a DISCONNECT were sent; SIGCHLD can overtake them. Declaring
                # the worker dead now would report a finished job as lost.
                self.departed[proc.identity] = time.monotonic() + DEPARTURE_GRACE
            else:
                self.view.gone(proc.identity, f"process {pid} ended with {how}")
            if leaving:
                log.debug("worker %d exited (%s)", pid, how)
            elif code == BOOT_ERROR:
                # The cause first (once: the other workers' reports, alike, are not logged),
                # then what the master does about it.
                report = self.boot_reports.collect().get(pid)
                if report is not None:
                    log.error("worker %d%s could not start: %s", pid, self.of(proc.pool), report)
                if report is not None:
                    why = f"could not start ({report.partition(chr(10))[0]})"
                else:
                    why = "could not load its app or a hook (see the log)"
                if not self._roll_back(proc, why):
                    log.error("worker %d%s %s; stopping the server", pid, self.of(proc.pool), why)
                    self.on_boot_error()  # stops the server: the rest exit as stopping
            elif code == 0 and registered:
                log.info("worker %d exited; replaced if the pool needs it", pid)
            else:
                self._died(proc, code, registered, time.monotonic())
            if block:
                return

    def _registered(self, proc: WorkerProcess) -> bool:
        """Whether the view counts ``proc`` as registered now (said READY, or reported).

        Not :meth:`WorkerView.registered`: a remote pool's view answers that only for goodbyes
        it waits for (never), while its state says whether the worker ever reported.
        """
        return self.view.state_of(proc.pool)(proc) is not State.BOOTING

    def _died(self, proc: WorkerProcess, code: int, registered: bool, now: float) -> None:
        """A worker failed (a signal, an error status, or any exit before it registered):
        delay its replacement if workers keep dying; stop if none of them can start."""
        pool = proc.pool
        how = describe_exit(code)
        verdict = pool.restarts.died(now, lived=now - proc.started, registered=registered, how=how)
        early = "" if registered else " before it registered"
        if verdict.crash_loop:
            log.warning("worker %d%s %s%s", proc.pid, self.of(pool), how, early)
            count, app = len(verdict.crash_loop), pool.config.app
            why = (
                f"cannot start the app {app!r}: {count} workers in a row died before they "
                f"registered ({summarize(list(verdict.crash_loop))})"
            )
            if not self._roll_back(proc, why):
                log.error("service %r %s; stopping the server", pool.name, why)
                self.on_boot_error()  # exit status BOOT_ERROR, as for an app that cannot import
            return
        # Whether a replacement starts is the autoscaler's call (a pool above min_servers may not
        # need one); this says only when the next start may come.
        then = f"next start in {verdict.delay:.1f} s" if verdict.delay else "no start delay"
        log.warning("worker %d%s %s%s; %s", proc.pid, self.of(pool), how, early, then)

    def settle_departures(self, now: float) -> None:
        """Tell the view about orderly exits whose goodbye never came (see :meth:`reap`)."""
        for identity, due in list(self.departed.items()):
            if not self.view.registered(identity):
                del self.departed[identity]  # its DISCONNECT arrived: the view knows
            elif now >= due:
                del self.departed[identity]
                self.view.gone(identity, "it exited without a DISCONNECT")

    def _roll_back(self, failed: WorkerProcess, why: str) -> bool:
        """A worker of a new generation could not load its app (``why``, for the log), or the
        generation is in a crash loop: keep the old generation.

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
            "HUP: worker generation %d%s %s; the %d worker(s) of the previous generation keep "
            "serving",
            pool.generation,
            self.of(pool),
            why,
            len(old),
        )
        if pool.previous is not None:
            pool.use(*pool.previous)
            pool.previous = None
            self.on_config()
        for proc in self.current(pool):
            proc.retiring = True
            proc.recycled = "reload rolled back"
            send_signal(proc.pid, signal.SIGTERM)
        pool.generation += 1
        for proc in old:
            proc.generation = pool.generation
        pool.reload_floor = 0
        pool.restarts.reset()  # the generation that keeps serving did start
        pool.rolled_back = True
        return True

    # -- scaling ----------------------------------------------------------------------------------

    def current(self, pool: Pool) -> list[WorkerProcess]:
        """Workers of the pool's current generation that are not on their way out."""
        return [
            p
            for p in self.workers.values()
            if p.pool is pool and p.generation == pool.generation and not p.retiring
        ]

    def ready(self) -> dict[str, int] | None:
        """Each pool's registered workers, by service, if every pool is ready; else None.

        A pool is ready when no worker of an older generation is left serving (a HUP has
        finished), it has at least ``min_servers`` workers of its current generation, and each
        of them has registered (the broker saw it idle or busy). Costs a pass over the workers:
        the master asks only while a ready line is due.
        """
        counts: dict[str, int] = {}
        for pool in self.pools.values():
            state_of = self.view.state_of(pool)
            current = 0
            for proc in self.workers.values():
                if proc.pool is not pool or proc.retiring:
                    continue
                if proc.generation != pool.generation:
                    return None
                if state_of(proc) not in (State.IDLE, State.BUSY):
                    return None
                current += 1
            if current < pool.config.min_servers:
                return None
            counts[pool.name] = current
        return counts

    def manage_workers(self, now: float) -> None:
        """Carry out each autoscaler's plan; retire an old generation once the new one is ready."""
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
        state_of = self.view.state_of(pool)
        current = [p for p in running if p.generation == pool.generation]
        members = []
        for proc in current:
            state = state_of(proc)
            if not proc.registered and state is not State.BOOTING:
                proc.registered = True
                pool.restarts.registered()  # the app can start: not a crash loop
            members.append(Member(proc.pid, proc.started, state))
        backlog, oldest = self.view.backlog(pool)
        plan = pool.scaler.plan(
            members, now, backlog=backlog, oldest=oldest, floor=pool.reload_floor
        )
        self.scale_deadline = min(self.scale_deadline, plan.deadline)
        restarts = pool.restarts
        if plan.spawn and not restarts.may_start(now):
            # Workers keep dying: the plan is asked again when the back-off ends. (The scaler
            # noted a start now that comes later; that only makes an idle worker's retirement
            # due a little early.)
            self.scale_deadline = min(self.scale_deadline, restarts.not_before)
        elif plan.spawn:
            # Replacing exited workers is logged where they exit; growth is news.
            level = logging.DEBUG if plan.reason.startswith("below") else logging.INFO
            log.log(level, "starting %d worker(s)%s: %s", plan.spawn, self.of(pool), plan.reason)
            for _ in range(plan.spawn):
                self.spawn(pool)
        if plan.retire:
            log.info("retiring %d worker(s)%s: %s", len(plan.retire), self.of(pool), plan.reason)
            self.retire(
                [self.workers[pid] for pid in plan.retire],
                len(plan.retire),
                state_of,
                f"scale-down: {plan.reason}",
            )
        # The new generation is ready once every one of its workers has registered (one just
        # started has not: a plan that spawned means not yet).
        ready = (State.IDLE, State.BUSY)
        if old and not plan.spawn and all(state_of(p) in ready for p in current if not p.retiring):
            log.info(
                "generation %d%s ready; retiring %d old worker(s)",
                pool.generation,
                self.of(pool),
                len(old),
            )
            self.retire(old, len(old), state_of, f"reload: generation {pool.generation} is ready")
            pool.previous = None  # the reload is done: nothing to roll back to any more

    def retire(
        self, candidates: list[WorkerProcess], count: int, state_of: StateOf, why: str = "retired"
    ) -> None:
        """Gracefully stop ``count`` workers: idle ones first, then the oldest (``why``: what
        pub-sub's ``recycled`` event says).

        SIGTERM lets a worker finish its job; one that was idle sends DISCONNECT, and a job the
        broker handed it meanwhile goes back to the queue unread.
        """
        ranked = sorted(candidates, key=lambda p: (state_of(p) is not State.IDLE, p.started))
        for proc in ranked[:count]:
            proc.retiring = True
            proc.recycled = why
            send_signal(proc.pid, signal.SIGTERM)

    # -- forking ----------------------------------------------------------------------------------

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
        view = self.view
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            identity = view.identity(pid)
            if self.departed.pop(identity, None) is not None:
                # The pid was reused within the grace: the old worker's goodbye will not come.
                view.gone(identity, "its pid was reused")
            self.workers[pid] = WorkerProcess(pid, identity, pool, pool.generation, now)
            log.debug("spawned worker %d (generation %d)%s", pid, pool.generation, self.of(pool))
            return
        # In the child. Nothing here may return into the master's loop: always os._exit.
        code = 1
        try:
            self.reset_child()
            drop_startup_relays()
            self.workers.clear()
            self.departed.clear()
            status = view.child_status()  # closes the pipe's read end, keeps the write end
            self.drop_master_fds(status)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            code = worker_main(
                pool.config,
                pool.app,
                view.identity(os.getpid()),
                view.endpoint,
                self.master_pid,
                credentials=view.credentials,
                status=status,
                boot_reports=self.boot_reports,
            )
        except BaseException:
            log.exception("worker %d crashed", os.getpid())
        finally:
            _flush_updates()
            logging.shutdown()
            os._exit(code)

    def drop_master_fds(self, status: StatusWriter | None) -> None:
        """In a freshly forked worker: close every fd the master opened for itself.

        Without this a worker holds the frontend's listening socket, every client connection
        open when it was forked and libzmq's eventfds: a worker busy with a long job when the
        master was SIGKILLed kept the port, so a restart failed with "Address already in use"
        until the job ended (forever, for a hung one); connections of clients that left stayed
        in CLOSE_WAIT. libzmq's fds cannot be enumerated (pyzmq does not expose them), so the
        rule is the other way round: keep what was open before the master opened anything
        (:attr:`inherited`, re-checked by identity: a number may have been reused), what the
        log and stdio write to now (a log file USR1 reopened), and the status pipe; close the
        rest. The master's zmq objects are never used here, and pyzmq's ``close``/``term``
        skip objects made in another pid, so nothing touches the closed fds.

        Closing an fd leaves any Python object that wraps it (a socket.socket of the master's
        still waiting for the cyclic garbage collector, say) able to close that number again
        once the worker has reused it for one of its own. ``gc.freeze()`` rules that out:
        what exists at the fork is never collected in the worker. It also keeps the
        collector from writing to the pages the worker shares with the master (copy-on-write),
        as Python's documentation recommends for processes that fork without exec.
        """
        gc.freeze()
        keep = self.inherited.still_open() | output_fds()
        keep.add(self.boot_reports.write_fd)
        if status is not None:
            keep.add(status.fd)
        close_fds_except(keep)


def _own_limit(config: Config) -> str:
    """Why a registered worker ended by itself with status 0: the limits it enforces on itself
    between jobs (worker.py logs which one it reached; the master only sees the status)."""
    limits = [
        name
        for name, value in (
            ("max_requests", config.max_requests),
            ("max_worker_memory", config.max_worker_memory),
        )
        if value
    ]
    return " or ".join(limits) or "it exited between jobs"


def _flush_updates() -> None:
    """Let the app's pub-sub updates leave before ``os._exit`` (only if it published)."""
    module = sys.modules.get("zmqserver.pubsub.publish")
    if module is not None:
        with contextlib.suppress(Exception):
            module.flush()


def send_signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
