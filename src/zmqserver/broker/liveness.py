"""Who is dead: heartbeat expiry of workers, and the two silences that are not death.

Rule 1: decisions only, on the dispatcher's workers and an injected clock and host; no sockets,
no processes, no logging (what an operator should hear of goes to the dispatcher's events).

A worker's expiry is heartbeat_interval x liveness after its last message (any message). Past
it, at a heartbeat tick, the worker is silent, and a silent worker is dropped (the dispatcher
kills it if it is local, reroutes or answers its jobs) except in two cases (docs/reliability.md
§2.2):

- **The broker did not run.** The dispatcher is called at least every heartbeat interval (its
  next_deadline never lies further), so a longer gap between two calls means the broker itself
  was stopped (SIGSTOP, a paused or swapped-out host) and read nothing meanwhile; the workers'
  messages wait unread in its socket. That silence is not theirs: :func:`stalled` moves every
  expiry by the time lost, so what waits is read before anyone is judged.
- **A busy local worker whose process is running.** Its heartbeat thread cannot run while the
  app holds the GIL (a long C call). The master, its parent, sees the process (the injected
  ``process_running``); the job's deadline, not heartbeats, bounds a hung job, and a process
  that dies is reaped and reported at once. A stopped process (SIGSTOP) is not running, and
  remote workers have no process the master can see: heartbeats decide for them, as before.
  An idle worker has nothing that keeps its main loop from heartbeating: one that is silent is
  broken, running or not, and is dropped.

Each peer is judged by its own cadence (docs/protocol.md §7). Heartbeat parameters are not
negotiated in MDP, and RFC workers in the wild (the guide's, majortomo) heartbeat every 2.5 s:
against the broker's 1 s x 3 they were dropped between two of their heartbeats. So a worker's
expiry is liveness x the larger of the broker's interval and the interval the worker is seen to
use while idle (:func:`heard`); until one gap has been seen, a zmqserver worker (its READY had a
credit header) is assumed to use the broker's interval, any other RFC 7/18 worker 2.5 s.

And a busy RFC worker sends nothing: the guide's single-threaded worker runs its job between
two reads. Only a worker known to heartbeat while busy (a zmqserver worker, or one seen doing
it) is judged by its silence while busy; for the others the job's deadline governs (the
dispatcher answers the client at the deadline and drops the worker kill_grace later). A dead
peer is still found before that: the broker sends such a busy worker a HEARTBEAT every interval
(RFC 7/18 allow one at any time), and ROUTER_MANDATORY turns the send to a peer whose connection
has closed into a failure (the shell's worker_gone); the backend's TCP keepalive closes the
connection of a host that vanished without a word (broker/shell.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from . import events
from .events import Event
from .state import WorkerState

#: The cadence assumed for an RFC worker until one of its gaps has been seen: the heartbeat of
#: the ZeroMQ guide's Majordomo workers, and majortomo's. Its first heartbeat after READY may
#: come 2.5 s plus a turn of its loop later, which the broker's 1 s x 3 did not always allow.
ASSUMED_CADENCE: Final = 2.5

#: The longest cadence a worker is credited with: a peer silent for minutes while idle is not
#: heartbeating at all, and one long gap (a network stall) must not excuse silence for ever.
MAX_CADENCE: Final = 60.0


def heard(worker: WorkerState, now: float, heartbeat: bool, interval: float, liveness: int) -> None:
    """A message from ``worker`` came at ``now`` (``heartbeat``: it was a HEARTBEAT): learn its
    cadence, and move its expiry to liveness x the larger of ``interval`` and that cadence.

    Only gaps between two messages of an idle worker are measured: a busy one's are its job's.
    The cadence follows a longer gap at once and a shorter one half-way, so the jitter of a
    peer's loop (the guide's worker heartbeats on the first wake-up past its 2.5 s) is kept.
    A HEARTBEAT from a worker that has held a job for half an interval (not one it sent before
    the job reached it) shows that it heartbeats while busy.
    """
    jobs = worker.jobs
    if jobs:
        worker.heard = -1.0
        if heartbeat and not worker.beats_busy and now - jobs[0].started >= interval / 2:
            worker.beats_busy = True
    else:
        if worker.heard >= 0.0:
            gap = now - worker.heard
            cadence = worker.cadence
            cadence = gap if gap >= cadence else (cadence + gap) / 2
            worker.cadence = cadence if cadence < MAX_CADENCE else MAX_CADENCE
        worker.heard = now
    worker.expiry = now + patience(worker, interval, liveness)


def patience(worker: WorkerState, interval: float, liveness: int) -> float:
    """How long ``worker`` may be silent: liveness x the larger of the broker's interval and its
    cadence (seen, or assumed: :data:`ASSUMED_CADENCE` for an RFC worker not seen yet)."""
    cadence = worker.cadence
    if not cadence and not worker.beats_busy:  # an RFC worker whose cadence is not known yet
        cadence = ASSUMED_CADENCE
    return liveness * (cadence if cadence > interval else interval)


def stalled(workers: Iterable[WorkerState], lost: float, interval: float, out: list[Event]) -> None:
    """The broker ran ``lost`` seconds later than it may: move every expiry by as much."""
    count = 0
    for worker in workers:
        worker.expiry += lost
        worker.heard = -1.0  # the gap across the stall is the broker's, not the worker's cadence
        count += 1
    if lost >= interval:  # not just the jitter of a late wake-up
        out.append(events.BrokerStalled(lost, count))


def silent(
    workers: Iterable[WorkerState],
    now: float,
    patience: float,
    process_running: Callable[[bytes], bool] | None,
    out: list[Event],
) -> list[WorkerState]:
    """The workers to drop at this heartbeat tick: silent past their expiry, and not busy with a
    process the host sees running nor busy without heartbeating while busy (their jobs'
    deadlines govern them). Asked every tick, so a process stopped later is caught."""
    found = []
    for worker in workers:
        if now <= worker.expiry:
            continue
        if worker.jobs and not worker.beats_busy:
            continue
        if worker.jobs and process_running is not None and process_running(worker.identity):
            out.append(
                events.WorkerSilentButRunning(worker.identity, now - worker.expiry + patience)
            )
            continue
        found.append(worker)
    return found


def beat_to(workers: Iterable[WorkerState]) -> list[WorkerState]:
    """The workers the broker sends a HEARTBEAT at this tick: the idle ones, and the busy ones
    not known to heartbeat while busy. A send to one of those that fails finds a dead peer
    whose job did reach it (``pinged``: the dispatcher's worker_gone loses the job, as it may
    have run, instead of handing it back as never delivered)."""
    found = []
    for worker in workers:
        jobs = worker.jobs
        if not jobs:
            found.append(worker)
        elif not worker.beats_busy:
            worker.pinged = jobs[0].id
            found.append(worker)
    return found
