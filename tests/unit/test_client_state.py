"""RequestState and the client helpers, with no sockets and a clock we hold in our hand.

Replies are built with the server-side encoder of zmqserver.protocol and decoded with the
client-side parser, so these tests also pin the two halves of the wire format to each other.
"""

from __future__ import annotations

import pytest

from zmqserver.client.state import (
    RequestIds,
    RequestState,
    Response,
    encode_payload,
    encode_service,
    unwrap,
)
from zmqserver.errors import (
    ERROR_CLASSES,
    AppError,
    BadRequest,
    ProtocolError,
    RequestTimeout,
    ServerError,
    Status,
)
from zmqserver.protocol import (
    FLAG_RETRYABLE,
    MDPC02,
    ClientReply,
    Form,
    encode_client_reply,
    encode_reply_header,
    parse_client_reply,
    parse_client_request,
)

RID = 0x1234_5678_9ABC_DEF0
SERVICE = b"echo"


def make_state(**kwargs: object) -> RequestState:
    options: dict[str, object] = {
        "request_id": RID,
        "service": SERVICE,
        "timeout": 1.0,
        "retries": 3,
        "peer": "tcp://test:1",
    }
    options.update(kwargs)
    body = options.pop("body", [b"job"])
    return RequestState(body, **options)  # type: ignore[arg-type]


def reply(
    body: list[bytes],
    *,
    request_id: int | None = RID,
    status: Status = Status.OK,
    message: str = "",
    final: bool = True,
) -> ClientReply:
    """A reply as the broker would encode it for an MDP/0.2 client, decoded by the client."""
    frames = encode_client_reply(
        Form.MDP02,
        SERVICE,
        body,
        request_id=request_id,
        status=status,
        message=message,
        final=final,
    )
    return parse_client_reply(frames)


# -- the request on the wire ----------------------------------------------------------------------


def test_start_sends_an_mdp02_request_with_header() -> None:
    state = make_state(body=[b"a", b"b"], timeout=2.5, flags=FLAG_RETRYABLE)
    frames = state.start(now=100.0)
    assert frames[:3] == [MDPC02, b"\x01", SERVICE]
    request = parse_client_request(frames)
    assert request.form is Form.MDP02
    assert request.service == SERVICE
    assert request.body == [b"a", b"b"]
    assert request.request_id == RID
    # All the patience left (3 attempts of 2.5 s) less a 0.25 s margin: the job's deadline.
    assert request.timeout_ms == 7250
    assert request.flags == FLAG_RETRYABLE
    assert state.attempts == 1
    assert state.deadline == pytest.approx(102.5)
    assert not state.done


def test_header_timeout_is_never_zero_which_would_mean_server_default() -> None:
    state = make_state(timeout=0.0001)
    assert parse_client_request(state.start(0.0)).timeout_ms == 1


def test_header_timeout_is_capped_at_u32_milliseconds() -> None:
    state = make_state(timeout=10.0**9)
    assert parse_client_request(state.start(0.0)).timeout_ms == 2**32 - 1


def test_start_twice_is_a_bug() -> None:
    state = make_state()
    state.start(0.0)
    with pytest.raises(RuntimeError, match="already started"):
        state.start(1.0)


def test_deadline_is_none_before_start() -> None:
    state = make_state()
    assert state.deadline is None
    assert not state.expired(10.0**9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"retries": 0}, "retries"),
        ({"retries": -3}, "retries"),
    ],
)
def test_invalid_policy_is_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_state(**kwargs)


# -- replies --------------------------------------------------------------------------------------


def test_final_reply_ends_the_request() -> None:
    state = make_state()
    state.start(0.0)
    assert state.on_reply(reply([b"result"]), 0.5) == Response([b"result"], final=True)
    assert state.done
    assert state.complete
    assert state.deadline is None


def test_on_frames_decodes_then_takes_the_reply() -> None:
    state = make_state()
    state.start(0.0)
    frames = encode_client_reply(Form.MDP02, SERVICE, [b"x", b"y"], request_id=RID)
    assert state.on_frames(frames, 0.1) == Response([b"x", b"y"], final=True)


def test_garbage_frames_raise_protocol_error() -> None:
    state = make_state()
    state.start(0.0)
    with pytest.raises(ProtocolError):
        state.on_frames([b"", b"plain reply"], 0.1)


def test_late_reply_with_another_request_id_is_ignored() -> None:
    state = make_state()
    state.start(0.0)
    assert state.on_reply(reply([b"stale"], request_id=RID - 1), 0.2) is None
    # Nothing changed: still waiting, same deadline, same attempt.
    assert not state.done
    assert state.deadline == pytest.approx(1.0)
    assert state.attempts == 1
    assert state.on_reply(reply([b"fresh"]), 0.3) == Response([b"fresh"], final=True)


def test_late_error_reply_with_another_request_id_is_ignored_too() -> None:
    state = make_state()
    state.start(0.0)
    stale = reply([], request_id=RID + 7, status=Status.APP_ERROR, message="old failure")
    assert state.on_reply(stale, 0.2) is None
    assert not state.done


