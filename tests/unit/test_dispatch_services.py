"""Per-service reliability limits in the dispatch core (several services on one broker).

Each service the broker runs a pool for may have its own ``Limits`` (job_timeout, max_queue,
retries, kill_grace); a service without one, and every service a foreign worker registers, uses
the dispatcher's. No sockets, no clocks: frames and ``now`` in, the outbox out.
"""

from __future__ import annotations

from tests.helpers import limits

from zmqserver.broker import Dispatcher
from zmqserver.errors import Status
from zmqserver.protocol import JobRequest, encode_client_request

from . import dispatch_helpers as helpers
from .dispatch_helpers import jobs_sent, mdp_request, ready, statuses

FAST = b"fast"
SLOW = b"slow"


def make_dispatcher(**kwargs: object) -> Dispatcher:
    """FAST is the default service; SLOW is known from the start too."""
    return helpers.make_dispatcher(FAST, services=(SLOW,), **kwargs)


def replies(dispatcher: Dispatcher) -> dict[bytes, Status]:
    return statuses(dispatcher.take_outbox())


def jobs(dispatcher: Dispatcher) -> list[tuple[bytes, JobRequest]]:
    return jobs_sent(dispatcher.take_outbox())


def test_each_service_gets_its_own_limits_and_others_the_routers():
    dispatcher = make_dispatcher(
        limits=limits(job_timeout=60.0),
        service_limits={SLOW: limits(job_timeout=5.0, max_queue=1)},
    )
    assert dispatcher.services[SLOW].limits == limits(job_timeout=5.0, max_queue=1)
    assert dispatcher.services[FAST].limits is None  # the dispatcher's
    ready(dispatcher, b"w-foreign", service=b"other")
    assert dispatcher.services[b"other"].limits is None


def test_max_queue_is_per_service():
    dispatcher = make_dispatcher(service_limits={SLOW: limits(max_queue=1)})
    mdp_request(dispatcher, b"s1", service=SLOW)
    mdp_request(dispatcher, b"s2", service=SLOW)  # the second queued job: over SLOW's limit
    for i in range(5):  # FAST has no limit
        mdp_request(dispatcher, b"f%d" % i, service=FAST)
    assert replies(dispatcher) == {b"s2": Status.QUEUE_FULL}
    assert dispatcher.waiting(SLOW) == 1
    assert dispatcher.waiting(FAST) == 5


def test_job_timeout_is_per_service_and_a_client_deadline_still_wins():
    dispatcher = make_dispatcher(
        limits=limits(job_timeout=10.0), service_limits={SLOW: limits(job_timeout=2.0)}
    )
    mdp_request(dispatcher, b"slow", service=SLOW, now=0.0)
    mdp_request(dispatcher, b"fast", service=FAST, now=0.0)
    mdp_request(
        dispatcher, b"own", service=SLOW, now=0.0, request_id=7
    )  # no timeout in its header: 2 s
    dispatcher.on_tick(1.9)
    assert replies(dispatcher) == {}
    dispatcher.on_tick(2.0)
    assert replies(dispatcher) == {b"slow": Status.EXPIRED, b"own": Status.EXPIRED}
    assert dispatcher.next_deadline() <= 10.0
    dispatcher.on_tick(10.0)
    assert replies(dispatcher) == {b"fast": Status.EXPIRED}


def test_deadlines_fire_in_order_whether_they_came_in_order_or_not():
    """Most first deadlines come in order and go to the dispatcher's FIFO; a client's shorter one
    (and a resend that moves a deadline) must not be held up behind them, nor hold them up."""
    dispatcher = make_dispatcher(limits=limits(job_timeout=10.0), heartbeat_interval=1000.0)

    def send(client: bytes, now: float, timeout_ms: int = 0, request_id: int | None = None) -> None:
        frames = encode_client_request(FAST, [b"job"], request_id=request_id, timeout_ms=timeout_ms)
        dispatcher.on_client(client, frames, now)

    send(b"a", 0.0)  # due at 10
    send(b"b", 1.0, request_id=1)  # due at 11
    send(b"c", 2.0)  # due at 12
    send(b"short", 3.0, timeout_ms=500, request_id=2)  # due at 3.5: before the FIFO's last
    send(b"long", 4.0, timeout_ms=100_000, request_id=3)  # due at 104
    assert dispatcher.next_deadline() == 3.5
    send(b"b", 5.0, timeout_ms=20_000, request_id=1)  # a resend: b is now due at 25
    dispatcher.on_tick(3.5)
    assert replies(dispatcher) == {b"short": Status.EXPIRED}
    assert dispatcher.next_deadline() == 10.0
    dispatcher.on_tick(11.0)
    assert replies(dispatcher) == {b"a": Status.EXPIRED}  # not b: its deadline moved
    dispatcher.on_tick(12.0)
    assert replies(dispatcher) == {b"c": Status.EXPIRED}  # not held up behind b
    assert dispatcher.next_deadline() <= 25.0
    dispatcher.on_tick(24.9)
    assert replies(dispatcher) == {}
    dispatcher.on_tick(25.0)
    assert replies(dispatcher) == {b"b": Status.EXPIRED}
    dispatcher.on_tick(103.9)
    assert replies(dispatcher) == {}
    dispatcher.on_tick(104.0)
    assert replies(dispatcher) == {b"long": Status.EXPIRED}
    assert dispatcher.next_deadline() == dispatcher._heartbeat_at


