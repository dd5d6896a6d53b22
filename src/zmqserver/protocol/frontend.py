"""The frontend: clients' requests, and the replies they get in the form they asked in.

The broker's side, :func:`parse_client_request` and :func:`encode_client_reply`, tells the
protocols that share the port apart by a message's first frames (docs/protocol.md §2); the
client's side, :func:`encode_client_request` and :func:`parse_client_reply`, is what the
zmqserver client library speaks (MDP/0.2 with a header frame).
"""

from __future__ import annotations

from typing import Final

from ..errors import ProtocolError, Status
from .frames import (
    _REPLY_HEADER,
    _REQUEST_HEADER,
    C_FINAL,
    C_FINAL_SHIFTED,
    C_PARTIAL,
    C_PARTIAL_SHIFTED,
    C_REQUEST,
    C_REQUEST_SHIFTED,
    HEADER_MAGIC,
    MAX_SERVICE_NAME,
    MDPC01,
    MDPC02,
    PLAIN_ERROR_PREFIX,
    REPLY_HEADER_SIZE,
    REQUEST_HEADER_SIZE,
    STATUS_HEADER_SIZE,
    STATUS_OK,
    ClientReply,
    ClientRequest,
    Form,
    Frame,
    _escaped,
    _header_of_size,
    _status,
    encode_reply_header,
    encode_request_header,
    encode_status_header,
)

# -- frontend: client requests --------------------------------------------------------------------


def _bad_request(form: Form, service: bytes | None, message: str) -> ProtocolError:
    return ProtocolError(
        message, encode_client_reply(form, service, [], status=Status.BAD_REQUEST, message=message)
    )


_MDPC_LEN: Final = len(MDPC02)
assert len(MDPC01) == _MDPC_LEN


def parse_client_request(frames: list[Frame]) -> ClientRequest:
    """Decode the frames a ROUTER frontend received after the client's routing id.

    Raises :class:`ProtocolError` with ``reply`` set when the client can be told what was wrong in
    a form it will read, and ``reply=None`` when it cannot.
    """
    if not frames:
        raise ProtocolError("empty message")
    # Frames are compared where they lie, length first: a payload frame may be a 64 KiB
    # zero-copy Frame, and bytes() of it would copy what the broker only passes on.
    first = frames[0]
    if not len(first):
        if len(frames) == 1:
            raise _bad_request(Form.PLAIN, None, "request has an empty delimiter and no body")
        second = frames[1]
        if len(second) == _MDPC_LEN:
            if second == MDPC01:
                return _parse_mdp01(frames)
            if second == MDPC02:
                return _parse_mdp02(frames[2:], Form.MDP02_DELIMITED)
        return ClientRequest(Form.PLAIN, None, frames[1:])
    if len(first) == _MDPC_LEN and first == MDPC02:
        return _parse_mdp02(frames[1:], Form.MDP02)
    return ClientRequest(Form.RAW, None, list(frames))


def _parse_mdp01(frames: list[Frame]) -> ClientRequest:
    # '', MDPC01, service, body...
    if len(frames) < 4:
        raise _bad_request(
            Form.MDP01,
            bytes(frames[2]) if len(frames) > 2 else b"",
            "MDP/0.1 request needs a service frame and a body",
        )
    service = bytes(frames[2])
    if len(service) > MAX_SERVICE_NAME:
        raise _bad_request(
            Form.MDP01, service[:MAX_SERVICE_NAME], "service name longer than 255 bytes"
        )
    return _with_header(Form.MDP01, service, frames[3:])


def _parse_mdp02(rest: list[Frame], form: Form) -> ClientRequest:
    # (after MDPC02) command, service, body...
    if len(rest) < 2:
        raise _bad_request(form, b"", "MDP/0.2 request needs a command and a service frame")
    command = bytes(rest[0])
    service = bytes(rest[1])
    if command != C_REQUEST:
        if command != C_REQUEST_SHIFTED:
            raise _bad_request(
                form, service, f"MDP/0.2 clients may only send REQUEST, got {command!r}"
            )
        # majortomo's dialect: RFC 18 gives no client command 0x02, so this is unambiguous, and
        # the peer reads replies (the errors below included) only in its own numbering.
        form = Form.MDP02_SHIFTED if form is Form.MDP02 else Form.MDP02_SHIFTED_DELIMITED
    if len(service) > MAX_SERVICE_NAME:
        raise _bad_request(form, service[:MAX_SERVICE_NAME], "service name longer than 255 bytes")
    return _with_header(form, service, rest[2:])


