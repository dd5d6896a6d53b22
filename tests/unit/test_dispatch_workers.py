"""Dispatcher unit tests: workers that fail, break the protocol, go silent; shutdown.

No sockets, no clocks: every ``on_*`` call gets the frames after the peer's routing id and an
explicit ``now``; what the dispatcher wants sent is read back from ``take_outbox()``.
"""

from __future__ import annotations

import pytest

from zmqserver.broker import Port
from zmqserver.errors import Status
from zmqserver.protocol import (
    MDPW02,
    W_FINAL,
    W_READY,
    Disconnect,
    encode_disconnect,
    encode_heartbeat,
    encode_worker_reply,
    parse_client_reply,
)

from .dispatch_helpers import (
    backend,
    finish,
    frontend,
    jobs_sent,
    make_dispatcher,
    mdp_request,
    only_job,
    only_reply,
    plain_request,
    ready,
)

# -- worker failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", [None, 31])
def test_worker_gone_with_running_job_fails_it_exactly_once(request_id):
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    mdp_request(dispatcher, b"c1", request_id=request_id)
    worker, job = only_job(dispatcher)
    dispatcher.worker_gone(b"A", "exit status 9")
    client, frames = only_reply(dispatcher)
    reply = parse_client_reply(frames)
    assert client == b"c1"
    assert reply.status is Status.WORKER_LOST
    assert reply.request_id == request_id
    assert b"exit status 9" in reply.body[0]
    assert dispatcher.jobs == {}
    assert b"A" not in dispatcher.workers
    # Nothing more comes of it: a second report, a late FINAL, a tick.
    dispatcher.worker_gone(b"A", "again")
    assert dispatcher.take_outbox() == []
    finish(dispatcher, worker, job)
    assert backend(dispatcher.take_outbox()) == [(b"A", Disconnect())]
    dispatcher.on_tick(10.0)
    assert frontend(dispatcher.take_outbox()) == []
    assert dispatcher.stats.errors == 1


def test_worker_gone_for_plain_client_gives_error_text():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1")
    only_job(dispatcher)
    dispatcher.worker_gone(b"A", "killed")
    _, frames = only_reply(dispatcher)
    assert frames[0] == b""
    assert frames[1].startswith(b"ERROR worker_lost: ")


def test_worker_gone_when_idle_just_forgets_it():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    ready(dispatcher, b"B")
    dispatcher.worker_gone(b"A", "exit")
    assert dispatcher.take_outbox() == []
    assert dispatcher.idle_workers() == [b"B"]
    plain_request(dispatcher, b"c1")
    assert only_job(dispatcher)[0] == b"B"


def test_worker_gone_for_unknown_worker_is_ignored():
    dispatcher = make_dispatcher()
    dispatcher.worker_gone(b"ghost", "exit")
    assert dispatcher.take_outbox() == []


def test_disconnect_from_busy_worker_requeues_job_to_another_worker():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    mdp_request(dispatcher, b"c1", b"x", request_id=3)
    worker, job = only_job(dispatcher)
    assert worker == b"A"
    dispatcher.on_worker(b"A", encode_disconnect(), 0.0)
    assert dispatcher.take_outbox() == []  # no answer to a DISCONNECT, no error to the client
    assert dispatcher.queued() == 1
    assert b"A" not in dispatcher.workers
    ready(dispatcher, b"B")
    worker, job2 = only_job(dispatcher)
    assert worker == b"B"
    assert job2.body == [b"x"]
    finish(dispatcher, worker, job2)
    reply = parse_client_reply(only_reply(dispatcher)[1])
    assert reply.status is Status.OK
    assert reply.request_id == 3
    assert dispatcher.stats.accepted == 1
    assert dispatcher.stats.replied == 1


