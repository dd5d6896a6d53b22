"""A request for a service no worker has registered yet waits for one (issue 20, RFC 7/18).

RFC 7 and 18 say the broker SHOULD queue such a request; the guide's broker answers it when the
worker comes. zmqserver queues it for ``unknown_service_wait`` (default 5 s), then answers
``unknown_service``; 0 refuses at once, as before. An injected clock, no sockets.
"""

from __future__ import annotations

from tests.helpers import limits
from tests.unit.dispatch_helpers import (
    finish,
    make_dispatcher,
    mdp_request,
    only_job,
    ready,
    sent,
)

from zmqserver.errors import Status


def test_a_request_waits_for_the_worker_that_comes():
    dispatcher = make_dispatcher()
    mdp_request(dispatcher, b"c1", service=b"late", request_id=1)
    assert sent(dispatcher) == ([], {})
    assert dispatcher.waiting(b"late") == 1
    dispatcher.on_tick(1.0)
    ready(dispatcher, b"W", now=1.0, service=b"late")
    worker, job = only_job(dispatcher)
    assert worker == b"W"
    assert not dispatcher.services[b"late"].provisional
    dispatcher.on_tick(6.0)  # past the wait: the job is its worker's, nothing happens
    finish(dispatcher, b"W", job, now=6.5)
    jobs, answers = sent(dispatcher)
    assert answers == {b"c1": Status.OK}


def test_no_worker_by_the_end_of_the_wait_means_unknown_service_and_the_service_is_forgotten():
    dispatcher = make_dispatcher(limits=limits(unknown_service_wait=2.0))
    mdp_request(dispatcher, b"c1", service=b"nope")
    mdp_request(dispatcher, b"c2", service=b"nope", now=1.0)
    dispatcher.on_tick(1.0)
    dispatcher.on_tick(2.0)
    jobs, answers = sent(dispatcher)
    assert answers == {b"c1": Status.UNKNOWN_SERVICE}
    dispatcher.on_tick(3.0)
    jobs, answers = sent(dispatcher)
    assert answers == {b"c2": Status.UNKNOWN_SERVICE}
    assert b"nope" not in dispatcher.services
    assert dispatcher.queued() == 0


def test_a_deadline_shorter_than_the_wait_expires_the_job_and_forgets_the_service():
    dispatcher = make_dispatcher()
    mdp_request(dispatcher, b"c1", service=b"nope", request_id=1, timeout_ms=1000)
    dispatcher.on_tick(1.0)
    jobs, answers = sent(dispatcher)
    assert answers == {b"c1": Status.EXPIRED}
    assert b"nope" not in dispatcher.services


def test_the_wait_bounds_a_job_without_a_deadline():
    dispatcher = make_dispatcher(limits=limits(job_timeout=0.0, unknown_service_wait=1.0))
    mdp_request(dispatcher, b"c1", service=b"nope")
    dispatcher.on_tick(1.0)
    jobs, answers = sent(dispatcher)
    assert answers == {b"c1": Status.UNKNOWN_SERVICE}


def test_zero_refuses_at_once_and_limits_still_apply_while_waiting():
    dispatcher = make_dispatcher(limits=limits(unknown_service_wait=0))
    mdp_request(dispatcher, b"c1", service=b"nope")
    assert sent(dispatcher)[1] == {b"c1": Status.UNKNOWN_SERVICE}
    dispatcher = make_dispatcher(limits=limits(max_queue=1))
    mdp_request(dispatcher, b"c1", service=b"nope")
    mdp_request(dispatcher, b"c2", service=b"nope")
    assert sent(dispatcher)[1] == {b"c2": Status.QUEUE_FULL}
    mdp_request(dispatcher, b"c3", service=b"other", body=b"x" * 2_000_000)
    assert sent(dispatcher)[1] == {b"c3": Status.TOO_LARGE}
    assert b"other" not in dispatcher.services  # a refused request makes no service


def test_a_stop_answers_waiting_requests_shutting_down():
    dispatcher = make_dispatcher()
    mdp_request(dispatcher, b"c1", service=b"nope")
    dispatcher.shutdown()
    assert sent(dispatcher)[1] == {b"c1": Status.SHUTTING_DOWN}
