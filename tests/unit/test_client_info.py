"""The client info header (docs/protocol.md §3.4b) and the request context built from it.

Sans-IO: the header's encoding, the worker's parsing (alone and with the key header and the
escape), the feature bit in READY, the dispatcher sending it only to workers that asked on a
server that passes it, and ``zmqserver.request()`` inside and outside a job.
"""

from __future__ import annotations

import math

import pytest
from tests.unit.dispatch_helpers import DEFAULT, jobs_sent, make_dispatcher

from zmqserver.context import CURRENT, OutsideJob, Request, request
from zmqserver.errors import ProtocolError
from zmqserver.protocol import (
    FEATURE_CLIENT_INFO,
    FEATURE_COMPACT,
    HEADER_MAGIC,
    INFO_HEADER_MIN,
    KEY_HEADER_SIZE,
    MDPW02,
    W_READY,
    JobRequest,
    Ready,
    decode_client_info,
    encode_client_info,
    encode_client_request,
    encode_credit_header,
    encode_job_request,
    encode_ready,
    is_client_info,
    parse_broker_message,
    parse_worker_message,
)

KEY = b"rq:rQ]#&n1BH7Xb]0i3m-3XG>Srxq:gs>a&FjMM?"
TOKEN = (1).to_bytes(8, "big")


def test_client_info_round_trips():
    info = encode_client_info(77, 2, 1500, b"192.0.2.7")
    assert info[:5] == HEADER_MAGIC + b"\xc1"
    assert len(info) == INFO_HEADER_MIN + len(b"192.0.2.7")
    assert decode_client_info(info) == (77, 2, 1500, "192.0.2.7")


def test_client_info_without_id_deadline_or_address():
    info = encode_client_info(None, 1, None, b"")
    assert len(info) == INFO_HEADER_MIN
    assert decode_client_info(info) == (None, 1, None, "")


def test_client_info_request_id_zero_is_an_id():
    assert decode_client_info(encode_client_info(0, 1, 0, b""))[0] == 0


def test_client_info_clamps_what_does_not_fit():
    request_id, attempt, left, _ = decode_client_info(encode_client_info(5, 70000, -20, b""))
    assert (request_id, attempt, left) == (5, 0xFFFF, 0)
    assert decode_client_info(encode_client_info(5, 1, 2**40, b""))[2] == 0xFFFFFFFE


def test_decode_refuses_other_frames():
    for frame in (b"", HEADER_MAGIC + b"\x00", HEADER_MAGIC + KEY[:40], b"x" * 30):
        assert not is_client_info(frame)
        with pytest.raises(ProtocolError):
            decode_client_info(frame)


def test_a_44_byte_info_header_is_not_a_key_header():
    """Z85 text never has the tag byte, so an info header whose address makes it exactly as long
    as a key header is still read as client info."""
    info = encode_client_info(1, 1, None, b"x" * (KEY_HEADER_SIZE - INFO_HEADER_MIN))
    assert len(info) == KEY_HEADER_SIZE
    job = parse_broker_message(encode_job_request(TOKEN, [b"data"], info=info))
    assert (job.client_key, job.info, job.body) == (b"", info, [b"data"])


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("key", [b"", KEY])
@pytest.mark.parametrize("body", [[b"data"], [HEADER_MAGIC + b"data", b"more"], []])
def test_worker_parses_key_info_and_escape_in_order(compact, key, body):
    info = encode_client_info(9, 1, 100, b"::1")
    frames = encode_job_request(TOKEN, body, client_key=key, compact=compact, info=info)
    job = parse_broker_message(frames)
    assert isinstance(job, JobRequest)
    assert (job.address, job.body, job.client_key, job.info) == (TOKEN, body, key, info)


def test_job_without_info_has_none():
    job = parse_broker_message(encode_job_request(TOKEN, [b"data"]))
    assert job.info == b""


def test_ready_asks_for_client_info_with_a_feature_bit():
    frames = encode_ready(b"echo", credit=1, client_info=True)
    assert frames == [MDPW02, W_READY, b"echo", encode_credit_header(1, FEATURE_CLIENT_INFO)]
    assert parse_worker_message(frames) == Ready(b"echo", extended=True, client_info=True)
    both = parse_worker_message(encode_ready(b"echo", credit=8, compact=True, client_info=True))
    assert isinstance(both, Ready)
    assert both.compact
    assert both.client_info
    header = encode_credit_header(8, FEATURE_COMPACT)
    assert not parse_worker_message([MDPW02, W_READY, b"echo", header]).client_info


