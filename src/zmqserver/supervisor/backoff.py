"""When to start a worker again after one died, and when to give up: one pool's restart policy.

Rule 1: sans-IO. :class:`Restarts` is told of each death (with ``now``, how long the worker lived,
whether it ever registered, how it ended) and answers with a :class:`Verdict`; forking, reaping,
logging and stopping the server are the flock's (workers.py). Only the caller reads the clock.

Two failures, two answers:

* **A crash loop**: :data:`CRASH_LOOP_LIMIT` workers in a row died before they registered (they
  never said READY to the broker, never reported on a remote pool's status pipe). The app cannot
  start: a segfault or an ``os._exit`` while it imports gives no ImportError, hence no
  :data:`~zmqserver.worker.BOOT_ERROR`, but the outcome is the same, and so is the answer: stop
  the server (or roll a reload back). Any worker that registers resets the count: one that starts
  proves the app can start, so a flaky start-up that sometimes works does not stop the server.
* **Repeated deaths while running** (registered or not): each start is delayed,
  :data:`BACKOFF_FIRST` after the second death in a row, doubling up to :data:`BACKOFF_CAP`. The
  first death of a calm pool is replaced at once (a lone crash costs nothing); the delay falls back
  to none once a worker that dies had lived :data:`STABLE_AFTER`, or the previous death is that
  long ago. Before this, an app that crashed at import forked 400-1,000 workers in 8 s, forever.

Why constants and not options: the limit says when the evidence is conclusive (five starts, none
reaching READY, is not bad luck), not how an operator wants the server to behave, and the delays
only need to make a loop cheap and a lone crash free. Rejected: counting deaths per time window
(it needs a rate that is right for a 50 ms import and a 20 s one alike), and a sleep in the
master (the loop must keep serving the healthy workers; the delay is a deadline it waits for).
"""

from __future__ import annotations

import math
import signal
from collections import Counter
from dataclasses import dataclass, field

#: Workers in a row that die before they register: the app cannot start.
CRASH_LOOP_LIMIT = 5
#: The delay after the second death in a row; it doubles with each further one.
BACKOFF_FIRST = 0.1
#: The longest delay between a death and the next start.
BACKOFF_CAP = 5.0
#: A worker that lived this long, or a death this long after the previous one, ends the series.
#: Longer than the cap: deaths spaced by the longest delay are still a series.
STABLE_AFTER = 10.0


def describe_exit(code: int) -> str:
    """``os.waitstatus_to_exitcode``'s answer, in words: "exited with status 7", "killed by
    SIGSEGV"."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:  # a real-time signal has no name in the enum
        return f"killed by signal {-code}"


def summarize(outcomes: list[str]) -> str:
    """How a series of workers ended, each outcome once (first seen first): "3 killed by
    SIGSEGV, 2 exited with status 7"; "all killed by SIGSEGV" when they all ended alike."""
    counts = Counter(outcomes)
    if len(counts) == 1 and len(outcomes) > 1:
        return f"all {outcomes[0]}"
    return ", ".join(f"{count} {how}" for how, count in counts.items())


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a death means: the delay before the next start, and whether the app cannot start."""

    #: Seconds from the death until the pool may start a worker again (0: at once).
    delay: float
    #: The last :data:`CRASH_LOOP_LIMIT` workers died before registering: how each ended
    #: (oldest first). Empty: not a crash loop.
    crash_loop: tuple[str, ...] = ()


@dataclass(slots=True)
class Restarts:
    """One pool's record of recent deaths: the back-off delay and the crash-loop count."""

    limit: int = CRASH_LOOP_LIMIT
    first: float = BACKOFF_FIRST
    cap: float = BACKOFF_CAP
    stable: float = STABLE_AFTER
    #: No worker of the pool starts before this (monotonic seconds).
    not_before: float = -math.inf
    #: Deaths in the current series (each one lengthens the next delay).
    series: int = 0
    last_death: float = -math.inf
    #: How each worker that died before registering ended, since one last registered.
    boot_failures: list[str] = field(default_factory=list)

    def died(self, now: float, *, lived: float, registered: bool, how: str) -> Verdict:
        """A worker that was not asked to stop ended at ``now`` after ``lived`` seconds.

        ``registered``: it had said READY (or reported) at some point. ``how``: in words, for
        the crash-loop message (:func:`describe_exit`).
        """
        if lived >= self.stable or now - self.last_death >= self.stable:
            self.series = 0
        self.last_death = now
        delay = 0.0 if self.series == 0 else min(self.cap, self.first * 2 ** (self.series - 1))
        self.series += 1
        self.not_before = max(self.not_before, now + delay)
        if registered:
            self.boot_failures.clear()
            return Verdict(delay)
        self.boot_failures.append(how)
        if len(self.boot_failures) < self.limit:
            return Verdict(delay)
        return Verdict(delay, tuple(self.boot_failures[-self.limit :]))

    def registered(self) -> None:
        """A worker of the pool registered: the app can start; the crash-loop count restarts.

        The back-off stays: a worker that registers and then dies is what it is for.
        """
        self.boot_failures.clear()

    def may_start(self, now: float) -> bool:
        """Whether the pool may start a worker at ``now`` (else wait for :attr:`not_before`)."""
        return now >= self.not_before

    def reset(self) -> None:
        """Start afresh: a reload begins (the new app deserves a clean slate), or was rolled
        back to the generation that was serving."""
        self.not_before = -math.inf
        self.series = 0
        self.last_death = -math.inf
        self.boot_failures.clear()
