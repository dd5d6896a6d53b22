"""The dispatcher's per-job counters (broker/metrics.py) and ``mmi.queue``, without sockets."""

from __future__ import annotations

import pytest
from tests.helpers import limits

from zmqserver.broker import Dispatcher, Port
from zmqserver.broker.metrics import BOUNDS, SLOT, Histogram, ServiceMetrics
from zmqserver.broker.state import Job
from zmqserver.errors import Status
from zmqserver.protocol import C_REQUEST, MDPC02, parse_client_reply

from .dispatch_helpers import DEFAULT, finish, make_dispatcher, mdp_request, only_job, ready


def test_histogram_counts_each_value_in_its_bucket_and_interpolates_quantiles():
    hist = Histogram()
    assert hist.quantile(0.5) is None
    for value in (0.0002, 0.0002, 0.0002, 0.003):
        hist.add(value)
    assert hist.count == 4
    assert hist.total == pytest.approx(0.0036)
    assert hist.counts[BOUNDS.index(0.00025)] == 3
    assert hist.counts[BOUNDS.index(0.005)] == 1
    p50 = hist.quantile(0.5)
    assert p50 is not None
    assert 0.0001 < p50 <= 0.00025
    p99 = hist.quantile(0.99)
    assert p99 is not None
    assert 0.0025 < p99 <= 0.005


def test_histogram_puts_what_passes_the_last_bound_in_the_open_bucket():
    hist = Histogram()
    hist.add(BOUNDS[-1] * 10)
    assert hist.counts[-1] == 1
    assert hist.quantile(0.99) == BOUNDS[-1]


def test_rates_come_from_the_ring_and_age_out():
    metrics = ServiceMetrics()
    metrics.tick(1000.0)
    for _ in range(60):
        metrics.ring[metrics.slot % len(metrics.ring)] += 1
    assert metrics.rate(60, 1000.0) == pytest.approx(60 / 60)
    assert metrics.rate(900, 1000.0) == pytest.approx(60 / 900)
    # Ten minutes later the 1-minute rate is 0, the 15-minute one still sees them.
    assert metrics.rate(60, 1000.0 + 600) == 0
    assert metrics.rate(900, 1000.0 + 600) == pytest.approx(60 / 900)
    # A day later nothing is left.
    assert metrics.rate(900, 1000.0 + 86400) == 0


def _serve_one(dispatcher: Dispatcher, received: float, started: float, ended: float) -> None:
    mdp_request(dispatcher, b"c", now=received)
    ready(dispatcher, b"W", now=started)
    worker, job = only_job(dispatcher)
    finish(dispatcher, worker, job, now=ended)
    dispatcher.take_outbox()


def test_a_served_job_counts_its_wait_run_outcome_and_worker():
    dispatcher = make_dispatcher()
    _serve_one(dispatcher, received=1.0, started=1.5, ended=1.75)
    metrics = dispatcher.metrics.services[DEFAULT]
    assert metrics.outcomes[Status.OK] == 1
    assert metrics.finished == 1
    assert metrics.wait.count == 1
    assert metrics.wait.total == pytest.approx(0.5)
    assert metrics.run.total == pytest.approx(0.25)
    assert dispatcher.workers[b"W"].served == 1
    assert metrics.rate(SLOT, 1.75) == pytest.approx(1 / SLOT)


def test_expired_and_refused_requests_are_counted_by_reason():
    dispatcher = make_dispatcher()
    mdp_request(dispatcher, b"c", now=0.0, request_id=1, timeout_ms=100)
    dispatcher.on_tick(0.2)
    mdp_request(dispatcher, b"d", now=0.3, service=b"nope")
    dispatcher.take_outbox()
    assert dispatcher.metrics.services[DEFAULT].outcomes[Status.EXPIRED] == 1
    # A request for a service no worker offers waits for one (unknown_service_wait), then is
    # answered unknown_service. Its name is the client's to choose: counted under b"".
    dispatcher.on_tick(0.3 + dispatcher.limits.unknown_service_wait + 0.01)
    assert dispatcher.metrics.services[b""].outcomes[Status.UNKNOWN_SERVICE] == 1
    assert b"nope" not in dispatcher.metrics.services
    assert b"nope" not in dispatcher.metrics.services


def test_the_access_sink_hears_every_outcome():
    # unknown_service_wait = 0: a request for an unknown service is refused at once.
    dispatcher = make_dispatcher(limits=limits(unknown_service_wait=0.0))
    heard: list[tuple[object, ...]] = []
    dispatcher.metrics.access = lambda *record: heard.append(record)
    _serve_one(dispatcher, received=1.0, started=1.5, ended=1.75)
    mdp_request(dispatcher, b"d", service=b"nope", request_id=7)
    ((service, address, status, wait, run, client, rid, size), refused) = heard
    assert (service, status, client, rid) == (DEFAULT, Status.OK, b"c", -1)
    assert address
    assert (wait, run) == (pytest.approx(0.5), pytest.approx(0.25))
    assert size > 0
    assert refused[:3] == (b"", b"", Status.UNKNOWN_SERVICE)
    assert refused[6] == 7


def _mmi(dispatcher: Dispatcher, service: bytes, *body: bytes) -> list[bytes]:
    dispatcher.on_client(b"m", [MDPC02, C_REQUEST, service, *body], 0.0)
    ((port, peer, frames),) = dispatcher.take_outbox()
    assert (port, peer) == (Port.FRONTEND, b"m")
    return parse_client_reply(frames).body


def test_mmi_queue_answers_the_queue_length_and_workers():
    dispatcher = make_dispatcher()
    assert _mmi(dispatcher, b"mmi.queue", DEFAULT) == [b"200", b"0", b"0"]
    mdp_request(dispatcher, b"c1")
    mdp_request(dispatcher, b"c2")
    assert _mmi(dispatcher, b"mmi.queue", DEFAULT) == [b"200", b"2", b"0"]
    ready(dispatcher, b"W")
    dispatcher.take_outbox()
    assert _mmi(dispatcher, b"mmi.queue", DEFAULT) == [b"200", b"1", b"1"]
    assert _mmi(dispatcher, b"mmi.queue", b"nope") == [b"404"]
    assert _mmi(dispatcher, b"mmi.queue") == [b"404"]


def test_the_job_sink_is_sampled_per_service_and_second():
    """jobs_per_second = 2: two jobs a second reach the sink, the rest cost a comparison; a
    new second has a new budget; 0 hands over every job."""
    dispatcher = make_dispatcher()
    heard: list[tuple[object, ...]] = []

    def sink(service: bytes, job: Job, status: int, wait: float, run: float) -> None:
        # The job as it ends: the dispatcher lets go of its worker afterwards.
        worker = job.worker.identity if job.worker is not None else None
        heard.append((service, worker, job.attempts, status, wait, run))

    dispatcher.metrics.jobs = sink
    dispatcher.metrics.jobs_per_second = 2
    for i in range(5):
        _serve_one(dispatcher, received=10.0 + i / 10, started=10.0 + i / 10, ended=10.05 + i / 10)
    assert len(heard) == 2
    service, worker, attempts, status, wait, run = heard[0]
    assert (service, worker, attempts, status) == (DEFAULT, b"W", 1, Status.OK)
    assert run == pytest.approx(0.05)
    _serve_one(dispatcher, received=11.0, started=11.0, ended=11.1)
    assert len(heard) == 3
    dispatcher.metrics.jobs_per_second = 0
    for _ in range(4):
        _serve_one(dispatcher, received=11.2, started=11.2, ended=11.3)
    assert len(heard) == 7