def test_requeued_job_goes_to_the_head_of_the_queue():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1", b"first")
    only_job(dispatcher)
    plain_request(dispatcher, b"c2", b"second")
    dispatcher.on_worker(b"A", encode_disconnect(), 0.0)
    ready(dispatcher, b"B")
    worker, job = only_job(dispatcher)
    assert job.body == [b"first"]


def test_disconnect_from_busy_worker_with_idle_peer_dispatches_at_once():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1", b"x")
    only_job(dispatcher)
    ready(dispatcher, b"B")
    dispatcher.on_worker(b"A", encode_disconnect(), 0.0)
    worker, job = only_job(dispatcher)
    assert (worker, job.body) == (b"B", [b"x"])


def test_disconnect_after_partials_for_plain_client_is_worker_lost():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    ready(dispatcher, b"B")
    plain_request(dispatcher, b"c1")
    worker, job = only_job(dispatcher)
    dispatcher.on_worker(worker, encode_worker_reply(job.address, [b"p"], final=False), 0.0)
    dispatcher.on_worker(worker, encode_disconnect(), 0.0)
    out = dispatcher.take_outbox()
    assert jobs_sent(out) == []
    ((client, frames),) = frontend(out)
    assert frames[1].startswith(b"ERROR worker_lost: ")


def test_disconnect_after_an_empty_partial_for_plain_client_reruns_the_job():
    """Nothing was collected for the client, so the job is handed to another worker as if no
    PARTIAL had come (an empty one adds nothing to the reply either)."""
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1", b"x")
    worker, job = only_job(dispatcher)
    dispatcher.on_worker(worker, encode_worker_reply(job.address, [], final=False), 0.0)
    ready(dispatcher, b"B")
    dispatcher.on_worker(worker, encode_disconnect(), 0.0)
    worker, job = only_job(dispatcher)
    assert (worker, job.body) == (b"B", [b"x"])


def test_disconnect_after_partials_for_mdp02_client_is_not_rerun():
    """A job whose PARTIALs already reached an MDP/0.2 client must not run a second time.

    The client would receive the stream twice (and a non-idempotent job would run twice); it gets
    worker_lost instead, as a plain client does whose partials were being collected.
    """
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    ready(dispatcher, b"B")
    mdp_request(dispatcher, b"c1", request_id=1)
    worker, job = only_job(dispatcher)
    dispatcher.on_worker(worker, encode_worker_reply(job.address, [b"p"], final=False), 0.0)
    assert parse_client_reply(only_reply(dispatcher)[1]).final is False
    dispatcher.on_worker(worker, encode_disconnect(), 0.0)
    out = dispatcher.take_outbox()
    assert jobs_sent(out) == [], "the job was dispatched again after its client got a PARTIAL"
    ((client, frames),) = frontend(out)
    assert parse_client_reply(frames).status is Status.WORKER_LOST


def test_disconnect_from_idle_worker_removes_it():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    dispatcher.on_worker(b"A", encode_disconnect(), 0.0)
    assert dispatcher.take_outbox() == []
    assert dispatcher.idle_workers() == []
    assert dispatcher.workers == {}
    ready(dispatcher, b"A")  # may come back
    assert dispatcher.idle_workers() == [b"A"]


def test_reply_for_a_job_the_worker_does_not_hold_disconnects_it():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    ready(dispatcher, b"B")
    plain_request(dispatcher, b"c1")
    plain_request(dispatcher, b"c2")
    sent = dict(jobs_sent(dispatcher.take_outbox()))
    # B answers A's job: B is thrown out, its own job fails, A's job is untouched.
    finish(dispatcher, b"B", sent[b"A"])
    out = dispatcher.take_outbox()
    assert backend(out) == [(b"B", Disconnect())]
    ((client, frames),) = frontend(out)
    assert client == b"c2"
    assert frames[1].startswith(b"ERROR worker_lost: ")
    assert b"B" not in dispatcher.workers
    finish(dispatcher, b"A", sent[b"A"])
    assert only_reply(dispatcher)[0] == b"c1"


