"""Per-service reliability limits in the routing core (several services on one broker).

Each service the broker runs a pool for may have its own ``Limits`` (job_timeout, max_queue,
retries, kill_grace); a service without one, and every service a foreign worker registers, uses
the router's. No sockets, no clocks: frames and ``now`` in, the outbox out.
"""

from __future__ import annotations

from tests.helpers import limits

from zmqserver.errors import Status
from zmqserver.protocol import (
    JobRequest,
    encode_client_request,
    encode_ready,
    parse_broker_message,
    parse_client_reply,
)
from zmqserver.routing import Port, Router

FAST = b"fast"
SLOW = b"slow"


def make_router(**kwargs: object) -> Router:
    kwargs.setdefault("now", 0.0)
    kwargs.setdefault("limits", limits())
    return Router(FAST, services=(SLOW,), **kwargs)  # type: ignore[arg-type]


def ready(router: Router, worker: bytes, service: bytes, now: float = 0.0) -> None:
    router.on_worker(worker, encode_ready(service), now)


def request(
    router: Router,
    client: bytes,
    service: bytes,
    now: float = 0.0,
    *,
    request_id: int | None = None,
    flags: int = 0,
) -> None:
    frames = encode_client_request(service, [b"job"], request_id=request_id, flags=flags)
    router.on_client(client, frames, now)


def replies(router: Router) -> dict[bytes, Status]:
    """Client -> status of each frontend message in the outbox."""
    out = {}
    for port, peer, frames in router.take_outbox():
        if port is Port.FRONTEND:
            out[peer] = parse_client_reply(frames).status
    return out


def jobs(router: Router) -> list[tuple[bytes, JobRequest]]:
    sent = []
    for port, peer, frames in router.take_outbox():
        if port is Port.BACKEND:
            msg = parse_broker_message(frames)
            if isinstance(msg, JobRequest):
                sent.append((peer, msg))
    return sent


def test_each_service_gets_its_own_limits_and_others_the_routers():
    router = make_router(
        limits=limits(job_timeout=60.0),
        service_limits={SLOW: limits(job_timeout=5.0, max_queue=1)},
    )
    assert router.services[SLOW].limits == limits(job_timeout=5.0, max_queue=1)
    assert router.services[FAST].limits is None  # the router's
    ready(router, b"w-foreign", b"other")
    assert router.services[b"other"].limits is None


def test_max_queue_is_per_service():
    router = make_router(service_limits={SLOW: limits(max_queue=1)})
    request(router, b"s1", SLOW)
    request(router, b"s2", SLOW)  # the second queued job: over SLOW's limit
    for i in range(5):  # FAST has no limit
        request(router, b"f%d" % i, FAST)
    assert replies(router) == {b"s2": Status.QUEUE_FULL}
    assert router.waiting(SLOW) == 1
    assert router.waiting(FAST) == 5


def test_job_timeout_is_per_service_and_a_client_deadline_still_wins():
    router = make_router(
        limits=limits(job_timeout=10.0), service_limits={SLOW: limits(job_timeout=2.0)}
    )
    request(router, b"slow", SLOW, now=0.0)
    request(router, b"fast", FAST, now=0.0)
    request(router, b"own", SLOW, now=0.0, request_id=7)  # no timeout in its header: 2 s
    router.on_tick(1.9)
    assert replies(router) == {}
    router.on_tick(2.0)
    assert replies(router) == {b"slow": Status.EXPIRED, b"own": Status.EXPIRED}
    assert router.next_deadline() <= 10.0
    router.on_tick(10.0)
    assert replies(router) == {b"fast": Status.EXPIRED}


