"""Heartbeat silence that is not death (broker/liveness.py), on an injected clock and host.

A stall of the broker (a jump of ``now`` with no turn in between: SIGSTOP, a paused host) must
not expire workers whose heartbeats wait unread; a busy local worker whose process the host sees
running is left to its job's deadline; remote, idle and stopped workers expire as before.
"""

from __future__ import annotations

from tests.helpers import limits
from tests.unit.dispatch_helpers import (
    finish,
    make_dispatcher,
    mdp_request,
    only_job,
    plain_request,
    ready,
    sent,
)

from zmqserver.broker import Dispatcher
from zmqserver.broker.events import BrokerStalled, WorkerSilentButRunning
from zmqserver.errors import Status
from zmqserver.protocol import encode_heartbeat


def ticks(dispatcher: Dispatcher, *times: float) -> None:
    """A broker that runs: a turn at each of ``times`` (at least one an interval)."""
    for now in times:
        dispatcher.on_tick(now)


def two_workers_one_busy() -> Dispatcher:
    """A (busy with c1's job) and B (idle), both last heard at 2.0; interval 1 s, liveness 3."""
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"A")
    ready(dispatcher, b"B")
    plain_request(dispatcher, b"c1")
    for now in (1.0, 2.0):  # each heartbeats at the broker's interval
        dispatcher.on_tick(now)
        for worker in (b"A", b"B"):
            dispatcher.on_worker(worker, encode_heartbeat(), now)
    dispatcher.take_outbox()
    dispatcher.take_events()
    return dispatcher


# -- a stall of the broker ------------------------------------------------------------------------


def test_after_a_stall_nobody_expires_before_what_waits_is_read():
    dispatcher = two_workers_one_busy()
    dispatcher.on_tick(7.0)  # the broker did not run from 2.0 to 7.0 (SIGSTOP 5 s)
    assert dispatcher.take_kills() == []
    assert set(dispatcher.workers) == {b"A", b"B"}
    (stall,) = [e for e in dispatcher.take_events() if isinstance(e, BrokerStalled)]
    assert stall.lost == 4.0
    assert stall.workers == 2
    # The heartbeats sent meanwhile are read after the jump: everyone is alive.
    for worker in (b"A", b"B"):
        dispatcher.on_worker(worker, encode_heartbeat(), 7.01)
    ticks(dispatcher, 8.0, 9.0, 10.0)
    assert dispatcher.take_kills() == []
    assert set(dispatcher.workers) == {b"A", b"B"}


def test_after_a_stall_a_reply_read_first_is_the_job_s_one_outcome():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"A")
    mdp_request(dispatcher, b"c1")
    worker, job = only_job(dispatcher)
    ticks(dispatcher, 1.0, 2.0)
    finish(dispatcher, b"A", job, now=6.0)  # the job ended during the stall: its reply waited
    jobs, answers = sent(dispatcher)
    assert answers == {b"c1": Status.OK}
    ticks(dispatcher, 6.5, 7.0, 8.0)
    assert dispatcher.take_kills() == []
    assert b"A" in dispatcher.workers


def test_a_stall_does_not_save_a_worker_that_stays_silent_after_it():
    dispatcher = two_workers_one_busy()
    dispatcher.on_tick(7.0)  # stall of 4 s past the interval: expiries move from 5.0 to 9.0
    ticks(dispatcher, 8.0, 9.0)
    assert dispatcher.take_kills() == []
    ticks(dispatcher, 10.0)
    assert sorted(dispatcher.take_kills()) == [b"A", b"B"]


def test_a_late_wake_up_moves_expiry_by_the_lateness_only_and_logs_nothing():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"A")
    ticks(dispatcher, 1.05, 2.1, 3.08)  # turns 50 ms late: expiry 3.0 -> 3.1
    assert dispatcher.take_kills() == []
    ticks(dispatcher, 4.1)
    assert dispatcher.take_kills() == [b"A"]
    assert not [e for e in dispatcher.take_events() if isinstance(e, BrokerStalled)]


# -- local workers: the host vouches for a running process ----------------------------------------


def test_busy_local_worker_silent_but_running_is_left_to_the_job_deadline():
    dispatcher = make_dispatcher(
        heartbeat_interval=1.0,
        heartbeat_liveness=3,
        limits=limits(job_timeout=10.0, kill_grace=2.0),
    )
    asked: list[bytes] = []
    dispatcher.process_running = lambda identity: asked.append(identity) or True
    ready(dispatcher, b"A")
    mdp_request(dispatcher, b"c1")
    only_job(dispatcher)
    ticks(dispatcher, *(float(t) for t in range(1, 10)))  # silent since 0: expiry 3.0
    assert dispatcher.take_kills() == []
    assert b"A" in dispatcher.workers
    assert asked == [b"A"] * 6  # asked at each tick past its expiry: 4.0 .. 9.0
    silent = [e for e in dispatcher.take_events() if isinstance(e, WorkerSilentButRunning)]
    assert silent[0].silent == 4.0
    dispatcher.take_outbox()
    dispatcher.on_tick(10.0)  # the deadline: the client hears expired, the worker gets its grace
    jobs, answers = sent(dispatcher)
    assert answers == {b"c1": Status.EXPIRED}
    assert dispatcher.take_kills() == []
    ticks(dispatcher, 11.0, 12.0)
    assert dispatcher.take_kills() == [b"A"]


def test_busy_remote_worker_silent_is_expired_as_before():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    dispatcher.process_running = lambda identity: False  # not one the host forked
    ready(dispatcher, b"A")
    mdp_request(dispatcher, b"c1")
    only_job(dispatcher)
    ticks(dispatcher, 1.0, 2.0, 3.0, 4.0)
    assert dispatcher.take_kills() == [b"A"]
    jobs, answers = sent(dispatcher)
    assert answers == {b"c1": Status.WORKER_LOST}


def test_idle_local_worker_silent_is_expired_even_if_its_process_runs():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    dispatcher.process_running = lambda identity: True
    ready(dispatcher, b"A")
    ticks(dispatcher, 1.0, 2.0, 3.0, 4.0)
    assert dispatcher.take_kills() == [b"A"]


def test_busy_local_worker_stopped_later_is_expired_at_the_next_tick():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    state = {"running": True}
    dispatcher.process_running = lambda identity: state["running"]
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1")
    only_job(dispatcher)
    ticks(dispatcher, 1.0, 2.0, 3.0, 4.0, 5.0)
    assert dispatcher.take_kills() == []
    state["running"] = False  # SIGSTOP
    ticks(dispatcher, 6.0)
    assert dispatcher.take_kills() == [b"A"]


def test_busy_local_worker_that_speaks_again_is_not_asked_about():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    asked: list[bytes] = []
    dispatcher.process_running = lambda identity: asked.append(identity) or True
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1")
    only_job(dispatcher)
    ticks(dispatcher, 1.0, 2.0, 3.0, 4.0)
    dispatcher.on_worker(b"A", encode_heartbeat(), 4.5)  # the C call returned
    ticks(dispatcher, 5.0, 6.0, 7.0)
    assert asked == [b"A"]