def _with_header(form: Form, service: bytes, body: list[Frame]) -> ClientRequest:
    header = _header_of_size(body, REQUEST_HEADER_SIZE)
    if header is not None:
        request_id, timeout_ms, flags = _REQUEST_HEADER.unpack_from(header, len(HEADER_MAGIC))
        return ClientRequest(form, service, list(body[1:]), request_id, timeout_ms, flags)
    if body and _header_of_size(body, STATUS_HEADER_SIZE) is not None:
        body = body[1:]  # an escape: the data that follows starts with the magic
    return ClientRequest(form, service, list(body))


# -- frontend: replies ----------------------------------------------------------------------------


def _plain_error(status: Status, message: str) -> bytes:
    return PLAIN_ERROR_PREFIX + f"{status.reason}: {message}".encode()


def encode_client_reply(
    form: Form,
    service: bytes | None,
    body: list[Frame],
    *,
    request_id: int | None = None,
    status: Status = Status.OK,
    message: str = "",
    final: bool = True,
) -> list[Frame]:
    """Frames (after the routing id) answering a request that arrived in ``form``.

    For an error (``status`` not OK) ``body`` is ignored and ``message`` is sent instead: as one
    ``ERROR <reason>: <message>`` frame to plain and raw clients, and as a header frame followed by
    the UTF-8 message to Majordomo clients. A non-final (PARTIAL) reply exists only in MDP/0.2;
    callers join partials for the other forms.
    """
    if status is not STATUS_OK:
        if form is Form.PLAIN or form is Form.RAW:
            body = [_plain_error(status, message)]
        elif request_id is None:
            body = [encode_status_header(status), message.encode()]
        else:
            body = [message.encode()]
    svc = service if service is not None else b""
    if form is Form.PLAIN or form is Form.RAW:
        # A REQ socket discards a reply that is only the delimiter, and a ROUTER drops a message
        # that is only the routing id: an empty body goes out as one empty frame.
        body = body or [b""]
        return [b"", *body] if form is Form.PLAIN else body
    if request_id is not None:
        body = [encode_reply_header(request_id, status), *body]
    elif status is STATUS_OK:
        body = _escaped(body)
    if form is Form.MDP01:
        return [b"", MDPC01, svc, *body]
    if form is Form.MDP02:
        return [MDPC02, C_FINAL if final else C_PARTIAL, svc, *body]
    if form is Form.MDP02_DELIMITED:
        return [b"", MDPC02, C_FINAL if final else C_PARTIAL, svc, *body]
    command = C_FINAL_SHIFTED if final else C_PARTIAL_SHIFTED
    if form is Form.MDP02_SHIFTED:
        return [MDPC02, command, svc, *body]
    return [b"", MDPC02, command, svc, *body]


def encode_client_request(
    service: bytes,
    body: list[Frame],
    *,
    request_id: int | None = None,
    timeout_ms: int = 0,
    flags: int = 0,
) -> list[Frame]:
    """An MDP/0.2 client REQUEST for a DEALER socket, with a header if ``request_id`` is given."""
    if request_id is not None:
        return [
            MDPC02,
            C_REQUEST,
            service,
            encode_request_header(request_id, timeout_ms, flags),
            *body,
        ]
    return [MDPC02, C_REQUEST, service, *body]


def parse_client_reply(frames: list[Frame]) -> ClientReply:
    """Decode an MDP/0.2 reply on a client's DEALER socket (the client side of the frontend)."""
    if frames and bytes(frames[0]) == b"":
        frames = frames[1:]
    if len(frames) < 3 or bytes(frames[0]) != MDPC02:
        raise ProtocolError("not an MDP/0.2 reply")
    command = bytes(frames[1])
    if command not in (C_PARTIAL, C_FINAL):
        raise ProtocolError(f"unknown MDP/0.2 client command {command!r}")
    service = bytes(frames[2])
    body = list(frames[3:])
    request_id: int | None = None
    status = Status.OK
    header = _header_of_size(body, REPLY_HEADER_SIZE)
    if header is not None:
        request_id, code = _REPLY_HEADER.unpack_from(header, len(HEADER_MAGIC))
        status = _status(code)
        body = body[1:]
    else:
        header = _header_of_size(body, STATUS_HEADER_SIZE)
        if header is not None:
            status = _status(header[4])
            body = body[1:]
    return ClientReply(command == C_FINAL, service, body, request_id, status)
