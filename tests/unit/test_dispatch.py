"""Unit tests for zmqserver.broker.Dispatcher, driven with frames as ROUTER sockets deliver them.

No sockets, no clocks: every ``on_*`` call gets the frames after the peer's routing id and an
explicit ``now``; what the dispatcher wants sent is read back from ``take_outbox()``.
"""

from __future__ import annotations

import random

import pytest
from tests.helpers import limits

from zmqserver.broker import Dispatcher, Port
from zmqserver.errors import Status
from zmqserver.protocol import (
    C_FINAL,
    C_PARTIAL,
    C_REQUEST,
    HEADER_MAGIC,
    MDPC01,
    MDPC02,
    MDPW02,
    Form,
    decode_status_header,
    encode_client_reply,
    encode_heartbeat,
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
    dispatcher = make_dispatcher(limits=limits(unknown_service_wait=0))
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
    dispatcher = make_dispatcher(limits=limits(unknown_service_wait=0))
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
    """RFC 8: 200 when a worker is registered; so 404 for the default service before its pool
    registers, though a request for it would queue."""
    dispatcher = make_dispatcher()
    assert _mmi(dispatcher, b"mmi.service", DEFAULT) == [b"404"]
    ready(dispatcher, b"A")
    dispatcher.take_outbox()
    assert _mmi(dispatcher, b"mmi.service", DEFAULT) == [b"200"]
    assert _mmi(dispatcher, b"mmi.service", b"nope") == [b"404"]
    ready(dispatcher, b"W", service=b"extra")
    dispatcher.take_outbox()
    assert _mmi(dispatcher, b"mmi.service", b"extra") == [b"200"]


def test_mmi_services_lists_services_with_workers_and_other_mmi_is_501():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W", service=b"extra")
    dispatcher.take_outbox()
    assert _mmi(dispatcher, b"mmi.services") == [b"extra"]
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