def test_reply_from_idle_worker_disconnects_it():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    dispatcher.on_worker(b"A", encode_worker_reply(b"\x00" * 8, [b"x"]), 0.0)
    assert backend(dispatcher.take_outbox()) == [(b"A", Disconnect())]
    assert dispatcher.workers == {}


def test_delimited_worker_is_disconnected_delimited():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A", delimited=True)
    dispatcher.on_worker(b"A", [b"", MDPW02, b"\x09"], 0.0)
    assert dispatcher.take_outbox() == [(Port.BACKEND, b"A", encode_disconnect(True))]


@pytest.mark.parametrize(
    "frames",
    [
        encode_heartbeat(),
        encode_worker_reply(b"addr", [b"x"]),
        encode_worker_reply(b"addr", [b"x"], final=False),
    ],
)
def test_messages_from_unregistered_worker_get_disconnect(frames):
    dispatcher = make_dispatcher()
    dispatcher.on_worker(b"ghost", frames, 0.0)
    assert backend(dispatcher.take_outbox()) == [(b"ghost", Disconnect())]
    assert dispatcher.workers == {}


def test_unregistered_worker_disconnect_is_not_answered():
    dispatcher = make_dispatcher()
    dispatcher.on_worker(b"ghost", encode_disconnect(), 0.0)
    assert dispatcher.take_outbox() == []


@pytest.mark.parametrize(
    "frames",
    [[], [b""], [b"junk"], [MDPW02], [MDPW02, b"\x09"], [MDPW02, W_READY], [MDPW02, W_FINAL]],
)
def test_invalid_message_from_unregistered_worker_gets_disconnect(frames):
    dispatcher = make_dispatcher()
    dispatcher.on_worker(b"ghost", frames, 0.0)
    assert backend(dispatcher.take_outbox()) == [(b"ghost", Disconnect())]


def test_invalid_message_from_busy_worker_disconnects_it_and_fails_its_job():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1")
    only_job(dispatcher)
    dispatcher.on_worker(b"A", [MDPW02, b"\x09"], 0.0)
    out = dispatcher.take_outbox()
    assert backend(out) == [(b"A", Disconnect())]
    ((client, frames),) = frontend(out)
    assert (client, frames[1][:19]) == (b"c1", b"ERROR worker_lost: ")
    assert dispatcher.workers == {}


def test_ready_twice_disconnects():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    ready(dispatcher, b"A")
    assert backend(dispatcher.take_outbox()) == [(b"A", Disconnect())]
    assert dispatcher.workers == {}
    assert dispatcher.idle_workers() == []


def test_ready_twice_while_busy_fails_the_job():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1")
    only_job(dispatcher)
    ready(dispatcher, b"A")
    out = dispatcher.take_outbox()
    assert backend(out) == [(b"A", Disconnect())]
    ((client, frames),) = frontend(out)
    assert frames[1].startswith(b"ERROR worker_lost: ")


@pytest.mark.parametrize("service", [b"mmi.x", b"mmi.service"])
def test_ready_for_mmi_service_disconnects(service):
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A", service=service)
    assert backend(dispatcher.take_outbox()) == [(b"A", Disconnect())]
    assert dispatcher.workers == {}
    assert service not in dispatcher.services


# -- heartbeats -----------------------------------------------------------------------------------


def test_on_tick_heartbeats_idle_workers_only_when_due():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"A")
    ready(dispatcher, b"B")
    plain_request(dispatcher, b"c1")
    assert only_job(dispatcher)[0] == b"A"
    dispatcher.on_tick(0.5)
    assert dispatcher.take_outbox() == []
    assert dispatcher.next_deadline() == 1.0
    dispatcher.on_tick(1.0)
    assert dispatcher.take_outbox() == [(Port.BACKEND, b"B", encode_heartbeat())]
    assert dispatcher.next_deadline() == 2.0
    dispatcher.on_tick(1.5)
    assert dispatcher.take_outbox() == []
    assert dispatcher.next_deadline() == 2.0


