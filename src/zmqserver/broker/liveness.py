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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from . import events
from .events import Event
from .state import WorkerState


def stalled(workers: Iterable[WorkerState], lost: float, interval: float, out: list[Event]) -> None:
    """The broker ran ``lost`` seconds later than it may: move every expiry by as much."""
    count = 0
    for worker in workers:
        worker.expiry += lost
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
    process the host sees running. Asked every tick, so a process stopped later is caught."""
    found = []
    for worker in workers:
        if now <= worker.expiry:
            continue
        if worker.jobs and process_running is not None and process_running(worker.identity):
            out.append(
                events.WorkerSilentButRunning(worker.identity, now - worker.expiry + patience)
            )
            continue
        found.append(worker)
    return found
