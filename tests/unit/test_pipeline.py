"""Pipeline: many requests on one socket, matched by id, with no sockets at all."""

from __future__ import annotations

import pytest

from zmqserver.client.pipeline import Pipeline
from zmqserver.client.state import RequestIds
from zmqserver.errors import AppError, RequestTimeout, Status
from zmqserver.protocol import Form, encode_client_reply, parse_client_request


def reply_to(frames: list[bytes], body: list[bytes], **kwargs) -> list[bytes]:
    request = parse_client_request(frames)
    return encode_client_reply(
        Form.MDP02, request.service, body, request_id=request.request_id, **kwargs
    )


def test_replies_are_matched_by_id_in_any_order():
    pipe = Pipeline(timeout=1.0, ids=RequestIds(10))
    first_id, first = pipe.submit([b"one"], 0.0)
    second_id, second = pipe.submit([b"two"], 0.0)
    assert (first_id, second_id) == (10, 11)
    event = pipe.on_frames(reply_to(second, [b"TWO"]), 0.1)
    assert event.request_id == second_id
    assert event.response.body == [b"TWO"]
    assert event.final
    assert len(pipe) == 1
    event = pipe.on_frames(reply_to(first, [b"ONE"]), 0.2)
    assert event.request_id == first_id
    assert len(pipe) == 0
    # A late duplicate of an answered request is ignored.
    assert pipe.on_frames(reply_to(first, [b"ONE"]), 0.3) is None


def test_timeouts_resend_then_fail():
    pipe = Pipeline(timeout=1.0, retries=2)
    request_id, frames = pipe.submit([b"x"], 0.0)
    assert pipe.next_deadline() == 1.0
    assert pipe.on_tick(0.5) == ([], [])
    resend, ended = pipe.on_tick(1.0)
    assert [(i, parse_client_request(f).request_id) for i, f in resend] == [(request_id,) * 2]
    assert resend[0][1][4:] == frames[4:]
    assert ended == []
    resend, ended = pipe.on_tick(2.0)
    assert resend == []
    assert [e.request_id for e in ended] == [request_id]
    assert isinstance(ended[0].error, RequestTimeout)
    assert pipe.next_deadline() is None


def test_error_reply_ends_the_request_with_its_exception():
    pipe = Pipeline()
    request_id, frames = pipe.submit([b"x"], 0.0)
    event = pipe.on_frames(
        reply_to(frames, [], status=Status.APP_ERROR, message="ValueError: no"), 0.1
    )
    assert event.request_id == request_id
    assert isinstance(event.error, AppError)
    assert len(pipe) == 0


def test_partials_then_final():
    pipe = Pipeline()
    _, frames = pipe.submit([b"x"], 0.0)
    part = pipe.on_frames(reply_to(frames, [b"p"], final=False), 0.1)
    assert not part.final
    final = pipe.on_frames(reply_to(frames, [b"f"]), 0.2)
    assert final.final


def test_reply_without_id_goes_to_the_only_request_and_cancel_forgets():
    pipe = Pipeline()
    request_id, frames = pipe.submit([b"x"], 0.0)
    bare = encode_client_reply(Form.MDP02, b"", [b"r"])
    assert pipe.on_frames(bare, 0.1).request_id == request_id
    other, _ = pipe.submit([b"y"], 0.0)
    pipe.submit([b"z"], 0.0)
    assert pipe.on_frames(bare, 0.1) is None  # two in flight: cannot be placed
    pipe.cancel(other)
    assert len(pipe) == 1


@pytest.mark.parametrize("junk", [[], [b"x"], [b"MDPC02", b"\x09", b"s"]])
def test_junk_is_ignored(junk):
    pipe = Pipeline()
    pipe.submit([b"x"], 0.0)
    assert pipe.on_frames(junk, 0.1) is None
    assert len(pipe) == 1


def test_a_blocked_send_fails_its_attempt_and_is_resent_at_its_deadline():
    pipe = Pipeline(timeout=1.0, retries=2)
    blocked, _ = pipe.submit([b"x"], 0.0)
    sent, _ = pipe.submit([b"y"], 0.0)
    pipe.on_send_blocked(blocked, 0.0)
    assert pipe.next_deadline() == 1.0  # the blocked attempt still waits its timeout
    assert pipe.on_tick(0.5) == ([], [])
    resend, ended = pipe.on_tick(1.0)
    assert sorted(request_id for request_id, _ in resend) == sorted([blocked, sent])
    pipe.on_send_blocked(blocked, 1.0)
    resend, ended = pipe.on_tick(2.0)
    errors = {event.request_id: str(event.error) for event in ended}
    assert "2 could not be sent" in errors[blocked]
    assert "could not be sent" not in errors[sent]


def test_a_blocked_send_of_a_request_that_ended_is_ignored():
    pipe = Pipeline()
    request_id, _ = pipe.submit([b"x"], 0.0)
    pipe.cancel(request_id)
    pipe.on_send_blocked(request_id, 0.0)  # no error: a driver may report it after a cancel
    assert len(pipe) == 0


def test_the_earliest_deadline_is_found_without_a_scan_after_resends_and_partials():
    # next_deadline() reads the first request only: resends and PARTIALs must move a request
    # behind the others, or a later deadline would hide an earlier one and a timeout fire late.
    pipe = Pipeline(timeout=1.0, retries=3)
    first_id, first = pipe.submit([b"a"], 0.0)
    second_id, _ = pipe.submit([b"b"], 0.25)
    third_id, third = pipe.submit([b"c"], 0.5)
    assert pipe.next_deadline() == 1.0
    resend, ended = pipe.on_tick(1.0)  # the first is resent: its deadline is now 2.0
    assert [i for i, _ in resend] == [first_id]
    assert ended == []
    assert pipe.next_deadline() == 1.25
    pipe.on_frames(reply_to(third, [b"part"], final=False), 1.1)  # the third's deadline: 2.1
    resend, _ = pipe.on_tick(1.3)  # the second, resent: 2.3
    assert [i for i, _ in resend] == [second_id]
    assert pipe.next_deadline() == 2.0
    resend, _ = pipe.on_tick(2.05)
    assert [i for i, _ in resend] == [first_id]
    assert pipe.next_deadline() == pytest.approx(2.1)
    pipe.on_frames(reply_to(first, [b"A"]), 2.06)
    assert pipe.next_deadline() == pytest.approx(2.1)
    assert pipe.on_tick(2.09) == ([], [])
    resend, ended = pipe.on_tick(2.1)  # the third had a PARTIAL: not retried, ended
    assert resend == []
    assert [e.request_id for e in ended] == [third_id]
    assert pipe.next_deadline() == pytest.approx(2.3)
