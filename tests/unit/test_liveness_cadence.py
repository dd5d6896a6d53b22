"""Each worker judged by its own cadence; busy RFC workers by their job's deadline (liveness.py).

RFC workers in the wild (the ZeroMQ guide's, majortomo) heartbeat every 2.5 s and send nothing
while they run a job. Against the broker's 1 s x 3 they were dropped while idle and lost every
job longer than 3-4 s. An injected clock, no sockets.
"""

from __future__ import annotations

import pytest
from tests.helpers import limits
from tests.unit.dispatch_helpers import (
    backend,
    finish,
    make_dispatcher,
    mdp_request,
    only_job,
    ready,
    sent,
)

from zmqserver.broker import Dispatcher
from zmqserver.broker.liveness import MAX_CADENCE
from zmqserver.errors import Status
from zmqserver.protocol import Disconnect, Heartbeat, encode_heartbeat


def guide_worker_idles(dispatcher: Dispatcher, start: float, until: float) -> float:
    """An RFC worker ``W`` whose loop wakes on each broker heartbeat (every tick, 1 s) and
    heartbeats on the first wake 2.5 s past its last one, as the guide's mdwrkapi does; the
    broker ticks each second from ``start`` to ``until``. Its last heartbeat's time."""
    last = start
    now = start
    while now < until:
        now += 1.0
        dispatcher.on_tick(now)
        if b"W" in dispatcher.workers and now - last >= 2.5:
            last = now + 0.01
            dispatcher.on_worker(b"W", encode_heartbeat(), last)
    return last


def disconnected(dispatcher: Dispatcher) -> list[bytes]:
    return [peer for peer, msg in backend(dispatcher.take_outbox()) if isinstance(msg, Disconnect)]


def test_an_rfc_worker_heartbeating_every_2_5_s_stays_registered_with_default_settings():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"W", foreign=True)
    guide_worker_idles(dispatcher, 0.0, 60.0)
    assert b"W" in dispatcher.workers
    assert disconnected(dispatcher) == []
    assert dispatcher.workers[b"W"].cadence == pytest.approx(3.0)  # first wake-up past 2.5 s


def test_its_first_heartbeat_a_turn_late_is_still_in_time():
    """Before any gap is seen, an RFC worker is given the guide's 2.5 s x liveness."""
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"W", foreign=True)
    for now in (1.0, 2.0, 3.0):
        dispatcher.on_tick(now)
    dispatcher.on_worker(b"W", encode_heartbeat(), 3.5)
    for now in (4.0, 5.0, 6.0):
        dispatcher.on_tick(now)
    assert b"W" in dispatcher.workers


def test_a_silent_rfc_worker_is_dropped_after_liveness_times_its_own_cadence():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"W", foreign=True)
    last = guide_worker_idles(dispatcher, 0.0, 20.0)  # cadence 3 s: patience 9 s
    dispatcher.take_outbox()
    now = 20.0
    while b"W" in dispatcher.workers:
        now += 1.0
        dispatcher.on_tick(now)
    assert last + 9.0 < now <= last + 10.0


def test_a_zmqserver_worker_is_still_judged_by_the_broker_s_interval():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"A")  # credit header: ours
    for now in (1.0, 2.0, 3.0):
        dispatcher.on_tick(now)
    assert disconnected(dispatcher) == []
    dispatcher.on_tick(4.0)
    assert disconnected(dispatcher) == [b"A"]


def test_a_peer_with_a_fast_cadence_is_judged_by_the_broker_s_interval_not_faster():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"W", foreign=True)
    for i in range(1, 40):
        dispatcher.on_worker(b"W", encode_heartbeat(), i * 0.1)
    assert dispatcher.workers[b"W"].expiry == 3.9 + 3.0


def test_the_cadence_is_capped_and_a_stall_of_the_broker_is_not_a_gap():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"W", foreign=True)
    beats = [7.0, 27.0, 86.0, 226.0]  # each gap within 3 x the cadence learnt before it
    now = 0.0
    while beats:
        now += 1.0
        dispatcher.on_tick(now)
        if now == beats[0]:
            dispatcher.on_worker(b"W", encode_heartbeat(), beats.pop(0))
    assert dispatcher.workers[b"W"].cadence == MAX_CADENCE
    ready(dispatcher, b"V", now=now, foreign=True)
    dispatcher.on_tick(now + 10.0)  # the broker stalled for 10 s: V's heartbeats waited unread
    dispatcher.on_worker(b"V", encode_heartbeat(), now + 10.0)
    assert dispatcher.workers[b"V"].cadence == 0.0  # nothing learnt from the stall