def test_reply_before_start_is_ignored() -> None:
    state = make_state()
    assert state.on_reply(reply([b"x"]), 0.0) is None
    assert state.attempts == 0


def test_replies_after_the_request_ended_are_ignored() -> None:
    state = make_state()
    state.start(0.0)
    state.on_reply(reply([b"first"]), 0.1)
    assert state.on_reply(reply([b"duplicate"]), 0.2) is None


def test_reply_without_request_id_is_taken_as_ours() -> None:
    # A plain MDP/0.2 broker echoes no id; a zmqserver broker that could not read our header
    # answers with a bare status header. Silence would be worse than either.
    state = make_state()
    state.start(0.0)
    assert state.on_reply(reply([b"ok"], request_id=None), 0.1) == Response([b"ok"], final=True)


def test_partials_then_final() -> None:
    state = make_state(timeout=1.0)
    state.start(0.0)
    assert state.on_reply(reply([b"p1"], final=False), 0.9) == Response([b"p1"], final=False)
    # A partial proves the job is alive: the deadline moves to a full timeout from now.
    assert state.deadline == pytest.approx(1.9)
    assert not state.expired(1.5)
    assert state.on_reply(reply([b"p2"], final=False), 1.8) == Response([b"p2"], final=False)
    assert state.partials == 2
    assert state.on_reply(reply([]), 2.0) == Response([], final=True)
    assert state.done
    assert state.complete


# -- error replies --------------------------------------------------------------------------------

ERROR_STATUSES = [status for status in Status if status is not Status.OK]


@pytest.mark.parametrize("status", ERROR_STATUSES, ids=lambda s: s.reason)
def test_error_status_raises_its_exception_class(status: Status) -> None:
    state = make_state()
    state.start(0.0)
    with pytest.raises(ServerError) as info:
        state.on_reply(reply([], status=status, message="what went wrong"), 0.1)
    assert type(info.value) is ERROR_CLASSES[status]
    assert info.value.status is status
    assert info.value.reason == status.reason
    assert info.value.message == "what went wrong"
    assert state.done
    assert state.complete


def test_app_error_carries_the_exception_text() -> None:
    state = make_state()
    state.start(0.0)
    with pytest.raises(AppError, match=r"^ValueError: boom$"):
        state.on_reply(reply([], status=Status.APP_ERROR, message="ValueError: boom"), 0.1)


def test_error_reply_without_request_id_still_raises() -> None:
    # What the broker sends when it could not read our header (protocol._bad_request).
    state = make_state()
    state.start(0.0)
    frames = encode_client_reply(
        Form.MDP02, SERVICE, [], status=Status.BAD_REQUEST, message="malformed header"
    )
    with pytest.raises(BadRequest, match="malformed header"):
        state.on_frames(frames, 0.1)


def test_unknown_status_code_is_an_error_not_a_success() -> None:
    state = make_state()
    state.start(0.0)
    header = encode_reply_header(RID, Status.OK)[:-1] + b"\xee"
    with pytest.raises(ServerError):
        state.on_frames([MDPC02, b"\x03", SERVICE, header, b"from the future"], 0.1)


def test_error_without_message_still_says_something() -> None:
    state = make_state()
    state.start(0.0)
    with pytest.raises(ServerError, match="queue_full"):
        state.on_reply(reply([], status=Status.QUEUE_FULL, message=""), 0.1)


def test_error_after_partials_ends_the_request() -> None:
    state = make_state()
    state.start(0.0)
    state.on_reply(reply([b"p1"], final=False), 0.1)
    with pytest.raises(ServerError):
        state.on_reply(reply([], status=Status.WORKER_LOST, message="worker died"), 0.2)
    assert state.done


def test_error_in_a_partial_is_not_a_clean_end() -> None:
    state = make_state()
    state.start(0.0)
    with pytest.raises(AppError):
        state.on_reply(reply([], status=Status.APP_ERROR, message="x", final=False), 0.1)
    assert state.done
    assert not state.complete  # more may follow: the driver must replace its socket


# -- timeouts and retries -------------------------------------------------------------------------


def test_retries_count_every_attempt_including_the_first() -> None:
    state = make_state(retries=3, timeout=1.0)
    first = state.start(0.0)
    assert state.expired(1.0)
    second = state.on_timeout(1.0)
    # The same request (same id, same body); only the header's deadline shrinks with the
    # patience left: 3, 2, then 1 attempt of 1 s, less a 0.1 s margin.
    assert [parse_client_request(f).timeout_ms for f in (first, second)] == [2900, 1900]
    assert second[:3] + second[4:] == first[:3] + first[4:]
    assert parse_client_request(second).request_id == parse_client_request(first).request_id
    assert state.attempts == 2
    assert state.deadline == pytest.approx(2.0)
    assert parse_client_request(state.on_timeout(2.0)).timeout_ms == 900
    assert state.attempts == 3
    with pytest.raises(RequestTimeout) as info:
        state.on_timeout(3.0)
    assert state.attempts == 3
    assert state.done
    assert not state.complete
    message = str(info.value)
    assert "tcp://test:1" in message
    assert "3 attempts" in message
    assert "1 s" in message


