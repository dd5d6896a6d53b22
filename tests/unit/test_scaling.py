"""The autoscaler, without processes: pools described as data, time passed in."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.helpers import scaling_policy

from zmqserver.config import Config
from zmqserver.scaling import Member, Plan, Policy, Scaler, State

BOOTING, IDLE, BUSY = State.BOOTING, State.IDLE, State.BUSY

POLICY = scaling_policy(
    min_servers=2,
    max_servers=6,
    min_spare_servers=1,
    max_spare_servers=2,
    check_for_waiting=10.0,
    check_for_spawn=30.0,
    min_child_ttl=5.0,
    queue_wait_threshold=1.0,
)


def pool(*states: State, started: float = 0.0) -> list[Member]:
    """Members with keys 1, 2, ... started one second apart (so key order is age order)."""
    return [Member(i + 1, started + i, state) for i, state in enumerate(states)]


def test_starts_min_servers():
    assert Scaler(POLICY).plan([], now=100.0).spawn == 2


def test_a_busy_pool_gets_spares_up_to_max_servers():
    scaler = Scaler(POLICY)
    assert scaler.plan(pool(BUSY, BUSY), now=100.0).spawn == 1
    assert scaler.plan(pool(*[BUSY] * 6), now=100.0).spawn == 0


def test_booting_workers_count_as_spare_until_check_for_spawn():
    scaler = Scaler(POLICY)
    members = [Member(1, 100.0, BUSY), Member(2, 100.0, BUSY), Member(3, 110.0, BOOTING)]
    plan = scaler.plan(members, now=111.0)
    assert plan.spawn == 0
    assert plan.deadline == 140.0  # when the booting one stops counting
    # A worker that never registers counts as busy after that: another one is started.
    assert scaler.plan(members, now=140.0).spawn == 1


def test_surplus_is_retired_after_check_for_waiting_oldest_idle_first():
    scaler = Scaler(POLICY)
    members = pool(IDLE, BUSY, IDLE, IDLE, IDLE)  # 4 idle, max_spare 2
    first = scaler.plan(members, now=100.0)
    assert first == Plan(deadline=110.0)
    assert scaler.plan(members, now=109.9) == Plan(deadline=110.0)
    plan = scaler.plan(members, now=110.0)
    assert plan.retire == (1, 3)  # never the busy one, oldest idle first
    assert "idle" in plan.reason


def test_surplus_must_last_the_whole_check_for_waiting():
    scaler = Scaler(POLICY)
    surplus = pool(IDLE, IDLE, IDLE, IDLE)
    scaler.plan(surplus, now=100.0)
    scaler.plan(pool(IDLE, IDLE, BUSY, BUSY), now=105.0)  # the surplus is gone for a moment
    assert scaler.plan(surplus, now=111.0) == Plan(deadline=121.0)


def test_never_retires_below_min_servers():
    scaler = Scaler(POLICY)
    members = pool(IDLE, IDLE, IDLE)  # one above max_spare, one above min_servers
    scaler.plan(members, now=100.0)
    assert scaler.plan(members, now=110.0).retire == (1,)
    policy = scaling_policy(min_servers=3, max_servers=6, min_spare_servers=0, max_spare_servers=0)
    assert Scaler(policy).plan(pool(IDLE, IDLE, IDLE), now=100.0) == Plan()


def test_no_retirement_within_min_child_ttl_of_a_start():
    policy = scaling_policy(
        min_servers=1,
        max_servers=6,
        min_spare_servers=1,
        max_spare_servers=1,
        check_for_waiting=1.0,
        min_child_ttl=20.0,
    )
    scaler = Scaler(policy)
    assert scaler.plan([Member(1, 0.0, BUSY)], now=100.0).spawn == 1  # a start at 100
    members = pool(IDLE, IDLE, IDLE)
    assert scaler.plan(members, now=101.0) == Plan(deadline=120.0)
    assert scaler.plan(members, now=120.0).retire == (1, 2)


def test_queue_wait_starts_one_worker_per_uncovered_job():
    scaler = Scaler(POLICY)
    members = pool(BUSY, BUSY, BUSY, BOOTING, started=90.0)
    plan = scaler.plan(members, now=100.0, backlog=4, oldest=99.5)
    assert plan.spawn == 0
    assert plan.deadline == 100.5
    plan = scaler.plan(members, now=100.5, backlog=4, oldest=99.5)
    assert plan.spawn == 2  # 4 waiting, 1 booting worker coming, room for 2 under max_servers
    assert "4 jobs queued" in plan.reason


def test_queue_wait_off_when_threshold_is_zero():
    policy = scaling_policy(
        min_servers=1,
        max_servers=6,
        min_spare_servers=0,
        max_spare_servers=0,
        queue_wait_threshold=0.0,
    )
    assert Scaler(policy).plan(pool(BUSY), now=100.0, backlog=9, oldest=0.0) == Plan()


def test_ttin_raises_the_floor_from_the_current_count():
    scaler = Scaler(POLICY)
    assert scaler.more(4) == 5
    assert scaler.plan(pool(*[IDLE] * 4), now=100.0).spawn == 1
    # Two TTINs in one loop turn count from the floor: two more.
    assert scaler.more(4) == 6
    assert scaler.more(6) == 6  # max_servers


def test_ttin_floor_is_kept_by_autoscaling():
    scaler = Scaler(POLICY)
    scaler.more(4)
    members = pool(*[IDLE] * 5)
    scaler.plan(members, now=100.0)
    assert scaler.plan(members, now=200.0) == Plan()  # surplus, but not below the floor of 5


def test_ttou_lowers_the_ceiling_and_acts_at_once():
    scaler = Scaler(POLICY)
    assert scaler.fewer(3) == 2
    plan = scaler.plan(pool(BUSY, IDLE, BUSY), now=100.0)
    assert plan.retire == (2,)  # the idle one, at once
    # No regrowth past the ceiling, however busy the pool.
    assert scaler.plan(pool(BUSY, BUSY), now=100.0, backlog=5, oldest=0.0).spawn == 0
    assert scaler.fewer(1) == 1  # never below one


def test_ttou_takes_booting_before_busy():
    scaler = Scaler(POLICY)
    scaler.fewer(3)
    members = [Member(1, 0.0, BUSY), Member(2, 1.0, BUSY), Member(3, 99.0, BOOTING)]
    assert scaler.plan(members, now=100.0).retire == (3,)


def test_reload_floor_grows_the_new_generation_to_the_old_size():
    scaler = Scaler(POLICY)
    assert scaler.plan([], now=100.0, floor=5).spawn == 5
    assert scaler.plan([], now=100.0, floor=9).spawn == 6  # never past max_servers


def test_reset_returns_to_the_configured_bounds():
    scaler = Scaler(POLICY)
    scaler.fewer(2)
    scaler.reset(POLICY)
    assert (scaler.low, scaler.high) == (2, 6)


def test_policy_from_config_resolves_spares():
    policy = Policy.from_config(Config(min_servers=1, max_servers=4))
    assert (policy.min_spare_servers, policy.max_spare_servers) == (1, 3)


states = st.sampled_from([BOOTING, IDLE, BUSY])


@given(
    members=st.lists(st.tuples(states, st.floats(0, 200)), max_size=12),
    now=st.floats(0, 300),
    backlog=st.integers(0, 20),
    oldest=st.none() | st.floats(0, 300),
    ttin=st.integers(0, 3),
    ttou=st.integers(0, 3),
)
def test_plans_stay_in_bounds_and_never_ask_to_spin(members, now, backlog, oldest, ttin, ttou):
    scaler = Scaler(POLICY)
    pool_ = [Member(i, started, state) for i, (state, started) in enumerate(members)]
    for _ in range(ttin):
        scaler.more(len(pool_))
    for _ in range(ttou):
        scaler.fewer(len(pool_))
    # Twice, so the second plan sees the state (surplus timer, last start) the first one set.
    for _ in range(2):
        plan = scaler.plan(pool_, now, backlog=backlog, oldest=oldest)
        assert plan.deadline > now or plan.deadline == math.inf
        assert not (plan.spawn and plan.retire)
        assert len(pool_) + plan.spawn <= max(POLICY.max_servers, len(pool_))
        busy = {m.key for m in pool_ if m.state is BUSY}
        if len(pool_) <= scaler.high:  # surplus retirement: idle workers only
            assert not busy & set(plan.retire)
        assert len(pool_) - len(plan.retire) >= min(scaler.low, len(pool_))


@pytest.mark.parametrize("count", [0, 1, 5])
def test_an_empty_policy_range_still_starts_one(count):
    policy = scaling_policy(min_servers=1, max_servers=1, min_spare_servers=0, max_spare_servers=0)
    plan = Scaler(policy).plan(pool(*[IDLE] * count), now=0.0)
    assert plan.spawn == (1 if count == 0 else 0)
    assert len(plan.retire) == max(0, count - 1)


# -- remote pools: workers cut off from their broker ----------------------------------------------

DETACHED = State.DETACHED


def test_detached_workers_count_as_spare_for_as_long_as_the_broker_is_away():
    # A broker outage must not grow the pool: more workers would only wait for it too.
    scaler = Scaler(POLICY)
    members = [Member(1, 0.0, DETACHED), Member(2, 0.0, DETACHED)]
    for now in (1.0, 100.0, 10_000.0):
        plan = scaler.plan(members, now=now)
        assert plan.spawn == 0
        assert plan.deadline == math.inf  # no check_for_spawn expiry to wake up for


def test_detached_workers_are_not_surplus_and_go_before_busy_ones_on_ttou():
    scaler = Scaler(POLICY)
    members = pool(DETACHED, DETACHED, DETACHED, DETACHED)  # more than max_spare, none idle
    assert scaler.plan(members, now=1_000.0).retire == ()
    scaler.fewer(3)  # TTOU with three: at most two
    members = pool(BUSY, DETACHED, IDLE)
    assert scaler.plan(members, now=1_000.0).retire == (3,)
    scaler.fewer(2)
    assert scaler.plan(pool(BUSY, DETACHED), now=1_000.0).retire == (2,)