def test_a_busy_rfc_worker_silent_for_10_s_finishes_its_job():
    """The guide's worker sends nothing while it runs a job: its deadline governs, not silence.
    The broker heartbeats it meanwhile (a send that fails finds a dead peer)."""
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"W", foreign=True)
    mdp_request(dispatcher, b"c1", request_id=1)
    worker, job = only_job(dispatcher)
    for now in range(1, 11):
        dispatcher.on_tick(float(now))
        assert backend(dispatcher.take_outbox()) == [(b"W", Heartbeat())]
    assert b"W" in dispatcher.workers
    finish(dispatcher, b"W", job, now=10.5)
    jobs, answers = sent(dispatcher)
    assert answers == {b"c1": Status.OK}


def test_a_busy_rfc_worker_past_its_deadline_is_dropped_after_kill_grace():
    dispatcher = make_dispatcher(
        heartbeat_interval=1.0,
        heartbeat_liveness=3,
        limits=limits(job_timeout=5.0, kill_grace=2.0),
    )
    ready(dispatcher, b"W", foreign=True)
    mdp_request(dispatcher, b"c1")
    only_job(dispatcher)
    for now in range(1, 6):
        dispatcher.on_tick(float(now))
    jobs, answers = sent(dispatcher)
    assert answers == {b"c1": Status.EXPIRED}
    dispatcher.on_tick(6.0)
    assert b"W" in dispatcher.workers
    dispatcher.on_tick(7.0)
    assert disconnected(dispatcher) == [b"W"]
    assert dispatcher.take_kills() == [b"W"]  # (the shell kills only workers it forked)


def test_a_failed_heartbeat_to_a_busy_rfc_worker_loses_its_job_it_does_not_hand_it_back():
    """The job got there before the heartbeat failed: it may have run, so it is lost (retried
    only if the client allows), never requeued as unread."""
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"W", foreign=True)
    mdp_request(dispatcher, b"c1", request_id=1)  # not retryable
    only_job(dispatcher)
    dispatcher.on_tick(1.0)
    dispatcher.take_outbox()
    dispatcher.worker_gone(b"W", "unreachable: Host unreachable", undelivered=True)
    jobs, answers = sent(dispatcher)
    assert answers == {b"c1": Status.WORKER_LOST}
    assert dispatcher.workers == {}


def test_an_undelivered_job_to_an_rfc_worker_is_still_handed_back():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"W", foreign=True)
    ready(dispatcher, b"V", foreign=True)
    mdp_request(dispatcher, b"c1", request_id=1)
    worker, job = only_job(dispatcher)
    dispatcher.worker_gone(worker, "unreachable: Host unreachable", undelivered=True)
    jobs, answers = sent(dispatcher)
    assert [peer for peer, _ in jobs] == [b"V" if worker == b"W" else b"W"]
    assert answers == {}


def test_an_rfc_worker_seen_heartbeating_while_busy_is_judged_by_its_silence():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"W", foreign=True)
    mdp_request(dispatcher, b"c1", request_id=1)
    only_job(dispatcher)
    # An idle heartbeat it sent before the job reached it proves nothing...
    dispatcher.on_worker(b"W", encode_heartbeat(), 0.01)
    assert not dispatcher.workers[b"W"].beats_busy
    # ...one half an interval into the job does.
    dispatcher.on_worker(b"W", encode_heartbeat(), 0.6)
    assert dispatcher.workers[b"W"].beats_busy
    now = 0.6
    while b"W" in dispatcher.workers:
        now += 1.0
        dispatcher.on_tick(now)
    assert now <= 0.6 + 7.5 + 1.0  # its patience (cadence unknown: 2.5 s x 3), not a deadline
    jobs, answers = sent(dispatcher)
    assert answers == {b"c1": Status.WORKER_LOST}


def test_a_forked_worker_with_a_plain_ready_is_ours():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    dispatcher.forked = lambda identity: identity == b"pid:1"
    ready(dispatcher, b"pid:1", foreign=True)  # worker_credit 1: a plain RFC 18 READY
    ready(dispatcher, b"W", foreign=True)
    assert dispatcher.workers[b"pid:1"].beats_busy
    assert not dispatcher.workers[b"W"].beats_busy