def test_retries_and_max_attempts_follow_the_jobs_service():
    dispatcher = make_dispatcher(
        limits=limits(retry_jobs=False),
        service_limits={SLOW: limits(retry_jobs=True, max_attempts=2)},
    )
    ready(dispatcher, b"w1", service=SLOW)
    ready(dispatcher, b"w2", service=FAST)
    mdp_request(dispatcher, b"s", service=SLOW)
    mdp_request(dispatcher, b"f", service=FAST)
    assert len(jobs(dispatcher)) == 2
    dispatcher.worker_gone(b"w1", "killed")  # SLOW retries plain jobs: requeued
    dispatcher.worker_gone(b"w2", "killed")  # FAST does not: worker_lost
    assert replies(dispatcher) == {b"f": Status.WORKER_LOST}
    assert dispatcher.waiting(SLOW) == 1
    ready(dispatcher, b"w3", service=SLOW)
    ((peer, _),) = jobs(dispatcher)
    assert peer == b"w3"
    dispatcher.worker_gone(b"w3", "killed again")  # the second attempt was the last
    assert replies(dispatcher) == {b"s": Status.WORKER_LOST}


def test_kill_grace_is_per_service():
    dispatcher = make_dispatcher(
        limits=limits(kill_grace=5.0),
        service_limits={SLOW: limits(kill_grace=0.5)},
        heartbeat_interval=100.0,  # no heartbeat expiry in the way
    )
    ready(dispatcher, b"ws", service=SLOW)
    ready(dispatcher, b"wf", service=FAST)
    for client, service in ((b"s", SLOW), (b"f", FAST)):
        frames = encode_client_request(service, [b"x"], request_id=1, timeout_ms=1000)
        dispatcher.on_client(client, frames, 0.0)
    assert len(jobs(dispatcher)) == 2
    dispatcher.on_tick(1.0)  # both deadlines pass while running: both clients hear expired
    assert replies(dispatcher) == {b"s": Status.EXPIRED, b"f": Status.EXPIRED}
    dispatcher.on_tick(1.4)
    assert dispatcher.take_kills() == []
    dispatcher.on_tick(1.5)  # SLOW's grace is over
    assert dispatcher.take_kills() == [b"ws"]
    dispatcher.on_tick(5.9)
    assert dispatcher.take_kills() == []
    dispatcher.on_tick(6.0)  # the dispatcher's grace is over
    assert dispatcher.take_kills() == [b"wf"]


def test_set_limits_replaces_both_policies_for_new_jobs():
    dispatcher = make_dispatcher(service_limits={SLOW: limits(max_queue=1)})
    dispatcher.set_limits(limits(max_queue=1), {SLOW: limits(max_queue=3)})
    assert dispatcher.services[FAST].limits is None
    for i in range(4):
        mdp_request(dispatcher, b"s%d" % i, service=SLOW)
    mdp_request(dispatcher, b"f0", service=FAST)
    mdp_request(dispatcher, b"f1", service=FAST)
    assert replies(dispatcher) == {b"s3": Status.QUEUE_FULL, b"f1": Status.QUEUE_FULL}


def test_a_service_without_limits_uses_the_routers_after_it_comes_back():
    # A foreign service is forgotten with its last worker and created afresh by the next READY.
    dispatcher = make_dispatcher(limits=limits(job_timeout=3.0), service_limits={SLOW: limits()})
    ready(dispatcher, b"w", service=b"other")
    dispatcher.worker_gone(b"w", "gone")
    assert b"other" not in dispatcher.services
    ready(dispatcher, b"w2", service=b"other")
    ready(dispatcher, b"w3", service=b"other")
    dispatcher.on_client(b"c", encode_client_request(b"other", [b"x"]), 0.0)
    ((_, job),) = jobs(dispatcher)
    assert dispatcher.jobs[job.address].deadline == 3.0
    assert dispatcher.services[SLOW].limits == limits()


def test_unknown_service_still_refused_with_the_routers_limits():
    dispatcher = make_dispatcher(
        limits=limits(job_timeout=1.0, unknown_service_wait=0), service_limits={SLOW: limits()}
    )
    mdp_request(dispatcher, b"c", service=b"nope")
    assert replies(dispatcher) == {b"c": Status.UNKNOWN_SERVICE}