def test_deadlines_fire_in_order_whether_they_came_in_order_or_not():
    """Most first deadlines come in order and go to the router's FIFO; a client's shorter one
    (and a resend that moves a deadline) must not be held up behind them, nor hold them up."""
    router = make_router(limits=limits(job_timeout=10.0), heartbeat_interval=1000.0)

    def send(client: bytes, now: float, timeout_ms: int = 0, request_id: int | None = None) -> None:
        frames = encode_client_request(FAST, [b"job"], request_id=request_id, timeout_ms=timeout_ms)
        router.on_client(client, frames, now)

    send(b"a", 0.0)  # due at 10
    send(b"b", 1.0, request_id=1)  # due at 11
    send(b"c", 2.0)  # due at 12
    send(b"short", 3.0, timeout_ms=500, request_id=2)  # due at 3.5: before the FIFO's last
    send(b"long", 4.0, timeout_ms=100_000, request_id=3)  # due at 104
    assert router.next_deadline() == 3.5
    send(b"b", 5.0, timeout_ms=20_000, request_id=1)  # a resend: b is now due at 25
    router.on_tick(3.5)
    assert replies(router) == {b"short": Status.EXPIRED}
    assert router.next_deadline() == 10.0
    router.on_tick(11.0)
    assert replies(router) == {b"a": Status.EXPIRED}  # not b: its deadline moved
    router.on_tick(12.0)
    assert replies(router) == {b"c": Status.EXPIRED}  # not held up behind b
    assert router.next_deadline() <= 25.0
    router.on_tick(24.9)
    assert replies(router) == {}
    router.on_tick(25.0)
    assert replies(router) == {b"b": Status.EXPIRED}
    router.on_tick(103.9)
    assert replies(router) == {}
    router.on_tick(104.0)
    assert replies(router) == {b"long": Status.EXPIRED}
    assert router.next_deadline() == router._heartbeat_at


def test_retries_and_max_attempts_follow_the_jobs_service():
    router = make_router(
        limits=limits(retry_jobs=False),
        service_limits={SLOW: limits(retry_jobs=True, max_attempts=2)},
    )
    ready(router, b"w1", SLOW)
    ready(router, b"w2", FAST)
    request(router, b"s", SLOW)
    request(router, b"f", FAST)
    assert len(jobs(router)) == 2
    router.worker_gone(b"w1", "killed")  # SLOW retries plain jobs: requeued
    router.worker_gone(b"w2", "killed")  # FAST does not: worker_lost
    assert replies(router) == {b"f": Status.WORKER_LOST}
    assert router.waiting(SLOW) == 1
    ready(router, b"w3", SLOW)
    ((peer, _),) = jobs(router)
    assert peer == b"w3"
    router.worker_gone(b"w3", "killed again")  # the second attempt was the last
    assert replies(router) == {b"s": Status.WORKER_LOST}


def test_kill_grace_is_per_service():
    router = make_router(
        limits=limits(kill_grace=5.0),
        service_limits={SLOW: limits(kill_grace=0.5)},
        heartbeat_interval=100.0,  # no heartbeat expiry in the way
    )
    ready(router, b"ws", SLOW)
    ready(router, b"wf", FAST)
    for client, service in ((b"s", SLOW), (b"f", FAST)):
        frames = encode_client_request(service, [b"x"], request_id=1, timeout_ms=1000)
        router.on_client(client, frames, 0.0)
    assert len(jobs(router)) == 2
    router.on_tick(1.0)  # both deadlines pass while running: both clients hear expired
    assert replies(router) == {b"s": Status.EXPIRED, b"f": Status.EXPIRED}
    router.on_tick(1.4)
    assert router.take_kills() == []
    router.on_tick(1.5)  # SLOW's grace is over
    assert router.take_kills() == [b"ws"]
    router.on_tick(5.9)
    assert router.take_kills() == []
    router.on_tick(6.0)  # the router's grace is over
    assert router.take_kills() == [b"wf"]


def test_set_limits_replaces_both_policies_for_new_jobs():
    router = make_router(service_limits={SLOW: limits(max_queue=1)})
    router.set_limits(limits(max_queue=1), {SLOW: limits(max_queue=3)})
    assert router.services[FAST].limits is None
    for i in range(4):
        request(router, b"s%d" % i, SLOW)
    request(router, b"f0", FAST)
    request(router, b"f1", FAST)
    assert replies(router) == {b"s3": Status.QUEUE_FULL, b"f1": Status.QUEUE_FULL}


def test_a_service_without_limits_uses_the_routers_after_it_comes_back():
    # A foreign service is forgotten with its last worker and created afresh by the next READY.
    router = make_router(limits=limits(job_timeout=3.0), service_limits={SLOW: limits()})
    ready(router, b"w", b"other")
    router.worker_gone(b"w", "gone")
    assert b"other" not in router.services
    ready(router, b"w2", b"other")
    ready(router, b"w3", b"other")
    router.on_client(b"c", encode_client_request(b"other", [b"x"]), 0.0)
    ((_, job),) = jobs(router)
    assert router.jobs[job.address].deadline == 3.0
    assert router.services[SLOW].limits == limits()


def test_unknown_service_still_refused_with_the_routers_limits():
    router = make_router(limits=limits(job_timeout=1.0), service_limits={SLOW: limits()})
    request(router, b"c", b"nope")
    assert replies(router) == {b"c": Status.UNKNOWN_SERVICE}
