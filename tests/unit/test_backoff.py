"""The restart policy (supervisor/backoff.py) on an injected clock: no processes, no sleeps."""

from __future__ import annotations

import math
import os
import signal

import pytest

from zmqserver.config import Config
from zmqserver.scaling import Policy, Scaler, State
from zmqserver.supervisor import Pool, StateOf, WorkerProcess
from zmqserver.supervisor.backoff import (
    BACKOFF_CAP,
    BACKOFF_FIRST,
    CRASH_LOOP_LIMIT,
    STABLE_AFTER,
    Restarts,
    describe_exit,
    summarize,
)

from .fake_components import FakeView, NoForkFlock

SEGV = "killed by SIGSEGV"


def test_the_constants_make_sense_together():
    # Deaths spaced by the longest delay must still be one series, or the delay never grows.
    assert BACKOFF_FIRST < BACKOFF_CAP < STABLE_AFTER
    assert 2 <= CRASH_LOOP_LIMIT <= 10


def test_a_lone_death_is_replaced_at_once():
    restarts = Restarts()
    verdict = restarts.died(100.0, lived=0.5, registered=True, how=SEGV)
    assert verdict.delay == 0
    assert not verdict.crash_loop
    assert restarts.may_start(100.0)


def test_deaths_in_a_row_double_the_delay_up_to_the_cap():
    restarts = Restarts()
    now, delays = 100.0, []
    for _ in range(10):
        verdict = restarts.died(now, lived=0.2, registered=True, how=SEGV)
        delays.append(verdict.delay)
        assert not restarts.may_start(now + verdict.delay - 0.01) or verdict.delay == 0
        now += verdict.delay + 0.2  # the next worker starts when allowed and lives 0.2 s
        assert restarts.may_start(now)
    assert delays == [0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_a_worker_that_lived_long_enough_ends_the_series():
    restarts = Restarts()
    for now in (100.0, 100.5, 101.0):
        restarts.died(now, lived=0.3, registered=True, how=SEGV)
    assert restarts.died(101.5, lived=STABLE_AFTER, registered=True, how=SEGV).delay == 0
    assert restarts.died(101.6, lived=0.1, registered=True, how=SEGV).delay == BACKOFF_FIRST


def test_a_quiet_spell_ends_the_series():
    restarts = Restarts()
    for now in (100.0, 100.5, 101.0):
        restarts.died(now, lived=0.3, registered=True, how=SEGV)
    # Another pool member, started just now, dies long after the last death: a fresh start.
    assert restarts.died(101.0 + STABLE_AFTER, lived=0.1, registered=True, how=SEGV).delay == 0


def test_deaths_at_the_longest_delay_are_still_one_series():
    restarts = Restarts()
    now = 0.0
    for _ in range(12):
        delay = restarts.died(now, lived=1.0, registered=True, how=SEGV).delay
        now += delay + 1.0
    assert delay == BACKOFF_CAP


def test_the_limit_of_deaths_before_registering_is_a_crash_loop():
    restarts = Restarts()
    hows = ["exited with status 7", SEGV, SEGV, SEGV, "exited with status 7"]
    verdicts = [
        restarts.died(100.0 + i, lived=0.05, registered=False, how=how)
        for i, how in enumerate(hows)
    ]
    assert [bool(v.crash_loop) for v in verdicts] == [False] * (CRASH_LOOP_LIMIT - 1) + [True]
    assert verdicts[-1].crash_loop == tuple(hows)
    assert summarize(list(verdicts[-1].crash_loop)) == (
        "2 exited with status 7, 3 killed by SIGSEGV"
    )


def test_a_worker_that_registers_resets_the_count():
    restarts = Restarts()
    for i in range(CRASH_LOOP_LIMIT - 1):
        restarts.died(100.0 + i, lived=0.05, registered=False, how=SEGV)
    restarts.registered()  # a flaky start-up that sometimes works is no crash loop
    for i in range(CRASH_LOOP_LIMIT - 1):
        assert not restarts.died(200.0 + i, lived=0.05, registered=False, how=SEGV).crash_loop
    assert restarts.died(300.0, lived=0.05, registered=False, how=SEGV).crash_loop


def test_a_registered_worker_that_dies_resets_the_count_but_not_the_delay():
    restarts = Restarts()
    for i in range(CRASH_LOOP_LIMIT - 1):
        restarts.died(100.0 + i * 0.1, lived=0.05, registered=False, how=SEGV)
    verdict = restarts.died(100.5, lived=0.3, registered=True, how=SEGV)
    assert not verdict.crash_loop
    assert verdict.delay == BACKOFF_FIRST * 2 ** (CRASH_LOOP_LIMIT - 2)  # the series goes on
    for i in range(CRASH_LOOP_LIMIT - 1):
        assert not restarts.died(101.0 + i, lived=0.05, registered=False, how=SEGV).crash_loop


def test_reset_forgets_everything():
    restarts = Restarts()
    for i in range(CRASH_LOOP_LIMIT - 1):
        restarts.died(100.0 + i * 0.1, lived=0.05, registered=False, how=SEGV)
    assert not restarts.may_start(100.4)
    restarts.reset()
    assert restarts.may_start(100.4)
    assert restarts.not_before == -math.inf
    verdict = restarts.died(100.5, lived=0.05, registered=False, how=SEGV)
    assert verdict.delay == 0
    assert not verdict.crash_loop


def test_a_shorter_delay_never_moves_the_start_earlier():
    restarts = Restarts()
    restarts.died(100.0, lived=0.1, registered=True, how=SEGV)
    restarts.died(100.0, lived=0.1, registered=True, how=SEGV)
    restarts.died(100.0, lived=0.1, registered=True, how=SEGV)  # 0.2 s
    assert restarts.not_before == pytest.approx(100.2)
    restarts.died(100.0, lived=STABLE_AFTER, registered=True, how=SEGV)  # at once, it says
    assert restarts.not_before == pytest.approx(100.2)  # but the earlier delay holds


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (0, "exited with status 0"),
        (7, "exited with status 7"),
        (-signal.SIGSEGV, "killed by SIGSEGV"),
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-(signal.SIGRTMIN + 3), f"killed by signal {signal.SIGRTMIN + 3}"),
    ],
)
def test_describe_exit(code, words):
    assert describe_exit(code) == words


