"""MDP dialects seen in the wild, answered in their own numbering (no sockets).

majortomo (PyPI) numbers its MDP/0.2 client commands as the worker side's: REQUEST 0x02, PARTIAL
0x03, FINAL 0x04, after a leading empty frame. RFC 18 gives a client no command 0x02, so the
broker can tell the dialect from the request alone, and must answer in it: an RFC 18 FINAL
(0x03) reads as a PARTIAL to majortomo, which then waits for ever.
"""

from __future__ import annotations

import pytest

from zmqserver.errors import ProtocolError, Status
from zmqserver.protocol import (
    C_FINAL,
    C_FINAL_SHIFTED,
    C_PARTIAL,
    C_PARTIAL_SHIFTED,
    C_REQUEST,
    C_REQUEST_SHIFTED,
    MDPC02,
    STREAMING_FORMS,
    Form,
    encode_client_reply,
    encode_request_header,
    encode_status_header,
    parse_client_request,
)

SHIFTED = {Form.MDP02_SHIFTED: [MDPC02], Form.MDP02_SHIFTED_DELIMITED: [b"", MDPC02]}


@pytest.mark.parametrize(("form", "prefix"), SHIFTED.items())
def test_request_0x02_is_the_shifted_dialect(form, prefix):
    request = parse_client_request([*prefix, C_REQUEST_SHIFTED, b"echo", b"a", b"b"])
    assert request.form is form
    assert request.service == b"echo"
    assert request.body == [b"a", b"b"]
    assert request.request_id is None


@pytest.mark.parametrize("prefix", SHIFTED.values())
def test_shifted_request_may_carry_our_header(prefix):
    header = encode_request_header(9, 1500, 0)
    request = parse_client_request([*prefix, C_REQUEST_SHIFTED, b"", header, b"x"])
    assert (request.request_id, request.timeout_ms, request.body) == (9, 1500, [b"x"])


@pytest.mark.parametrize(("form", "prefix"), SHIFTED.items())
def test_replies_go_back_in_the_shifted_numbering(form, prefix):
    final = encode_client_reply(form, b"echo", [b"x"])
    assert final == [*prefix, C_FINAL_SHIFTED, b"echo", b"x"]
    partial = encode_client_reply(form, b"echo", [b"x"], final=False)
    assert partial == [*prefix, C_PARTIAL_SHIFTED, b"echo", b"x"]
    error = encode_client_reply(form, b"echo", [], status=Status.APP_ERROR, message="boom")
    assert error == [
        *prefix,
        C_FINAL_SHIFTED,
        b"echo",
        encode_status_header(Status.APP_ERROR),
        b"boom",
    ]


@pytest.mark.parametrize(("form", "prefix"), SHIFTED.items())
def test_bad_shifted_request_is_refused_in_the_shifted_numbering(form, prefix):
    """majortomo's own check: a service frame; too long a name is refused as it would read."""
    with pytest.raises(ProtocolError) as info:
        parse_client_request([*prefix, C_REQUEST_SHIFTED, b"x" * 256, b"body"])
    reply = info.value.reply
    assert reply is not None
    assert reply[: len(prefix) + 1] == [*prefix, C_FINAL_SHIFTED]
    assert reply[-2] == encode_status_header(Status.BAD_REQUEST)


@pytest.mark.parametrize("prefix", SHIFTED.values())
@pytest.mark.parametrize("command", [C_PARTIAL_SHIFTED, C_FINAL_SHIFTED, b"\x05", b"\x06"])
def test_other_commands_stay_bad_requests_in_rfc18_numbering(prefix, command):
    """Only REQUEST names the dialect; anything else a client sends is still RFC 18's error."""
    with pytest.raises(ProtocolError) as info:
        parse_client_request([*prefix, command, b"echo", b"body"])
    reply = info.value.reply
    assert reply is not None
    assert reply[len(prefix)] == C_FINAL


def test_rfc18_numbering_is_unchanged():
    request = parse_client_request([MDPC02, C_REQUEST, b"echo", b"x"])
    assert request.form is Form.MDP02
    assert encode_client_reply(Form.MDP02, b"echo", [b"x"], final=False)[1] == C_PARTIAL
    assert encode_client_reply(Form.MDP02, b"echo", [b"x"])[1] == C_FINAL


def test_both_mdp02_numberings_stream():
    assert set(SHIFTED) <= STREAMING_FORMS
    assert {Form.MDP02, Form.MDP02_DELIMITED} <= STREAMING_FORMS
    assert not {Form.PLAIN, Form.RAW, Form.MDP01} & STREAMING_FORMS
