"""Spare-server autoscaling: how many workers to start or retire, and when to look again.

Rule 1: no processes, no sockets, no clocks. The supervisor describes its pool (each worker
booting, idle or busy, and when it started), the queue (how many jobs wait, since when) and
``now``; :meth:`Scaler.plan` answers with workers to start, workers to retire, and the deadline at
which the answer could change with no event in between. The supervisor puts that deadline in its
poll timeout, so time-driven decisions (a job waiting too long, surplus workers idle for long
enough) need no periodic timer, and an idle server sleeps.

The policy is Net::Server::PreFork's, with its option names and defaults:

* never fewer than ``min_servers`` workers, never more than ``max_servers``;
* when fewer than ``min_spare_servers`` workers are idle, start more at once (a worker that is
  still booting counts as spare, so a burst does not fork a crowd while the first ones boot);
* when more than ``max_spare_servers`` stay idle for ``check_for_waiting`` seconds, retire the
  surplus: idle ones only, oldest first, never below ``min_servers``, and never within
  ``min_child_ttl`` seconds of the last start (the start/kill hysteresis PreFork has);
* a worker still booting after ``check_for_spawn`` seconds stops counting as spare (PreFork
  re-tallies its children at that period to correct an optimistic count; a hung import is the
  same kind of error here).

A remote pool's worker may also be *detached*: running, but cut off from its broker (which is
restarting, or behind a broken link). It counts as spare, for as long as that lasts: more workers
would wait for the broker just the same, so a broker outage must not grow the pool to
``max_servers``; nor is it surplus, since it will serve again once the broker is back.

Beyond PreFork: when the oldest queued job has waited ``queue_wait_threshold`` seconds, start one
worker per waiting job that no booting worker is already coming for (within ``max_servers``).
Queue wait is what clients feel; the spare count only predicts it.

TTIN and TTOU move the bounds rather than a count the policy would then undo: TTIN raises the
floor to one more than the pool has, TTOU lowers the ceiling to one fewer. HUP resets both to the
configuration (see :meth:`Scaler.reset`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config


class State(enum.Enum):
    BOOTING = "booting"  # forked, not registered with the broker yet
    IDLE = "idle"
    BUSY = "busy"
    DETACHED = "detached"  # a remote pool's worker that has lost its broker (see above)


@dataclass(frozen=True, slots=True)
class Member:
    """One worker of the current generation, as the supervisor sees it this turn."""

    key: int  # the supervisor's handle for it (a pid)
    started: float
    state: State


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now, and the time at which :meth:`Scaler.plan` should be asked again."""

    spawn: int = 0
    retire: tuple[int, ...] = ()
    deadline: float = math.inf
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Policy:
    """The autoscaling options of one pool. No defaults of its own: the config schema's, through
    :meth:`from_config` (``min_spare_servers`` and ``max_spare_servers`` as worked out there)."""

    min_servers: int
    max_servers: int
    min_spare_servers: int
    max_spare_servers: int
    check_for_waiting: float
    check_for_spawn: float
    min_child_ttl: float
    queue_wait_threshold: float  # 0 = do not scale on queue wait

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        min_spare, max_spare = config.spare_servers
        return cls(
            min_servers=config.min_servers,
            max_servers=config.max_servers,
            min_spare_servers=min_spare,
            max_spare_servers=max_spare,
            check_for_waiting=config.check_for_waiting,
            check_for_spawn=config.check_for_spawn,
            min_child_ttl=config.min_child_ttl,
            queue_wait_threshold=config.queue_wait_threshold,
        )