def test_summarize():
    assert summarize([SEGV]) == f"1 {SEGV}"
    assert summarize([SEGV, SEGV]) == f"all {SEGV}"
    assert summarize([SEGV, "exited with status 7", SEGV]) == (f"2 {SEGV}, 1 exited with status 7")


# -- the flock obeys it (no processes: NoForkFlock counts the workers it is asked for) ------------


def _flock(view: FakeView) -> tuple[NoForkFlock, Pool]:
    config = Config(app="examples.echo:app", min_servers=2, min_spare_servers=0).validate()
    pool = Pool("default", config, None, Scaler(Policy.from_config(config)))
    return NoForkFlock({"default": pool}, view, os.getpid()), pool


def test_the_flock_starts_no_worker_before_the_back_off_ends_and_asks_to_be_woken_then():
    flock, pool = _flock(FakeView())
    pool.restarts.not_before = 100.0
    flock.manage_workers(99.0)
    assert flock.asked == 0
    assert flock.scale_deadline == 100.0
    flock.manage_workers(100.0)
    assert flock.asked == 2


class RegisteredView(FakeView):
    def state_of(self, pool: Pool) -> StateOf:
        return lambda proc: State.IDLE


def test_a_worker_seen_registered_resets_the_crash_loop_count():
    flock, pool = _flock(RegisteredView())
    for i in range(CRASH_LOOP_LIMIT - 1):
        pool.restarts.died(100.0 + i, lived=0.05, registered=False, how=SEGV)
    proc = WorkerProcess(4321, b"pid:4321", pool, pool.generation, 104.0)
    flock.workers[proc.pid] = proc
    flock.manage_workers(105.0)
    assert proc.registered
    assert not pool.restarts.boot_failures
