"""A job's whole journey without sockets: client request states, the dispatcher, fake workers.

These mirror behaviours that tests/integration/test_faults.py and test_credit.py check through
real processes (Lazy Pirate resends and the reply cache, deadlines, heartbeat expiry, lost
workers), here with :class:`~tests.unit.dispatch_pair.Pair`: one injected clock, frames carried
by hand, every run of every job counted.
"""

from __future__ import annotations

import pytest
from tests.helpers import limits

from zmqserver.broker.events import JobQuarantined, JobRetried, WorkerExpired, WorkerOverran
from zmqserver.errors import AppError, DeadlineExpired, Status, WorkerLost

from .dispatch_pair import Pair

# -- Lazy Pirate and the reply cache --------------------------------------------------------------


def test_a_resend_after_a_lost_reply_is_answered_from_the_cache_and_runs_once():
    pair = Pair()
    worker = pair.add_worker(b"W")
    client = pair.request(b"C", b"once", timeout=1.0, retries=3)
    client.lose_replies = 1  # the network loses the reply
    pair.run(b"W")
    assert client.response is None
    pair.advance(1.0)  # the attempt times out; the client resends with the same request id
    assert client.state.attempts == 2
    assert client.body == [b"once"]
    assert pair.runs[b"once"] == 1
    assert worker.jobs == []  # the resend never reached a worker
    assert pair.dispatcher.stats.duplicates == 1


def test_an_app_error_is_cached_too_so_a_resend_does_not_run_the_job_again():
    pair = Pair()
    worker = pair.add_worker(b"W")
    client = pair.request(b"C", b"boom", timeout=1.0, retries=3)
    client.lose_replies = 1
    pair.run(b"W", reply=b"boom requested", status=Status.APP_ERROR)
    pair.advance(1.0)
    assert isinstance(client.error, AppError)
    assert "boom requested" in str(client.error)
    assert worker.jobs == []  # not sent again
    assert pair.runs[b"boom"] == 1


def test_a_resend_while_the_job_runs_is_merged_into_it():
    """test_faults: the library's attempts time out while the job runs; one run, one reply."""
    pair = Pair()
    worker = pair.add_worker(b"W")
    client = pair.request(b"C", b"lazy", timeout=0.4, retries=12)
    pair.advance(1.5)  # three resends reach the dispatcher while the worker holds the job
    assert client.state.attempts == 4
    assert len(worker.jobs) == 1
    pair.run(b"W")
    assert client.body == [b"lazy"]
    assert client.replies_seen == 1  # one job, one reply
    assert pair.runs[b"lazy"] == 1


def test_once_evicted_from_the_cache_a_resend_runs_again():
    """The cache is bounded (reply_cache entries): an evicted reply is not remembered."""
    pair = Pair(limits=limits(reply_cache=1))
    pair.add_worker(b"W")
    first = pair.request(b"C1", b"first", timeout=1.0, retries=3)
    first.lose_replies = 1
    pair.run(b"W")
    pair.request(b"C2", b"second", timeout=1.0, retries=3)
    pair.run(b"W")  # its reply pushes the first one out
    pair.advance(1.0)
    assert first.response is None  # the resend is a new job...
    pair.run(b"W")
    assert first.body == [b"first"]
    assert pair.runs[b"first"] == 2  # ...which ran again


# -- deadlines ------------------------------------------------------------------------------------


def test_a_queued_job_past_its_deadline_expires_without_running():
    pair = Pair()
    client = pair.request(b"C", b"queued", timeout=1.0, retries=1)
    pair.advance(1.0)
    assert isinstance(client.error, DeadlineExpired)
    assert "while it was queued" in str(client.error)
    assert client.ended_at is not None
    assert client.ended_at < 1.0  # while the client still waited
    worker = pair.add_worker(b"W")
    assert worker.jobs == []
    assert pair.runs == {}


def test_a_queued_job_is_kept_for_all_the_clients_attempts():
    """test_faults: Client(timeout=0.5, retries=4) waits 4 x 0.5 s behind a long job, then
    hears DeadlineExpired (the job never ran), not RequestTimeout."""
    pair = Pair()
    worker = pair.add_worker(b"W")
    pair.request(b"B", b"blocker", timeout=10.0, retries=1)
    patient = pair.request(b"P", b"patient", timeout=0.5, retries=4)
    pair.advance(2.0)
    assert isinstance(patient.error, DeadlineExpired)
    assert patient.ended_at is not None
    assert patient.ended_at >= 1.75  # it kept its promise of 4 attempts
    assert patient.state.attempts == 4
    pair.run(b"W")  # the blocker ends; the expired job is skipped
    assert worker.jobs == []
    assert pair.runs == {b"blocker": 1}


def test_a_running_job_past_its_deadline_is_answered_then_its_worker_killed():
    """test_faults: the client hears expired at the deadline; the worker gets kill_grace more."""
    pair = Pair(limits=limits(kill_grace=0.5))
    worker = pair.add_worker(b"W")
    client = pair.request(b"C", b"overrun", timeout=1.0, retries=1)
    pair.advance(1.0)
    assert isinstance(client.error, DeadlineExpired)
    assert "while it was running" in str(client.error)
    assert not worker.killed
    pair.advance(0.5)
    assert worker.killed
    (event,) = pair.events_of(WorkerOverran)
    assert "past its deadline" in event.message()
    assert pair.dispatcher.workers == {}