def test_next_deadline_moves_forward_from_the_tick_time():
    dispatcher = make_dispatcher(heartbeat_interval=0.25, now=10.0)
    assert dispatcher.next_deadline() == 10.25
    dispatcher.on_tick(10.25)
    assert dispatcher.next_deadline() == 10.5
    dispatcher.on_tick(13.0)  # a late tick does not make the dispatcher catch up with a burst
    assert dispatcher.next_deadline() == 13.25
    dispatcher.on_tick(13.1)
    assert dispatcher.next_deadline() == 13.25


def test_silent_idle_worker_expires_after_interval_times_liveness():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"A", now=0.0)  # expires at 3.0
    for t in (1.0, 2.0, 3.0):
        dispatcher.on_tick(t)
        assert dispatcher.take_outbox() == [(Port.BACKEND, b"A", encode_heartbeat())]
    dispatcher.on_tick(4.0)
    assert dispatcher.take_outbox() == [(Port.BACKEND, b"A", encode_disconnect())]
    assert dispatcher.workers == {}
    assert dispatcher.idle_workers() == []
    plain_request(dispatcher, b"c1", now=4.0)
    assert dispatcher.take_outbox() == []
    assert dispatcher.queued() == 1


def test_any_worker_traffic_counts_as_a_heartbeat():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"A", now=0.0)
    ready(dispatcher, b"B", now=0.0)
    for now in (1.0, 2.0):  # the broker turns at least every interval (a jump is a stall)
        dispatcher.on_tick(now)
        dispatcher.on_worker(b"A", encode_heartbeat(), now)  # A's cadence: the interval
    dispatcher.on_worker(b"A", encode_heartbeat(), 2.5)  # A now expires at 5.5
    plain_request(dispatcher, b"c1", now=2.6)
    worker, job = only_job(dispatcher)
    assert worker == b"A"
    dispatcher.on_tick(3.0)
    dispatcher.take_outbox()
    dispatcher.on_tick(4.0)
    assert backend(dispatcher.take_outbox()) == [(b"B", Disconnect())]
    finish(dispatcher, b"A", job, now=4.5)  # A expires at 7.5
    dispatcher.on_tick(5.0)
    dispatcher.on_tick(6.0)
    dispatcher.take_outbox()
    dispatcher.on_tick(7.0)
    assert dispatcher.take_outbox() == [(Port.BACKEND, b"A", encode_heartbeat())]
    dispatcher.on_tick(8.0)
    assert dispatcher.take_outbox() == [(Port.BACKEND, b"A", encode_disconnect())]


def test_busy_worker_that_heartbeats_is_not_expired():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1")
    worker, job = only_job(dispatcher)
    for t in range(1, 20):
        dispatcher.on_worker(b"A", encode_heartbeat(), float(t))
        dispatcher.on_tick(float(t))
    assert dispatcher.take_outbox() == []  # no heartbeats are sent to a busy worker
    assert b"A" in dispatcher.workers
    finish(dispatcher, worker, job, now=20.0)
    assert only_reply(dispatcher)[0] == b"c1"


def test_silent_busy_worker_is_expired_killed_and_its_job_answered():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1")
    only_job(dispatcher)
    dispatcher.on_tick(1.0)
    dispatcher.on_tick(2.0)
    assert dispatcher.take_outbox() == []
    dispatcher.on_tick(2.9)
    dispatcher.on_tick(3.5)
    assert b"A" not in dispatcher.workers
    assert dispatcher.take_kills() == [b"A"]
    out = dispatcher.take_outbox()
    assert (Port.BACKEND, b"A", encode_disconnect()) in out
    (reply,) = [frames for port, peer, frames in out if port is Port.FRONTEND]
    assert reply[1].startswith(b"ERROR worker_lost")