class Scaler:
    """The autoscaling state of one supervisor: bounds moved by TTIN/TTOU, and two timestamps.

    :meth:`plan` records the decision it returns (the time of a start, the start of a surplus),
    so the caller must carry the plan out.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.low = policy.min_servers
        self.high = policy.max_servers
        self.last_spawn = -math.inf
        self.surplus_since: float | None = None

    def reset(self, policy: Policy) -> None:
        """A new policy (HUP): TTIN/TTOU adjustments give way to the configured bounds."""
        self.policy = policy
        self.low = policy.min_servers
        self.high = policy.max_servers
        self.surplus_since = None

    # -- TTIN / TTOU ----------------------------------------------------------------------------

    def more(self, count: int) -> int:
        """TTIN with ``count`` workers running: one more, kept by autoscaling; the new floor.

        Counting from the floor too means two TTINs handled in one loop turn add two workers.
        """
        self.low = min(max(count, self.low) + 1, self.policy.max_servers)
        self.high = max(self.high, self.low)
        return self.low

    def fewer(self, count: int) -> int:
        """TTOU with ``count`` workers running: one fewer, and no regrowth past it; the ceiling."""
        self.high = max(min(count, self.high) - 1, 1)
        self.low = min(self.low, self.high)
        return self.high

    def pin(self, count: int) -> int:
        """Exactly ``count`` workers (the control endpoint's ``scale``; 0 drains the pool):
        both bounds, within ``max_servers``. HUP resets them, as it does TTIN and TTOU."""
        self.low = self.high = max(0, min(count, self.policy.max_servers))
        return self.low

    # -- the decision ---------------------------------------------------------------------------

    def plan(
        self,
        pool: Sequence[Member],
        now: float,
        *,
        backlog: int = 0,
        oldest: float | None = None,
        floor: int = 0,
    ) -> Plan:
        """Decide for ``pool`` at ``now``.

        ``backlog`` jobs wait in the queue, the oldest since ``oldest``. ``floor`` raises the
        minimum for a while: during a reload, the new generation grows to the old one's size.
        Every deadline returned is later than ``now`` (or infinite), so a caller that sleeps
        until it cannot spin.
        """
        policy = self.policy
        low = min(max(self.low, floor), policy.max_servers)
        high = max(self.high, low)
        total = len(pool)
        deadline = math.inf
        idle: list[Member] = []
        booting = 0
        for member in pool:
            if member.state is State.IDLE:
                idle.append(member)
            elif member.state is State.DETACHED:
                booting += 1  # spare, with no check_for_spawn expiry: it is waiting, not hung
            elif member.state is State.BOOTING:
                expires = member.started + policy.check_for_spawn
                if now < expires:
                    booting += 1
                    deadline = min(deadline, expires)

        if total > high:
            # TTOU lowered the ceiling: act at once. Idle workers first, then ones still booting
            # (no job to lose), then the oldest busy ones, which finish their job first.
            rank = {State.IDLE: 0, State.DETACHED: 1, State.BOOTING: 1, State.BUSY: 2}
            ranked = sorted(pool, key=lambda m: (rank[m.state], m.started))
            retire = tuple(m.key for m in ranked[: total - high])
            return Plan(retire=retire, deadline=deadline, reason=f"above {high} workers")

        spawn, reason = 0, ""
        if total < low:
            spawn, reason = low - total, f"below {low} workers"
        spare = len(idle) + booting + spawn
        if spare < policy.min_spare_servers and total + spawn < high:
            spawn += min(policy.min_spare_servers - spare, high - total - spawn)
            reason = f"fewer than {policy.min_spare_servers} idle workers"
        if policy.queue_wait_threshold and backlog > 0 and oldest is not None:
            due = oldest + policy.queue_wait_threshold
            if now >= due:
                uncovered = backlog - booting - spawn  # jobs no starting worker is coming for
                extra = min(uncovered, high - total - spawn)
                if extra > 0:
                    spawn += extra
                    reason = f"{backlog} jobs queued, the oldest for {now - oldest:.1f}s"
            else:
                deadline = min(deadline, due)
        if spawn > 0:
            self.last_spawn = now
            self.surplus_since = None
            return Plan(spawn=spawn, deadline=deadline, reason=reason)

        removable = min(len(idle) - policy.max_spare_servers, total - low)
        if removable <= 0:
            self.surplus_since = None
            return Plan(deadline=deadline)
        if self.surplus_since is None:
            self.surplus_since = now
        due = max(
            self.surplus_since + policy.check_for_waiting, self.last_spawn + policy.min_child_ttl
        )
        if now < due:
            return Plan(deadline=min(deadline, due))
        self.surplus_since = None
        oldest_first = sorted(idle, key=lambda m: m.started)[:removable]
        return Plan(
            retire=tuple(m.key for m in oldest_first),
            deadline=deadline,
            reason=f"more than {policy.max_spare_servers} idle workers",
        )