# -- heartbeats and lost workers ------------------------------------------------------------------


def test_a_silent_worker_loses_its_retryable_job_to_another():
    """test_faults (SIGSTOP): missed heartbeats get the worker killed and the job rerun."""
    pair = Pair()
    hung = pair.add_worker(b"W1")
    other = pair.add_worker(b"W2")
    client = pair.request(b"C", b"job", timeout=20.0, retries=2)  # retryable
    assert len(hung.jobs) == 1
    pair.hang(b"W1")
    pair.advance(4.0)  # heartbeat interval 1 s, liveness 3
    assert hung.killed
    assert len(other.jobs) == 1
    pair.run(b"W2")
    assert client.body == [b"job"]
    (expired,) = pair.events_of(WorkerExpired)
    assert "missed 3 heartbeats" in expired.message()
    assert len(pair.events_of(JobRetried)) == 1


def test_a_silent_workers_job_without_retry_says_why():
    pair = Pair()
    pair.add_worker(b"W1")
    pair.add_worker(b"W2")
    client = pair.request(b"C", b"once", timeout=20.0, retries=1)  # not retryable
    pair.hang(b"W1")
    pair.advance(4.0)
    assert isinstance(client.error, WorkerLost)
    assert "heartbeat" in str(client.error)
    assert pair.workers[b"W2"].jobs == []


def test_a_slow_job_on_a_heartbeating_worker_is_not_mistaken_for_a_dead_one():
    pair = Pair()
    worker = pair.add_worker(b"W")
    client = pair.request(b"C", b"slow", timeout=20.0, retries=1)
    pair.advance(12.0)  # four times interval x liveness
    assert not worker.killed
    pair.run(b"W")
    assert client.body == [b"slow"]
    assert pair.events_of(WorkerExpired) == []


def test_a_job_that_kills_every_worker_is_quarantined():
    """test_faults: after max_attempts workers lost in a row, worker_lost, not another retry."""
    pair = Pair(limits=limits(max_attempts=3))
    for n in range(4):
        pair.add_worker(b"W%d" % n)
    client = pair.request(b"C", b"poison", timeout=30.0, retries=2)
    victims = []
    while client.error is None:
        (holder,) = [w for w in pair.workers.values() if w.jobs and w.alive]
        victims.append(holder.identity)
        pair.die(holder.identity)
    assert isinstance(client.error, WorkerLost)
    assert "lost with 3 workers in a row" in str(client.error)
    assert len(set(victims)) == 3
    assert len(pair.events_of(JobQuarantined)) == 1
    assert len(pair.events_of(JobRetried)) == 2


def test_a_non_retryable_job_on_a_worker_that_dies_gets_worker_lost_once():
    pair = Pair()
    pair.add_worker(b"W1")
    pair.add_worker(b"W2")
    client = pair.request(b"C", b"die once", timeout=30.0, retries=1)
    pair.die(b"W1", "it ended with exit code 9")
    assert isinstance(client.error, WorkerLost)
    assert "exit code 9" in str(client.error)
    assert pair.workers[b"W2"].jobs == []


# -- credit: several jobs on one worker -----------------------------------------------------------


@pytest.fixture
def credit_pair() -> Pair:
    return Pair(limits=limits(worker_credit=4, prefetch_below=0.0))


def test_a_worker_killed_holding_several_jobs_each_gets_one_outcome(credit_pair):
    """test_credit: the running job (not retryable) is lost; the ones behind it never started,
    so they run elsewhere, once, although not retryable."""
    pair = credit_pair
    worker = pair.add_worker(b"W", credit=4)
    head = pair.request(b"H", b"head", timeout=30.0, retries=1)
    behind = [pair.request(b"B%d" % i, b"behind %d" % i, timeout=30.0, retries=1) for i in (1, 2)]
    assert len(worker.jobs) == 3  # all on the one worker, waiting behind the head
    pair.die(b"W")
    assert isinstance(head.error, WorkerLost)
    replacement = pair.add_worker(b"W2", credit=4)
    assert [bytes(job.body[0]) for job in replacement.jobs] == [b"behind 1", b"behind 2"]
    pair.run(b"W2")
    pair.run(b"W2")
    assert [client.body for client in behind] == [[b"behind 1"], [b"behind 2"]]
    assert pair.runs == {b"behind 1": 1, b"behind 2": 1}


def test_a_worker_that_disconnects_hands_back_the_jobs_it_holds(credit_pair):
    """test_credit (max_requests): jobs held by a worker that leaves run elsewhere, once."""
    pair = credit_pair
    leaving = pair.add_worker(b"W", credit=4)
    clients = [pair.request(b"C%d" % i, b"r %d" % i, timeout=30.0, retries=1) for i in range(3)]
    assert len(leaving.jobs) == 3
    pair.run(b"W")  # it finishes one, then leaves holding two it never read
    pair.disconnect(b"W")
    pair.add_worker(b"W2", credit=4)
    pair.run(b"W2")
    pair.run(b"W2")
    assert [client.body for client in clients] == [[b"r 0"], [b"r 1"], [b"r 2"]]
    assert pair.runs == {b"r 0": 1, b"r 1": 1, b"r 2": 1}
