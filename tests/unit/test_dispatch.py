"""Unit tests for zmqserver.broker.Dispatcher, driven with frames as ROUTER sockets deliver them.

No sockets, no clocks: every ``on_*`` call gets the frames after the peer's routing id and an
explicit ``now``; what the dispatcher wants sent is read back from ``take_outbox()``.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from zmqserver.broker import Dispatcher, Limits, Port
from zmqserver.errors import Status
from zmqserver.protocol import (
    C_FINAL,
    C_PARTIAL,
    C_REQUEST,
    HEADER_MAGIC,
    MDPC01,
    MDPC02,
    MDPW02,
    W_FINAL,
    W_READY,
    Disconnect,
    Form,
    Heartbeat,
    JobRequest,
    decode_status_header,
    encode_client_reply,
    encode_disconnect,
    encode_heartbeat,
    encode_ready,
    encode_reply_header,
    encode_request_header,
    encode_status_header,
    encode_worker_reply,
    parse_broker_message,
    parse_client_reply,
)

from .dispatch_helpers import (
    DEFAULT,
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

# -- dispatch -------------------------------------------------------------------------------------


def test_new_router_is_empty():
    dispatcher = make_dispatcher()
    assert dispatcher.take_outbox() == []
    assert dispatcher.queued() == 0
    assert dispatcher.idle_workers() == []
    assert dispatcher.next_deadline() == 1.0


def test_ready_then_request_dispatches_to_the_worker():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    assert dispatcher.idle_workers() == [b"A"]
    assert dispatcher.take_outbox() == []
    plain_request(dispatcher, b"c1", b"hello")
    worker, job = only_job(dispatcher)
    assert worker == b"A"
    assert job.body == [b"hello"]
    assert dispatcher.idle_workers() == []
    assert dispatcher.stats.accepted == 1


def test_plain_client_reply():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1", b"hello")
    worker, job = only_job(dispatcher)
    finish(dispatcher, worker, job)
    assert only_reply(dispatcher) == (b"c1", [b"", b"re:hello"])
    assert dispatcher.stats.replied == 1
    assert dispatcher.idle_workers() == [b"A"]


def test_raw_dealer_client_reply_has_no_delimiter():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    dispatcher.on_client(b"c1", [b"hello", b"more"], 0.0)
    worker, job = only_job(dispatcher)
    assert job.body == [b"hello", b"more"]
    finish(dispatcher, worker, job, [b"x", b"y"])
    assert only_reply(dispatcher) == (b"c1", [b"x", b"y"])


@pytest.mark.parametrize(
    ("prefix", "reply_prefix"),
    [
        ([b"", MDPC01], [b"", MDPC01]),
        ([MDPC02, C_REQUEST], [MDPC02, C_FINAL]),
        ([b"", MDPC02, C_REQUEST], [b"", MDPC02, C_FINAL]),
    ],
)
def test_mdp_clients_are_answered_in_their_own_form(prefix, reply_prefix):
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    dispatcher.on_client(b"c1", [*prefix, DEFAULT, b"hello"], 0.0)
    worker, job = only_job(dispatcher)
    finish(dispatcher, worker, job)
    assert only_reply(dispatcher) == (b"c1", [*reply_prefix, DEFAULT, b"re:hello"])


def test_lru_dispatch_order():
    dispatcher = make_dispatcher()
    for worker in (b"A", b"B", b"C"):
        ready(dispatcher, worker)
    for i in range(3):
        plain_request(dispatcher, b"c%d" % i)
    assert [w for w, _ in jobs_sent(dispatcher.take_outbox())] == [b"A", b"B", b"C"]


def test_lru_picks_longest_idle_worker_not_most_recently_freed():
    dispatcher = make_dispatcher()
    for worker in (b"A", b"B", b"C"):
        ready(dispatcher, worker)
    plain_request(dispatcher, b"c1")
    plain_request(dispatcher, b"c2")
    sent = dict(jobs_sent(dispatcher.take_outbox()))
    assert set(sent) == {b"A", b"B"}
    finish(dispatcher, b"A", sent[b"A"])  # A is now the most recently freed; C has waited longest
    dispatcher.take_outbox()
    assert dispatcher.idle_workers() == [b"C", b"A"]
    plain_request(dispatcher, b"c3")
    assert only_job(dispatcher)[0] == b"C"
    plain_request(dispatcher, b"c4")
    assert only_job(dispatcher)[0] == b"A"


def test_lru_with_all_workers_busy_then_freed_in_order():
    dispatcher = make_dispatcher()
    for worker in (b"A", b"B", b"C"):
        ready(dispatcher, worker)
    for i in range(3):
        plain_request(dispatcher, b"c%d" % i)
    sent = dict(jobs_sent(dispatcher.take_outbox()))
    for worker in (b"B", b"A", b"C"):  # freed in this order
        finish(dispatcher, worker, sent[worker])
    dispatcher.take_outbox()
    assert dispatcher.idle_workers() == [b"B", b"A", b"C"]
    for i in range(3):
        plain_request(dispatcher, b"d%d" % i)
    assert [w for w, _ in jobs_sent(dispatcher.take_outbox())] == [b"B", b"A", b"C"]


def test_jobs_queue_fifo_while_no_worker_is_idle():
    dispatcher = make_dispatcher()
    for i in range(4):
        plain_request(dispatcher, b"c%d" % i, b"job%d" % i)
    assert dispatcher.take_outbox() == []
    assert dispatcher.queued() == 4
    assert dispatcher.stats.accepted == 4
    ready(dispatcher, b"A")
    worker, job = only_job(dispatcher)
    assert (worker, job.body) == (b"A", [b"job0"])
    ready(dispatcher, b"B")
    worker, job_b = only_job(dispatcher)
    assert (worker, job_b.body) == (b"B", [b"job1"])
    assert dispatcher.queued() == 2
    # A FINAL frees A, which takes the next queued job in the same step.
    finish(dispatcher, b"A", job)
    out = dispatcher.take_outbox()
    assert frontend(out) == [(b"c0", [b"", b"re:job0"])]
    ((worker, job),) = jobs_sent(out)
    assert (worker, job.body) == (b"A", [b"job2"])
    finish(dispatcher, b"B", job_b)
    ((worker, job),) = jobs_sent(dispatcher.take_outbox())
    assert (worker, job.body) == (b"B", [b"job3"])
    assert dispatcher.queued() == 0


def test_job_addresses_are_unique():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    addresses = set()
    for i in range(20):
        plain_request(dispatcher, b"c%d" % i)
        worker, job = only_job(dispatcher)
        addresses.add(job.address)
        finish(dispatcher, worker, job)
        dispatcher.take_outbox()
    assert len(addresses) == 20


def run_echo_workers(dispatcher: Dispatcher, now: float = 0.0) -> list[tuple[bytes, list[bytes]]]:
    """Answer every job in the outbox (and every job that follows) with ``re:`` + body.

    Jobs are answered in a shuffled order, so replies leave in a different order than requests.
    """
    rng = random.Random(1234)
    replies = []
    pending = []
    while True:
        out = dispatcher.take_outbox()
        replies.extend(frontend(out))
        pending.extend(jobs_sent(out))
        if not pending:
            return replies
        rng.shuffle(pending)
        worker, job = pending.pop()
        finish(dispatcher, worker, job, now=now)


def test_fifty_clients_each_get_their_own_reply():
    dispatcher = make_dispatcher()
    for i in range(5):
        ready(dispatcher, b"w%d" % i)
    clients = {b"client-%02d" % i: b"payload-%02d" % i for i in range(50)}
    for n, (client, body) in enumerate(clients.items()):
        if n % 2:
            plain_request(dispatcher, client, body)
        else:
            mdp_request(dispatcher, client, body, request_id=n)
    assert dispatcher.queued() == 45
    replies = run_echo_workers(dispatcher)
    assert len(replies) == 50
    assert {client for client, _ in replies} == set(clients)
    for n, (client, body) in enumerate(clients.items()):
        (frames,) = [f for c, f in replies if c == client]
        if n % 2:
            assert frames == [b"", b"re:" + body]
        else:
            reply = parse_client_reply(frames)
            assert reply.body == [b"re:" + body]
            assert reply.request_id == n
            assert reply.status is Status.OK
    assert dispatcher.stats.replied == 50
    assert dispatcher.queued() == 0
    assert dispatcher.jobs == {}
    assert sorted(dispatcher.idle_workers()) == [b"w%d" % i for i in range(5)]


def test_delimited_worker_gets_delimited_jobs_and_heartbeats():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A", delimited=True)
    plain_request(dispatcher, b"c1", b"x")
    ((_, _, frames),) = dispatcher.take_outbox()
    assert frames[:2] == [b"", MDPW02]
    job = parse_broker_message(frames)
    assert job.delimited is True
    dispatcher.on_worker(b"A", encode_worker_reply(job.address, [b"y"], delimited=True), 0.0)
    assert only_reply(dispatcher) == (b"c1", [b"", b"y"])
    dispatcher.on_tick(1.0)
    assert dispatcher.take_outbox() == [(Port.BACKEND, b"A", encode_heartbeat(True))]


def test_workers_of_other_services_do_not_take_default_jobs():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"E", service=b"echo")
    plain_request(dispatcher, b"c1")
    assert dispatcher.take_outbox() == []
    assert dispatcher.queued() == 1
    assert dispatcher.idle_workers(b"echo") == [b"E"]
    mdp_request(dispatcher, b"c2", b"e", service=b"echo")
    worker, job = only_job(dispatcher)
    assert (worker, job.body) == (b"E", [b"e"])
    finish(dispatcher, worker, job)
    reply = parse_client_reply(only_reply(dispatcher)[1])
    assert reply.service == b"echo"


def test_configured_services_queue_before_any_worker_registers():
    dispatcher = make_dispatcher(services=(b"echo",))
    mdp_request(dispatcher, b"c1", service=b"echo")
    assert dispatcher.take_outbox() == []
    assert dispatcher.queued() == 1
    ready(dispatcher, b"E", service=b"echo")
    assert only_job(dispatcher)[0] == b"E"


def test_mdp_request_with_empty_service_goes_to_default_service():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    dispatcher.on_client(b"c1", [MDPC02, C_REQUEST, b"", b"x"], 0.0)
    worker, job = only_job(dispatcher)
    finish(dispatcher, worker, job)
    assert only_reply(dispatcher) == (b"c1", [MDPC02, C_FINAL, b"", b"re:x"])


# -- errors to clients ----------------------------------------------------------------------------


def test_unknown_mdp_service_gets_unknown_service_error():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    dispatcher.take_outbox()
    mdp_request(dispatcher, b"c1", service=b"nope", request_id=5)
    client, frames = only_reply(dispatcher)
    reply = parse_client_reply(frames)
    assert client == b"c1"
    assert reply.status is Status.UNKNOWN_SERVICE
    assert reply.request_id == 5
    assert reply.service == b"nope"
    assert b"nope" in reply.body[0]
    assert dispatcher.stats.accepted == 0
    assert dispatcher.stats.errors == 1
    assert dispatcher.idle_workers() == [b"A"]


def test_unknown_mdp01_service_gets_status_header():
    dispatcher = make_dispatcher()
    dispatcher.on_client(b"c1", [b"", MDPC01, b"nope", b"x"], 0.0)
    client, frames = only_reply(dispatcher)
    assert frames[:3] == [b"", MDPC01, b"nope"]
    assert decode_status_header(frames[3]) is Status.UNKNOWN_SERVICE


def test_mmi_service_is_not_a_routable_service():
    dispatcher = make_dispatcher()
    mdp_request(dispatcher, b"c1", service=b"mmi.x")
    reply = parse_client_reply(only_reply(dispatcher)[1])
    assert reply.body == [b"501"]
    assert dispatcher.stats.accepted == 0


@pytest.mark.parametrize(
    "frames",
    [
        [b""],
        [MDPC02, b"\x09", DEFAULT, b"x"],
        [MDPC02, C_REQUEST, b"s" * 256, b"x"],
        [b"", MDPC01],
    ],
)
def test_bad_requests_get_a_bad_request_reply_and_are_not_accepted(frames):
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    dispatcher.on_client(b"c1", frames, 0.0)
    out = dispatcher.take_outbox()
    assert jobs_sent(out) == []
    ((client, reply),) = frontend(out)
    assert client == b"c1"
    assert encode_status_header(Status.BAD_REQUEST) in reply or reply[-1].startswith(
        b"ERROR bad_request: "
    )
    assert dispatcher.stats.accepted == 0
    assert dispatcher.idle_workers() == [b"A"]


def test_empty_client_message_is_dropped_silently():
    dispatcher = make_dispatcher()
    dispatcher.on_client(b"c1", [], 0.0)
    assert dispatcher.take_outbox() == []
    assert dispatcher.stats.accepted == 0


@pytest.mark.parametrize("request_id", [None, 9])
def test_app_error_final_becomes_client_error_reply(request_id):
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    mdp_request(dispatcher, b"c1", request_id=request_id)
    worker, job = only_job(dispatcher)
    finish(dispatcher, worker, job, [b"ValueError: ", b"bad input"], status=Status.APP_ERROR)
    client, frames = only_reply(dispatcher)
    reply = parse_client_reply(frames)
    assert client == b"c1"
    assert reply.final is True
    assert reply.status is Status.APP_ERROR
    assert reply.request_id == request_id
    assert reply.body == [b"ValueError: bad input"]
    assert dispatcher.stats.errors == 1
    assert dispatcher.stats.replied == 0
    assert dispatcher.idle_workers() == [b"A"]


def test_app_error_for_plain_client_is_error_text():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1")
    worker, job = only_job(dispatcher)
    finish(dispatcher, worker, job, [b"KeyError: 'x'"], status=Status.APP_ERROR)
    assert only_reply(dispatcher) == (b"c1", [b"", b"ERROR app_error: KeyError: 'x'"])


def test_app_error_with_invalid_utf8_message_is_replaced_not_raised():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1")
    worker, job = only_job(dispatcher)
    finish(dispatcher, worker, job, [b"\xff\xfe"], status=Status.APP_ERROR)
    _, frames = only_reply(dispatcher)
    assert frames[1].startswith(b"ERROR app_error: ")


@pytest.mark.parametrize("request_id", [None, 123])
def test_request_ids_are_echoed_in_reply_headers(request_id):
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    mdp_request(dispatcher, b"c1", b"x", request_id=request_id)
    worker, job = only_job(dispatcher)
    assert job.body == [b"x"]  # the header is the broker's business, not the app's
    finish(dispatcher, worker, job)
    _, frames = only_reply(dispatcher)
    if request_id is None:
        assert frames == [MDPC02, C_FINAL, DEFAULT, b"re:x"]
    else:
        assert frames == [MDPC02, C_FINAL, DEFAULT, encode_reply_header(123, Status.OK), b"re:x"]


def test_request_header_on_mdp01_is_echoed():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    dispatcher.on_client(b"c1", [b"", MDPC01, DEFAULT, encode_request_header(77), b"x"], 0.0)
    worker, job = only_job(dispatcher)
    assert job.body == [b"x"]
    finish(dispatcher, worker, job)
    assert only_reply(dispatcher)[1] == [
        b"",
        MDPC01,
        DEFAULT,
        encode_reply_header(77, Status.OK),
        b"re:x",
    ]


# -- streaming (PARTIAL) --------------------------------------------------------------------------


@pytest.mark.parametrize("delimited", [False, True])
def test_partials_are_forwarded_to_mdp02_clients(delimited):
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    prefix = [b"", MDPC02] if delimited else [MDPC02]
    request = [*prefix, C_REQUEST, DEFAULT, encode_request_header(8), b"x"]
    dispatcher.on_client(b"c1", request, 0.0)
    worker, job = only_job(dispatcher)
    for part in (b"p1", b"p2"):
        dispatcher.on_worker(worker, encode_worker_reply(job.address, [part], final=False), 0.0)
    finish(dispatcher, worker, job, [b"end"])
    replies = frontend(dispatcher.take_outbox())
    header = encode_reply_header(8, Status.OK)
    assert replies == [
        (b"c1", [*prefix, C_PARTIAL, DEFAULT, header, b"p1"]),
        (b"c1", [*prefix, C_PARTIAL, DEFAULT, header, b"p2"]),
        (b"c1", [*prefix, C_FINAL, DEFAULT, header, b"end"]),
    ]
    assert dispatcher.stats.replied == 1


@pytest.mark.parametrize(
    ("prefix", "reply_prefix"),
    [([b""], [b""]), ([], []), ([b"", MDPC01, DEFAULT], [b"", MDPC01, DEFAULT])],
)
def test_partials_are_joined_for_clients_without_partials(prefix, reply_prefix):
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    dispatcher.on_client(b"c1", [*prefix, b"x"], 0.0)
    worker, job = only_job(dispatcher)
    for part in ([b"p1"], [b"p2", b"p3"]):
        dispatcher.on_worker(worker, encode_worker_reply(job.address, part, final=False), 0.0)
        assert dispatcher.take_outbox() == []
    finish(dispatcher, worker, job, [])
    assert only_reply(dispatcher) == (b"c1", [*reply_prefix, b"p1", b"p2", b"p3"])


def test_partials_then_app_error_gives_plain_client_only_the_error():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1")
    worker, job = only_job(dispatcher)
    dispatcher.on_worker(worker, encode_worker_reply(job.address, [b"p1"], final=False), 0.0)
    finish(dispatcher, worker, job, [b"RuntimeError: mid-stream"], status=Status.APP_ERROR)
    assert only_reply(dispatcher) == (b"c1", [b"", b"ERROR app_error: RuntimeError: mid-stream"])


def test_app_payload_starting_with_header_magic_reaches_the_client():
    """An app may return any bytes; one that starts with protocol.HEADER_MAGIC is misread as a
    status header by parse_worker_message, so today the worker is thrown out and the client gets
    worker_lost (see test_protocol's header-magic tests for the root cause)."""
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1")
    worker, job = only_job(dispatcher)
    payload = HEADER_MAGIC + b"\x89PNG..."
    finish(dispatcher, worker, job, [payload])
    out = dispatcher.take_outbox()
    assert backend(out) == []
    assert frontend(out) == [(b"c1", [b"", payload])]


def test_partial_does_not_free_the_worker():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    plain_request(dispatcher, b"c1")
    worker, job = only_job(dispatcher)
    plain_request(dispatcher, b"c2")
    dispatcher.on_worker(worker, encode_worker_reply(job.address, [b"p"], final=False), 0.0)
    assert dispatcher.take_outbox() == []
    assert dispatcher.queued() == 1


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
    dispatcher.on_worker(b"A", encode_heartbeat(), 2.5)  # A now expires at 5.5
    plain_request(dispatcher, b"c1", now=2.6)
    worker, job = only_job(dispatcher)
    assert worker == b"A"
    dispatcher.on_tick(4.0)
    assert backend(dispatcher.take_outbox()) == [(b"B", Disconnect())]
    finish(dispatcher, b"A", job, now=4.5)  # A expires at 7.5
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
    dispatcher.on_tick(2.0)
    assert dispatcher.take_outbox() == []
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
    dispatcher.on_tick(5.0)
    dispatcher.take_outbox()
    dispatcher.on_worker(b"A", encode_heartbeat(), 5.5)
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


# -- random sequences -----------------------------------------------------------------------------

WORKER_IDS = [b"w%d" % i for i in range(5)]
SERVICES = [DEFAULT, DEFAULT, DEFAULT, b"other", b"unknown"]


def is_final(form: str, frames: list[bytes]) -> bool:
    if form in ("mdp02", "mdp02d"):
        return parse_client_reply(frames).final
    return True


class RouterMachine(RuleBasedStateMachine):
    """Many clients (one request each, so a reply names its job) and a few workers that behave
    well, badly, or die at random, each holding up to its credit of jobs. Whatever happens,
    every accepted job is answered exactly once unless it is still queued or held by a worker."""

    @initialize(cap=st.sampled_from([1, 1, 2, 4]), prefetch_below=st.sampled_from([0.0, 0.5]))
    def setup(self, cap, prefetch_below):
        self.now = 0.0
        self.dispatcher = Dispatcher(
            DEFAULT,
            heartbeat_interval=1.0,
            heartbeat_liveness=3,
            limits=Limits(worker_credit=cap, prefetch_below=prefetch_below),
            now=0.0,
        )
        self.n_clients = 0
        self.clients: dict[bytes, dict] = {}  # client id -> form, accepted, finals
        self.assigned: dict[bytes, list[JobRequest]] = {}  # worker -> its jobs, oldest first
        self.bad_partial_clients: set[bytes] = set()

    # -- outbox bookkeeping --

    def drain(self):
        self.dispatcher.take_kills()
        for port, peer, frames in self.dispatcher.take_outbox():
            assert isinstance(frames, list)
            assert all(isinstance(f, bytes) for f in frames)
            if port is Port.FRONTEND:
                record = self.clients[peer]
                if is_final(record["form"], frames):
                    record["finals"] += 1
                    assert record["finals"] == 1, f"client {peer!r} answered twice"
                else:
                    assert record["accepted"]
                    assert record["finals"] == 0, "PARTIAL after the FINAL"
            else:
                assert port is Port.BACKEND
                msg = parse_broker_message(frames)
                if isinstance(msg, JobRequest):
                    held = self.assigned.setdefault(peer, [])
                    held.append(msg)
                    assert len(held) <= self.dispatcher.workers[peer].credit, "over its credit"
                elif isinstance(msg, Disconnect):
                    self.assigned.pop(peer, None)
                else:
                    assert isinstance(msg, Heartbeat)
                    assert peer in self.dispatcher.workers

    # -- clients --

    @rule(
        form=st.sampled_from(
            ["plain", "plain", "raw", "mdp01", "mdp02", "mdp02", "mdp02d", "bad", "empty"]
        ),
        service=st.sampled_from(SERVICES),
        request_id=st.none() | st.integers(0, 2**64 - 1),
        timeout_ms=st.sampled_from([0, 0, 300, 2000]),
        body=st.lists(st.binary(max_size=8), min_size=1, max_size=3),
    )
    def client_request(self, form, service, request_id, timeout_ms, body):
        self.n_clients += 1
        client = b"c%d" % self.n_clients
        header = [] if request_id is None else [encode_request_header(request_id, timeout_ms)]
        frames = {
            "plain": [b"", b"p", *body],
            "raw": [b"r", *body],
            "mdp01": [b"", MDPC01, service, *header, *body],
            "mdp02": [MDPC02, C_REQUEST, service, *header, *body],
            "mdp02d": [b"", MDPC02, C_REQUEST, service, *header, *body],
            "bad": [MDPC02, b"\x07", service, *body],
            "empty": [],
        }[form]
        before = self.dispatcher.stats.accepted
        self.dispatcher.on_client(client, frames, self.now)
        accepted = self.dispatcher.stats.accepted - before
        assert accepted in (0, 1)
        if form in ("bad", "empty"):
            assert not accepted
        self.clients[client] = {"form": form, "accepted": bool(accepted), "finals": 0}
        self.drain()
        if not accepted and form != "empty":
            assert self.clients[client]["finals"] == 1, "a refused request got no error reply"

    # -- workers --

    def has_busy_worker(self) -> bool:
        return bool(getattr(self, "assigned", None))

    def has_unregistered_worker(self) -> bool:
        return hasattr(self, "dispatcher") and len(self.dispatcher.workers) < len(WORKER_IDS)

    @precondition(has_unregistered_worker)
    @rule(
        data=st.data(),
        service=st.sampled_from([DEFAULT, DEFAULT, DEFAULT, b"other", b"mmi.x"]),
        delimited=st.booleans(),
        credit=st.sampled_from([1, 1, 2, 3, 5]),
    )
    def worker_ready(self, data, service, delimited, credit):
        free = [w for w in WORKER_IDS if w not in self.dispatcher.workers]
        worker = data.draw(st.sampled_from(free))
        self.dispatcher.on_worker(worker, encode_ready(service, delimited, credit=credit), self.now)
        registered = self.dispatcher.workers.get(worker)
        if registered is not None:
            assert registered.credit == min(credit, self.dispatcher.limits.worker_credit)
        self.drain()

    @precondition(has_busy_worker)
    @rule(
        data=st.data(),
        status=st.sampled_from([Status.OK, Status.OK, Status.APP_ERROR]),
        body=st.lists(st.binary(max_size=8), max_size=2),
    )
    def worker_finishes(self, data, status, body):
        worker = data.draw(st.sampled_from(sorted(self.assigned)))
        held = self.assigned[worker]
        # Ours answer the oldest job first; a foreign worker may answer any it holds.
        job = held.pop(data.draw(st.sampled_from([0, 0, 0, len(held) - 1])))
        if not held:
            del self.assigned[worker]
        frames = encode_worker_reply(job.address, body, status=status, delimited=job.delimited)
        self.dispatcher.on_worker(worker, frames, self.now)
        self.drain()

    @precondition(has_busy_worker)
    @rule(data=st.data(), body=st.lists(st.binary(max_size=8), max_size=2))
    def worker_streams(self, data, body):
        worker = data.draw(st.sampled_from(sorted(self.assigned)))
        job = self.assigned[worker][0]
        frames = encode_worker_reply(job.address, body, final=False, delimited=job.delimited)
        self.dispatcher.on_worker(worker, frames, self.now)
        self.drain()

    @precondition(has_busy_worker)
    @rule(data=st.data(), how=st.sampled_from(["gone", "disconnect", "wrong address"]))
    def busy_worker_fails(self, data, how):
        worker = data.draw(st.sampled_from(sorted(self.assigned)))
        job = self.assigned[worker][0]
        if how == "gone":
            self.dispatcher.worker_gone(
                worker, "killed by test", undelivered=data.draw(st.booleans())
            )
        elif how == "disconnect":
            self.dispatcher.on_worker(worker, encode_disconnect(job.delimited), self.now)
        else:
            wrong = b"\xff" * 9  # no job has this token
            self.dispatcher.on_worker(worker, encode_worker_reply(wrong, [b"x"]), self.now)
        if (
            worker not in self.dispatcher.workers
        ):  # an unreachable one may be kept, holding its jobs
            del self.assigned[worker]
        self.drain()

    @rule(
        worker=st.sampled_from(WORKER_IDS),
        how=st.sampled_from(["heartbeat", "heartbeat", "disconnect", "gone"]),
    )
    def any_worker_event(self, worker, how):
        if how == "heartbeat":
            self.dispatcher.on_worker(worker, encode_heartbeat(), self.now)
        elif how == "disconnect":
            self.dispatcher.on_worker(worker, encode_disconnect(), self.now)
            self.assigned.pop(worker, None)
        else:
            self.dispatcher.worker_gone(worker, "killed by test")
            self.assigned.pop(worker, None)
        self.drain()

    @rule(
        worker=st.sampled_from(WORKER_IDS),
        how=st.sampled_from(["ready twice", "stray reply", "garbage"]),
        garbage=st.lists(
            st.sampled_from([b"", MDPW02, W_READY, W_FINAL, b"\x09", DEFAULT, b"x"]), max_size=5
        ),
    )
    def worker_misbehaves(self, worker, how, garbage):
        if how == "ready twice":
            frames = encode_ready(DEFAULT)
        elif how == "stray reply":
            frames = encode_worker_reply(b"stray", [b"x"])
        else:
            frames = garbage
        self.dispatcher.on_worker(worker, frames, self.now)
        self.drain()

    # -- time and lifecycle --

    @rule(dt=st.sampled_from([0.05, 0.2, 0.5, 1.0, 4.0]))
    def tick(self, dt):
        before = self.dispatcher.next_deadline()
        self.now += dt
        self.dispatcher.on_tick(self.now)
        after = self.dispatcher.next_deadline()
        if self.now >= before:
            assert after > self.now
        else:
            assert after == before
        self.drain()

    @precondition(lambda self: not self.dispatcher.closing)
    @rule(data=st.data())
    def shutdown(self, data):
        # Rare: most runs should exercise the open dispatcher.
        if data.draw(st.integers(0, 9)) == 0:
            self.dispatcher.shutdown()
            assert self.dispatcher.queued() == 0
            self.drain()

    # -- invariants --

    def pending_clients(self) -> list[bytes]:
        running = [job.client for job in self.dispatcher.jobs.values() if not job.done]
        queued = [
            job.client for s in self.dispatcher.services.values() for job in s.queue if not job.done
        ]
        return running + queued

    @invariant()
    def every_accepted_job_is_pending_or_answered_exactly_once(self):
        if not hasattr(self, "dispatcher"):
            return
        pending = self.pending_clients()
        assert len(pending) == len(set(pending)), "a job is both queued and running, or twice"
        pending_set = set(pending)
        accepted = 0
        for client, record in self.clients.items():
            if record["accepted"]:
                accepted += 1
                assert record["finals"] + (client in pending_set) == 1, client
            else:
                assert client not in pending_set
        assert accepted == self.dispatcher.stats.accepted

    @invariant()
    def worker_and_job_state_is_consistent(self):
        if not hasattr(self, "dispatcher"):
            return
        dispatcher = self.dispatcher
        for address, job in dispatcher.jobs.items():
            assert job.address == address
            assert job.worker is not None
            assert job in job.worker.jobs
            assert dispatcher.workers[job.worker.identity] is job.worker
        for identity, worker in dispatcher.workers.items():
            assert worker.credit <= max(1, dispatcher.limits.worker_credit)
            assert worker.credit >= 1 or not worker.reachable
            assert len(worker.jobs) <= worker.credit or not worker.reachable
            level = len(worker.jobs) if len(worker.jobs) < worker.credit else -1
            assert worker.level == level
            if level >= 0:
                assert worker.service.levels[level][identity] is worker
            held = [job.address for job in worker.jobs]
            assert held == [job.address for job in self.assigned.get(identity, [])]
        for service in dispatcher.services.values():
            assert service.levels[0] is service.idle
            for k, level in enumerate(service.levels):
                for identity, worker in level.items():
                    assert len(worker.jobs) == k
                    assert dispatcher.workers[identity] is worker
                    assert worker.service is service
            assert service.workers == sum(
                1 for w in dispatcher.workers.values() if w.service is service
            )
            assert service.placed == sum(map(len, service.levels))
            limit = (service.limits or dispatcher.limits).prefetch_below
            takeable = [  # busy workers with credit to spare, not held up by a long job
                worker
                for level in service.levels[1:]
                for worker in level.values()
                if not limit or dispatcher._now - worker.jobs[0].started < limit
            ]
            if service.idle or (service.prefetch and takeable):
                assert not service.queue, "a job waits while a worker of its service may take it"
            assert service.prefetch == (not limit or service.job_time < limit)
            assert service.waiting == sum(1 for job in service.queue if not job.done)
        assert sum(len(w.jobs) for w in dispatcher.workers.values()) == len(dispatcher.jobs)


TestRouterMachine = RouterMachine.TestCase
TestRouterMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_long_random_run_with_echo_workers(seed):
    """A seeded soak: 3000 random events from plain and MDP/0.2 clients and from workers that
    stream, fail, die, leave and misbehave; then drain everything and check the books balance
    and that every reply went to the client whose job it answers."""
    rng = random.Random(seed)
    dispatcher = Dispatcher(DEFAULT, heartbeat_interval=1.0, heartbeat_liveness=3, now=0.0)
    now = 0.0
    finals: dict[bytes, int] = {}
    requests: dict[bytes, tuple[bool, bytes]] = {}  # client -> (is MDP/0.2, body)
    accepted_clients = []
    assigned: dict[bytes, JobRequest] = {}

    def check_reply(client: bytes, frames: list[bytes]) -> None:
        mdp, body = requests[client]
        if mdp:
            reply = parse_client_reply(frames)
            assert reply.request_id == int(body)
            assert reply.service == DEFAULT
            if not reply.final:
                assert finals.get(client, 0) == 0
                return
            if reply.status is Status.OK:
                assert reply.body == [b"re:" + body]
        else:
            assert frames[0] == b""
            if not frames[1].startswith(b"ERROR "):
                assert frames[-1] == b"re:" + body
        finals[client] = finals.get(client, 0) + 1
        assert finals[client] == 1, f"{client!r} answered twice"

    def drain():
        for port, peer, frames in dispatcher.take_outbox():
            if port is Port.FRONTEND:
                check_reply(peer, frames)
            else:
                msg = parse_broker_message(frames)
                if isinstance(msg, JobRequest):
                    assert peer not in assigned, "a second job for a busy worker"
                    assigned[peer] = msg
                elif isinstance(msg, Disconnect):
                    assigned.pop(peer, None)

    for n in range(3000):
        event = rng.random()
        worker = rng.choice(WORKER_IDS)
        if event < 0.3:
            client = b"c%d" % n
            mdp = rng.random() < 0.5
            requests[client] = (mdp, b"%d" % n)
            before = dispatcher.stats.accepted
            if mdp:
                mdp_request(dispatcher, client, b"%d" % n, now, request_id=n)
            else:
                plain_request(dispatcher, client, b"%d" % n, now)
            if dispatcher.stats.accepted > before:
                accepted_clients.append(client)
        elif event < 0.38:
            if worker not in dispatcher.workers or rng.random() < 0.05:  # sometimes READY twice
                dispatcher.on_worker(worker, encode_ready(DEFAULT, rng.random() < 0.3), now)
        elif event < 0.7:
            job = assigned.pop(worker, None)
            if job is not None:
                status = Status.OK if rng.random() < 0.8 else Status.APP_ERROR
                finish(dispatcher, worker, job, now=now, status=status, delimited=job.delimited)
        elif event < 0.75:
            job = assigned.get(worker)
            if job is not None:
                frames = encode_worker_reply(job.address, [b"part"], final=False)
                dispatcher.on_worker(worker, frames, now)
        elif event < 0.8:
            dispatcher.worker_gone(worker, "crash")
            assigned.pop(worker, None)
        elif event < 0.84:
            dispatcher.on_worker(worker, encode_disconnect(), now)
            assigned.pop(worker, None)
        elif event < 0.86:
            dispatcher.on_worker(worker, encode_worker_reply(b"stray", [b"x"]), now)
        elif event < 0.88:
            dispatcher.on_worker(worker, [MDPW02, b"\x09"], now)
        elif event < 0.9:
            dispatcher.on_worker(worker, encode_heartbeat(), now)
        else:
            now += rng.choice([0.2, 0.5, 1.0, 4.0])
            dispatcher.on_tick(now)
        drain()
    # Bring up fresh workers and let them finish everything.
    for i in range(3):
        dispatcher.on_worker(b"final-%d" % i, encode_ready(DEFAULT), now)
    drain()
    while assigned:
        worker, job = assigned.popitem()
        finish(dispatcher, worker, job, now=now)
        drain()
    assert dispatcher.queued() == 0
    assert dispatcher.jobs == {}
    assert sorted(finals) == sorted(requests)  # refused requests are answered too
    assert dispatcher.stats.accepted == len(accepted_clients)
    assert dispatcher.stats.replied + dispatcher.stats.errors == len(requests)


def test_error_reply_frames_match_protocol_encoder():
    """The dispatcher's error replies are exactly what protocol.encode_client_reply builds."""
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    dispatcher.on_client(b"c1", [b"", MDPC01, DEFAULT, b"x"], 0.0)
    only_job(dispatcher)
    dispatcher.worker_gone(b"A", "boom")
    _, frames = only_reply(dispatcher)
    expected = encode_client_reply(
        Form.MDP01,
        DEFAULT,
        [],
        status=Status.WORKER_LOST,
        message="the worker running the job was lost (boom)",
    )
    assert frames == expected


def test_mdp01_worker_is_served_in_its_own_framing():
    dispatcher = make_dispatcher()
    dispatcher.on_worker(b"old", [b"", b"MDPW01", b"\x01", DEFAULT], 0.0)
    plain_request(dispatcher, b"c1", b"job")
    ((port, peer, frames),) = dispatcher.take_outbox()
    assert (port, peer) == (Port.BACKEND, b"old")
    assert frames[:3] == [b"", b"MDPW01", b"\x02"]
    assert frames[4:] == [b"", b"job"]
    dispatcher.on_worker(b"old", [b"", b"MDPW01", b"\x03", frames[3], b"", b"done"], 1.0)
    assert dispatcher.take_outbox() == [(Port.FRONTEND, b"c1", [b"", b"done"])]
    dispatcher.on_tick(2.0)
    assert dispatcher.take_outbox() == [(Port.BACKEND, b"old", [b"", b"MDPW01", b"\x04"])]


# -- MMI (RFC 8) ----------------------------------------------------------------------------------


def _mmi(dispatcher: Dispatcher, service: bytes, *body: bytes) -> list[bytes]:
    dispatcher.on_client(b"c", [MDPC02, C_REQUEST, service, *body], 0.0)
    ((port, peer, frames),) = dispatcher.take_outbox()
    assert (port, peer) == (Port.FRONTEND, b"c")
    reply = parse_client_reply(frames)
    assert reply.final
    assert reply.service == service
    return reply.body


def test_mmi_service_known_and_unknown():
    dispatcher = make_dispatcher()
    assert _mmi(dispatcher, b"mmi.service", DEFAULT) == [b"200"]
    assert _mmi(dispatcher, b"mmi.service", b"nope") == [b"404"]
    ready(dispatcher, b"W", service=b"extra")
    dispatcher.take_outbox()
    assert _mmi(dispatcher, b"mmi.service", b"extra") == [b"200"]


def test_mmi_services_lists_known_services_and_other_mmi_is_501():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W", service=b"extra")
    dispatcher.take_outbox()
    assert _mmi(dispatcher, b"mmi.services") == sorted([DEFAULT, b"extra"])
    assert _mmi(dispatcher, b"mmi.other") == [b"501"]
    assert dispatcher.stats.accepted == 0


def test_client_key_reaches_the_worker_only_when_given():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W")
    dispatcher.take_outbox()
    key = b"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    dispatcher.on_client(b"c1", [b"", b"job"], 0.0, key)
    ((_, _, frames),) = dispatcher.take_outbox()
    assert parse_broker_message(frames).client_key == key
    dispatcher.on_worker(b"W", encode_worker_reply(frames[2], [b"ok"]), 0.1)
    dispatcher.take_outbox()
    dispatcher.on_client(b"c2", [b"", b"job"], 0.2)
    ((_, _, frames),) = dispatcher.take_outbox()
    assert parse_broker_message(frames).client_key == b""
