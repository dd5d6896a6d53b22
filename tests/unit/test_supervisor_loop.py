"""When the supervisor's loop does its housekeeping (no processes: spawn is stubbed out)."""

from __future__ import annotations

import math

from zmqserver.config import Config
from zmqserver.scaling import State
from zmqserver.supervisor import SCALE_CHECK, Flock, Master, Pool, StateOf, WorkerProcess

from .fake_components import FakeView


class CountingFlock(Flock):
    """Workers that are only records: spawn forks nothing."""

    spawned = 0

    def spawn(self, pool: Pool) -> None:
        self.spawned += 1
        pid = 1000 + self.spawned
        self.workers[pid] = WorkerProcess(pid, b"w", pool, pool.generation, 0.0)


class CountingView(FakeView):
    """A view whose pools' state is set by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: tuple[int, ...] = (0, 0, 0)

    def scale_inputs(self) -> tuple[int, ...]:
        return self.inputs

    def state_of(self, pool: Pool) -> StateOf:
        return lambda proc: State.IDLE


class Counting(Master):
    """A master whose pools' state is set by the test, and which counts its plans."""

    def __init__(self) -> None:
        self.view_ = CountingView()
        super().__init__(Config(app="examples.echo:app", min_servers=1), self.view_, [])
        self.flock = CountingFlock(self.pools, self.view_, self.pid)
        self.plans = 0

    @property
    def inputs(self) -> tuple[int, ...]:
        return self.view_.inputs

    @inputs.setter
    def inputs(self, inputs: tuple[int, ...]) -> None:
        self.view_.inputs = inputs

    @property
    def spawned(self) -> int:
        assert isinstance(self.flock, CountingFlock)
        return self.flock.spawned

    def manage_workers(self) -> None:
        self.plans += 1
        super().manage_workers()


def test_the_autoscaler_runs_at_first_and_then_only_when_something_changed():
    sup = Counting()
    sup._maybe_manage(10.0)
    assert (sup.plans, sup.spawned) == (1, 1)
    for now in (10.1, 10.2, 50.0):  # nothing changed, no deadline: no plan
        sup._maybe_manage(now)
    assert sup.plans == 1


def test_traffic_is_planned_for_within_scale_check_and_registrations_at_once():
    sup = Counting()
    sup._maybe_manage(10.0)
    sup.inputs = (0, 1, 0)  # a worker went idle: look again within SCALE_CHECK, not now
    sup._maybe_manage(10.001)
    assert sup.plans == 1
    assert sup._scale_check_at == 10.001 + SCALE_CHECK
    sup.inputs = (0, 0, 3)  # more changes meanwhile do not push the look further out
    sup._maybe_manage(10.002)
    assert sup._scale_check_at == 10.001 + SCALE_CHECK
    sup._maybe_manage(10.001 + SCALE_CHECK)
    assert sup.plans == 2
    assert sup._scale_check_at == math.inf
    sup.inputs = (1, 0, 3)  # a worker registered (or left): plan at once
    sup._maybe_manage(10.1)
    assert sup.plans == 3


def test_signals_and_the_plans_own_deadline_trigger_a_plan():
    sup = Counting()
    sup._maybe_manage(10.0)
    sup._scale_now = True  # what the loop sets after handling any signal (TTIN, SIGCHLD...)
    sup._maybe_manage(10.1)
    assert sup.plans == 2
    sup.scale_deadline = 20.0
    sup._maybe_manage(19.9)
    assert sup.plans == 2
    sup._maybe_manage(20.0)
    assert sup.plans == 3


def test_sigchld_asks_for_a_reap():
    sup = Counting()
    assert not sup._reap_due
    sup.handle_chld()
    assert sup._reap_due