def test_one_retry_means_no_resend() -> None:
    state = make_state(retries=1, timeout=0.25)
    state.start(0.0)
    with pytest.raises(RequestTimeout, match=r"after 1 attempt with a timeout of 0\.25 s"):
        state.on_timeout(0.25)


def test_reply_to_a_retried_request_is_accepted() -> None:
    state = make_state()
    state.start(0.0)
    state.on_timeout(1.0)
    assert state.on_reply(reply([b"second time lucky"]), 1.5) == Response(
        [b"second time lucky"], final=True
    )


def test_late_reply_after_giving_up_is_ignored() -> None:
    state = make_state(retries=1)
    state.start(0.0)
    with pytest.raises(RequestTimeout):
        state.on_timeout(1.0)
    assert state.on_reply(reply([b"too late"]), 1.1) is None


def test_stalled_stream_is_not_resent() -> None:
    state = make_state(retries=5, timeout=1.0)
    state.start(0.0)
    state.on_reply(reply([b"p1"], final=False), 0.5)
    with pytest.raises(RequestTimeout, match="stalled.*1 partial reply"):
        state.on_timeout(1.5)
    assert state.attempts == 1


def test_on_timeout_when_not_waiting_is_a_bug() -> None:
    state = make_state()
    with pytest.raises(RuntimeError):
        state.on_timeout(0.0)
    state.start(0.0)
    state.on_reply(reply([b"done"]), 0.1)
    with pytest.raises(RuntimeError):
        state.on_timeout(5.0)


# -- sends that would block ----------------------------------------------------------------------


def test_a_blocked_send_is_an_attempt_that_waits_out_its_timeout() -> None:
    # Neither a wait for the send nor an immediate resend: the attempt's deadline stands, so a
    # request to a server that is down ends after timeout x retries, as any unanswered one does.
    state = make_state(retries=2, timeout=1.0)
    state.start(0.0)
    state.on_send_blocked(0.0)
    assert state.attempts == 1
    assert state.unsent == 1
    assert state.deadline == 1.0
    assert not state.expired(0.5)
    state.on_timeout(1.0)  # resent: a blocked attempt is retried like a lost one
    state.on_send_blocked(1.0)
    with pytest.raises(RequestTimeout) as info:
        state.on_timeout(2.0)
    message = str(info.value)
    assert "after 2 attempts with a timeout of 1 s each" in message
    assert "2 could not be sent: the queue to the server was full" in message


def test_a_blocked_send_does_not_stop_a_later_reply() -> None:
    state = make_state()
    state.start(0.0)
    state.on_send_blocked(0.0)
    state.on_timeout(1.0)
    assert state.on_reply(reply([b"up again"]), 1.2) == Response([b"up again"], final=True)


def test_timeout_message_is_unchanged_when_every_attempt_was_sent() -> None:
    state = make_state(retries=1)
    state.start(0.0)
    with pytest.raises(RequestTimeout) as info:
        state.on_timeout(1.0)
    assert "could not be sent" not in str(info.value)


def test_on_send_blocked_when_not_waiting_is_a_bug() -> None:
    state = make_state()
    with pytest.raises(RuntimeError):
        state.on_send_blocked(0.0)
    state.start(0.0)
    state.on_reply(reply([b"done"]), 0.1)
    with pytest.raises(RuntimeError):
        state.on_send_blocked(0.2)


# -- helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "frames"),
    [
        (b"raw", [b"raw"]),
        ("h\u00e9", ["h\u00e9".encode()]),
        (bytearray(b"ba"), [b"ba"]),
        ([b"a", "b"], [b"a", b"b"]),
        ((b"",), [b""]),
        ("", [b""]),
    ],
)
def test_encode_payload(payload: object, frames: list[bytes]) -> None:
    assert encode_payload(payload) == frames  # type: ignore[arg-type]


def test_empty_payload_sequence_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        encode_payload([])


def test_payload_frames_must_be_bytes_or_str() -> None:
    with pytest.raises(TypeError, match="int"):
        encode_payload([b"ok", 3])  # type: ignore[list-item]


def test_encode_service() -> None:
    assert encode_service("echo") == b"echo"
    assert encode_service(b"") == b""
    with pytest.raises(ValueError, match="255"):
        encode_service("x" * 256)


def test_unwrap() -> None:
    assert unwrap([b"one"]) == b"one"
    assert unwrap([b"a", b"b"]) == [b"a", b"b"]
    assert unwrap([]) == []


def test_request_ids_increment_and_wrap() -> None:
    ids = RequestIds(start=2**64 - 2)
    assert [next(ids) for _ in range(3)] == [2**64 - 2, 2**64 - 1, 0]


def test_request_ids_start_at_random() -> None:
    starts = {next(RequestIds()) for _ in range(8)}
    assert len(starts) > 1
    assert all(0 <= start < 2**64 for start in starts)