def test_expired_worker_that_speaks_again_is_told_to_disconnect():
    dispatcher = make_dispatcher(heartbeat_interval=1.0, heartbeat_liveness=1)
    ready(dispatcher, b"A")
    dispatcher.on_tick(1.0)
    dispatcher.on_tick(2.0)
    dispatcher.take_outbox()
    dispatcher.on_worker(b"A", encode_heartbeat(), 2.5)
    assert backend(dispatcher.take_outbox()) == [(b"A", Disconnect())]


# -- shutdown -------------------------------------------------------------------------------------


def test_shutdown_fails_queued_jobs_and_new_requests_but_finishes_running_ones():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    mdp_request(dispatcher, b"running", request_id=1)
    worker, job = only_job(dispatcher)
    mdp_request(dispatcher, b"queued-1", request_id=2)
    plain_request(dispatcher, b"queued-2")
    assert dispatcher.queued() == 2
    dispatcher.shutdown()
    replies = dict(frontend(dispatcher.take_outbox()))
    assert set(replies) == {b"queued-1", b"queued-2"}
    reply = parse_client_reply(replies[b"queued-1"])
    assert (reply.status, reply.request_id) == (Status.SHUTTING_DOWN, 2)
    assert replies[b"queued-2"] == [b"", b"ERROR shutting_down: server is shutting down"]
    assert dispatcher.queued() == 0
    # New requests are refused, even with an idle worker around.
    ready(dispatcher, b"B")
    mdp_request(dispatcher, b"late", request_id=3)
    plain_request(dispatcher, b"late-plain")
    out = dispatcher.take_outbox()
    assert jobs_sent(out) == []
    replies = dict(frontend(out))
    assert parse_client_reply(replies[b"late"]).status is Status.SHUTTING_DOWN
    assert replies[b"late-plain"][1].startswith(b"ERROR shutting_down: ")
    # The running job still gets its reply.
    finish(dispatcher, worker, job)
    client, frames = only_reply(dispatcher)
    assert client == b"running"
    assert parse_client_reply(frames).status is Status.OK
    assert dispatcher.stats.accepted == 3
    assert dispatcher.stats.replied == 1


def test_shutdown_with_nothing_queued_sends_nothing():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    dispatcher.shutdown()
    assert dispatcher.take_outbox() == []


def test_job_requeued_during_shutdown_is_not_left_in_the_queue():
    """BUG: after shutdown(), a job whose worker sends DISCONNECT is requeued and stranded.

    dispatch.Dispatcher._remove puts the job back in the queue (``requeue=True``) without looking at
    ``self.closing``; shutdown() already drained the queues and no new worker is coming, so the
    job is never answered (fail_running only answers *running* jobs), breaking "no job is
    silently lost". It should be answered (shutting_down or worker_lost) or run on an idle worker.
    """
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1")
    only_job(dispatcher)
    dispatcher.shutdown()
    dispatcher.on_worker(b"A", encode_disconnect(), 0.0)  # a graceful worker leaving
    assert dispatcher.queued() == 0, "the job sits in a queue nobody drains any more"
    ((client, frames),) = frontend(dispatcher.take_outbox())
    assert client == b"c1"
    assert frames[1].startswith(b"ERROR ")


def test_fail_running_answers_every_running_job_once():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    ready(dispatcher, b"B")
    plain_request(dispatcher, b"c1")
    mdp_request(dispatcher, b"c2", request_id=4)
    sent = dict(jobs_sent(dispatcher.take_outbox()))
    dispatcher.fail_running(Status.WORKER_LOST, "gave up")
    replies = dict(frontend(dispatcher.take_outbox()))
    assert replies[b"c1"] == [b"", b"ERROR worker_lost: gave up"]
    assert parse_client_reply(replies[b"c2"]).status is Status.WORKER_LOST
    assert dispatcher.jobs == {}
    finish(dispatcher, b"A", sent[b"A"])  # too late: the job was answered
    assert frontend(dispatcher.take_outbox()) == []