def _serve_one(pass_info: bool, asks: bool, peer: bytes | None = b"10.1.2.3") -> JobRequest:
    dispatcher = make_dispatcher(now=10.0)
    dispatcher.pass_client_info = pass_info
    dispatcher.on_worker(b"w", encode_ready(DEFAULT, credit=2, client_info=asks), 10.0)
    request = encode_client_request(DEFAULT, [b"hi"], request_id=42, timeout_ms=3000)
    dispatcher.on_client(b"c", request, 10.5, None, peer)
    [(worker, job)] = jobs_sent(dispatcher.take_outbox())
    assert worker == b"w"
    return job


def test_dispatcher_sends_client_info_to_a_worker_that_asked():
    job = _serve_one(pass_info=True, asks=True)
    assert job.body == [b"hi"]
    assert decode_client_info(job.info) == (42, 1, 3000, "10.1.2.3")


@pytest.mark.parametrize(("pass_info", "asks"), [(False, True), (True, False)])
def test_no_client_info_unless_server_passes_and_worker_asks(pass_info, asks):
    job = _serve_one(pass_info, asks)
    assert job.info == b""
    assert job.body == [b"hi"]


def test_client_info_without_a_peer_address():
    job = _serve_one(True, True, peer=None)
    assert decode_client_info(job.info)[3] == ""


def test_client_info_counts_attempts_and_time_left():
    """A job retried on another worker says so, with the time left at its second dispatch."""
    dispatcher = make_dispatcher(now=0.0)
    dispatcher.pass_client_info = True
    dispatcher.on_worker(b"w1", encode_ready(DEFAULT, credit=2, client_info=True), 0.0)
    request = encode_client_request(DEFAULT, [b"x"], request_id=1, timeout_ms=10_000, flags=1)
    dispatcher.on_client(b"c", request, 0.0, None, b"127.0.0.1")
    dispatcher.take_outbox()
    dispatcher.worker_gone(b"w1", "killed")
    dispatcher.on_worker(b"w2", encode_ready(DEFAULT, credit=2, client_info=True), 4.0)
    [(_, job)] = jobs_sent(dispatcher.take_outbox())
    assert decode_client_info(job.info) == (1, 2, 6000, "127.0.0.1")


def test_request_outside_a_job_raises():
    assert CURRENT.job is None
    with pytest.raises(OutsideJob, match="only available while a job runs"):
        request()
    assert issubclass(OutsideJob, RuntimeError)


def _in_job(job: JobRequest, taken: float = 100.0) -> Request:
    CURRENT.job, CURRENT.taken, CURRENT.service = job, taken, "echo"
    try:
        return request()
    finally:
        CURRENT.job = None


def test_request_with_client_info():
    info = encode_client_info(42, 1, 2500, b"127.0.0.1")
    ctx = _in_job(JobRequest(TOKEN, [b"x"], client_key=KEY, info=info))
    assert ctx.id == "0000000000000001"
    assert (ctx.request_id, ctx.service, ctx.attempt) == (42, "echo", 1)
    assert (ctx.client_key, ctx.client_address) == (KEY.decode(), "127.0.0.1")
    assert ctx.deadline_at == 102.5
    assert ctx.deadline is not None
    assert ctx.deadline < 102.5
    with pytest.raises(AttributeError):
        ctx.service = "other"  # type: ignore[misc]


def test_request_without_client_info():
    ctx = _in_job(JobRequest(TOKEN, [b"x"]))
    assert ctx == Request("0000000000000001", None, "echo", None, None, None, None)
    assert ctx.deadline is None


def test_request_with_no_deadline():
    ctx = _in_job(JobRequest(TOKEN, [b"x"], info=encode_client_info(None, 1, None, b"")))
    assert (ctx.deadline, ctx.request_id, ctx.client_address) == (None, None, None)
    assert not math.isnan(ctx.deadline_at or 0.0)
