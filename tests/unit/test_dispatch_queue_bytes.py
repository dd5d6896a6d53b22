"""max_queue_bytes in the dispatch core: a bound on the bytes a service's queue holds.

Each queued job counts its body's ``charged_size`` (its bytes, plus ``FRAME_OVERHEAD`` a frame:
the measure of max_message_size), added to its service's ``queued_bytes`` when it joins the
queue and taken off when it leaves (dispatched, expired, shut down), so the check is O(1). A
request that would take the queue past the bound gets ``queue_full``; a job requeued after its
worker was lost never does. No sockets, no clocks: frames and ``now`` in, the outbox out.
"""

from __future__ import annotations

import pytest
from tests.helpers import limits

from zmqserver.broker import Dispatcher
from zmqserver.broker.state import FRAME_OVERHEAD, Limits, charged_size
from zmqserver.config import Config
from zmqserver.errors import ConfigError, Status
from zmqserver.protocol import FLAG_RETRYABLE, encode_client_request, parse_client_reply

from . import dispatch_helpers as helpers
from .dispatch_helpers import DEFAULT, finish, frontend, mdp_request, ready, sent

OTHER = b"other"
#: A request's body here: one frame of 1000 bytes, counted as 1064.
BODY = b"x" * 1000
SIZE = len(BODY) + FRAME_OVERHEAD


def make_dispatcher(**kwargs: object) -> Dispatcher:
    """DEFAULT and OTHER are both known; strict LRU (credit 1), so jobs queue behind a busy
    worker."""
    kwargs.setdefault("limits", limits(worker_credit=1))
    return helpers.make_dispatcher(DEFAULT, services=(OTHER,), **kwargs)


def request(
    dispatcher: Dispatcher, client: bytes, *, service: bytes = DEFAULT, **kw: object
) -> None:
    mdp_request(dispatcher, client, BODY, service=service, request_id=1, **kw)  # type: ignore[arg-type]


def queued_bytes(dispatcher: Dispatcher, service: bytes = DEFAULT) -> int:
    return dispatcher.services[service].queued_bytes


def live_sum(dispatcher: Dispatcher, service: bytes = DEFAULT) -> int:
    return sum(job.size for job in dispatcher.services[service].queue if not job.done)


def test_a_request_past_the_byte_bound_gets_queue_full_saying_bytes():
    dispatcher = make_dispatcher(limits=limits(worker_credit=1, max_queue_bytes=3 * SIZE))
    for n in range(4):
        request(dispatcher, b"c%d" % n)
    assert queued_bytes(dispatcher) == 3 * SIZE  # exactly at the bound: still accepted
    out = dispatcher.take_outbox()
    ((client, frames),) = frontend(out)
    reply = parse_client_reply(frames)
    assert (client, reply.status) == (b"c3", Status.QUEUE_FULL)
    assert reply.body == [
        f"{3 * SIZE} bytes already queued for this service; this request's {SIZE} would pass "
        f"max_queue_bytes ({3 * SIZE} bytes)".encode()
    ]
    request(dispatcher, b"c4")
    assert sent(dispatcher)[1] == {b"c4": Status.QUEUE_FULL}
    assert dispatcher.waiting() == 3
    # A worker takes the head of the queue: room for one more.
    ready(dispatcher, b"W")
    assert queued_bytes(dispatcher) == 2 * SIZE
    request(dispatcher, b"c5")
    assert sent(dispatcher)[1] == {}
    assert queued_bytes(dispatcher) == 3 * SIZE == live_sum(dispatcher)


def test_the_size_is_charged_as_for_max_message_size_frames_included():
    """Many small frames cost their per-frame charge here too: a request of 50 empty frames
    is 3200 bytes, not 0."""
    dispatcher = make_dispatcher(limits=limits(worker_credit=1, max_queue_bytes=5000))
    frames = [b""] * 50
    for client in (b"a", b"b"):
        dispatcher.on_client(client, encode_client_request(DEFAULT, frames), 0.0)
    assert charged_size(frames) == 50 * FRAME_OVERHEAD
    assert queued_bytes(dispatcher) == 50 * FRAME_OVERHEAD
    assert sent(dispatcher)[1] == {b"b": Status.QUEUE_FULL}


def test_a_lone_request_larger_than_the_bound_may_queue():
    """With nothing queued, a job may go straight to a worker, so the bound refuses none: like
    max_queue, it refuses only what would queue behind others."""
    dispatcher = make_dispatcher(limits=limits(worker_credit=1, max_queue_bytes=SIZE // 2))
    request(dispatcher, b"big")
    request(dispatcher, b"next")
    assert sent(dispatcher)[1] == {b"next": Status.QUEUE_FULL}
    assert queued_bytes(dispatcher) == SIZE


def test_zero_means_no_byte_limit():
    dispatcher = make_dispatcher(limits=limits(worker_credit=1, max_queue_bytes=0, max_queue=0))
    for n in range(300):
        request(dispatcher, b"c%d" % n)
    assert sent(dispatcher)[1] == {}
    assert queued_bytes(dispatcher) == 300 * SIZE


def test_max_queue_bytes_is_per_service():
    dispatcher = make_dispatcher(service_limits={OTHER: limits(max_queue_bytes=2 * SIZE)})
    for n in range(4):
        request(dispatcher, b"o%d" % n, service=OTHER)
        request(dispatcher, b"d%d" % n)  # the default service has the default, 256 MiB
    assert sent(dispatcher)[1] == {b"o2": Status.QUEUE_FULL, b"o3": Status.QUEUE_FULL}
    assert (queued_bytes(dispatcher, OTHER), queued_bytes(dispatcher)) == (2 * SIZE, 4 * SIZE)
    # HUP: a new policy applies to new requests; what is queued stays counted.
    dispatcher.set_limits(limits(), {OTHER: limits(max_queue_bytes=3 * SIZE)})
    request(dispatcher, b"o4", service=OTHER)
    request(dispatcher, b"o5", service=OTHER)
    assert sent(dispatcher)[1] == {b"o5": Status.QUEUE_FULL}
    assert queued_bytes(dispatcher, OTHER) == 3 * SIZE == live_sum(dispatcher, OTHER)


def test_jobs_leaving_the_queue_take_their_bytes_with_them():
    dispatcher = make_dispatcher(limits=limits(worker_credit=1, job_timeout=10.0))
    request(dispatcher, b"soon", timeout_ms=1000)
    for client in (b"a", b"b", b"c"):
        request(dispatcher, client)
    assert queued_bytes(dispatcher) == 4 * SIZE
    dispatcher.on_tick(1.0)  # expired while queued: left in the deque, marked done
    assert sent(dispatcher)[1] == {b"soon": Status.EXPIRED}
    assert queued_bytes(dispatcher) == 3 * SIZE == live_sum(dispatcher)
    ready(dispatcher, b"W")  # dispatched
    ((worker, job),), _ = sent(dispatcher)
    assert queued_bytes(dispatcher) == 2 * SIZE
    finish(dispatcher, worker, job)  # the next one goes
    assert queued_bytes(dispatcher) == SIZE == live_sum(dispatcher)
    dispatcher.shutdown()
    assert queued_bytes(dispatcher) == 0


def test_a_job_requeued_after_its_worker_died_is_never_refused():
    """An accepted job is never lost: a retried job goes back to the head of the queue even
    when the queue is full in bytes, and the bound holds for new requests only."""
    dispatcher = make_dispatcher(limits=limits(worker_credit=1, max_queue_bytes=2 * SIZE))
    ready(dispatcher, b"W")
    request(dispatcher, b"run", flags=FLAG_RETRYABLE)
    request(dispatcher, b"q1")
    request(dispatcher, b"q2")
    ((worker, job),), answers = sent(dispatcher)
    assert (worker, job.body, answers) == (b"W", [BODY], {})
    assert queued_bytes(dispatcher) == 2 * SIZE  # full
    dispatcher.worker_gone(b"W", "killed")
    assert sent(dispatcher) == ([], {})  # requeued, not refused nor failed
    assert dispatcher.waiting() == 3
    assert queued_bytes(dispatcher) == 3 * SIZE == live_sum(dispatcher)  # past the bound
    request(dispatcher, b"new")
    assert sent(dispatcher)[1] == {b"new": Status.QUEUE_FULL}
    ready(dispatcher, b"W2")
    ((_, again),), _ = sent(dispatcher)
    assert again.address == job.address
    assert queued_bytes(dispatcher) == 2 * SIZE


# -- the option ---------------------------------------------------------------------------------


def test_the_option_has_a_default_and_reaches_limits_per_service():
    assert Config().max_queue_bytes == 256 * 1024 * 1024
    assert Limits.from_config(Config()).max_queue_bytes == 256 * 1024 * 1024
    config = Config.from_mapping(
        {
            "max_queue_bytes": 1000,
            "services": {"a": "x:app", "b": {"app": "y:app", "max_queue_bytes": 0}},
        }
    )
    by_service = {
        name: Limits.from_config(c).max_queue_bytes for name, c in config.service_configs().items()
    }
    assert by_service == {"a": 1000, "b": 0}
    assert config.validate() is config


@pytest.mark.parametrize("bad", [-1, "lots", 1.5, True])
def test_the_option_must_be_a_nonnegative_integer(bad):
    with pytest.raises(ConfigError, match="^max_queue_bytes: expected"):
        Config.from_mapping({"max_queue_bytes": bad}).validate()
