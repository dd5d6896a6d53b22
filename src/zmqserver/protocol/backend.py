"""The backend: the Majordomo worker protocol, between the broker and its workers.

MDP/0.2 (RFC 18), with or without a leading empty frame, and MDP/0.1 (RFC 7), whose commands are
translated to MDP/0.2's at the edge; with zmqserver's credit header in READY, key header in
REQUEST and compact framing (docs/protocol.md §6). The broker's side: :func:`parse_worker_message`,
:func:`encode_job_request`, :func:`encode_heartbeat`, :func:`encode_disconnect`; the worker's:
:func:`encode_ready`, :func:`encode_worker_reply`, :func:`parse_broker_message`.
"""

from __future__ import annotations

from ..errors import ProtocolError, Status
from .frames import (
    _COMPACT_PREFIX,
    _CREDIT_HEADER,
    _V1_TO_V2,
    _V2_TO_V1,
    COMPACT_FINAL,
    COMPACT_PARTIAL,
    COMPACT_REQUEST,
    CREDIT_HEADER_SIZE,
    FEATURE_CLIENT_INFO,
    FEATURE_COMPACT,
    FEATURES_HEADER_SIZE,
    HEADER_MAGIC,
    KEY_HEADER_SIZE,
    MAX_SERVICE_NAME,
    MDPW01,
    MDPW02,
    STATUS_HEADER_SIZE,
    STATUS_OK,
    W_DISCONNECT,
    W_FINAL,
    W_HEARTBEAT,
    W_PARTIAL,
    W_READY,
    W_REQUEST,
    WORKER_COMMAND_NAMES,
    BrokerMessage,
    Disconnect,
    Frame,
    Heartbeat,
    JobRequest,
    Ready,
    WorkerMessage,
    WorkerReply,
    _escaped,
    _header_of_size,
    _status,
    encode_credit_header,
    encode_status_header,
    is_client_info,
    is_header,
)

# -- backend: worker <-> broker -------------------------------------------------------------------


def _strip_worker_prefix(frames: list[Frame], who: str) -> tuple[list[Frame], bool, bool, bytes]:
    """Split off ``['']`` and the protocol frame: (rest, delimited, v1, command in 0.2 terms)."""
    delimited = False
    if frames and bytes(frames[0]) == b"":
        delimited = True
        frames = frames[1:]
    if len(frames) < 2:
        raise ProtocolError(f"not an MDP {who} message")
    header = bytes(frames[0])
    command = bytes(frames[1])
    if header == MDPW02:
        return frames, delimited, False, command
    if header == MDPW01:
        v2 = _V1_TO_V2.get(command)
        if v2 is None:
            raise ProtocolError(f"invalid MDP/0.1 {who} command {command!r}")
        return frames, True, True, v2
    raise ProtocolError(f"not an MDP {who} message")


def parse_worker_message(frames: list[Frame]) -> WorkerMessage:
    """Decode what a worker sent, as the broker's ROUTER saw it after the worker's routing id.

    MDP/0.2 (RFC 18, with or without a leading empty frame) and MDP/0.1 (RFC 7) are accepted; the
    message records which, so the broker answers in kind. Raises :class:`ProtocolError`; the
    broker answers a protocol error on the backend with DISCONNECT (RFC 18: "the broker SHOULD
    respond with DISCONNECT to any invalid message").
    """
    if frames and is_header(frames[0]):
        head = frames[0]  # a compact header is small, so bytes: no copy
        return _parse_compact_reply(head if isinstance(head, bytes) else bytes(head), frames[1:])
    if len(frames) > 4 and frames[1] == W_FINAL and frames[0] == MDPW02 and not len(frames[3]):
        # The common MDP message, a FINAL in MDP/0.2 without a delimiter, decoded in one go.
        body = frames[4:]
        header = _header_of_size(body, STATUS_HEADER_SIZE)
        if header is not None:
            return WorkerReply(bytes(frames[2]), body[1:], True, _status(header[4]))
        return WorkerReply(bytes(frames[2]), body)
    frames, delimited, v1, command = _strip_worker_prefix(frames, "worker")
    if command == W_HEARTBEAT and len(frames) == 2:
        return Heartbeat(delimited, v1)
    if command in (W_FINAL, W_PARTIAL):
        if len(frames) < 4 or bytes(frames[3]) != b"":
            raise ProtocolError("worker reply needs a client address and an empty frame")
        body = list(frames[4:])
        status = Status.OK
        header = _header_of_size(body, STATUS_HEADER_SIZE) if command == W_FINAL else None
        if header is not None:
            status = _status(header[4])
            body = body[1:]
        return WorkerReply(bytes(frames[2]), body, command == W_FINAL, status, delimited, v1)
    if command == W_READY:
        if len(frames) not in (3, 4):
            raise ProtocolError("READY takes one service frame (and an optional credit header)")
        service = bytes(frames[2])
        if not service or len(service) > MAX_SERVICE_NAME:
            raise ProtocolError("READY needs a service name of 1 to 255 bytes")
        credit = 1
        compact = info = False
        if len(frames) == 4:
            header = _header_of_size(frames[3:], CREDIT_HEADER_SIZE)
            if header is None:
                header = _header_of_size(frames[3:], FEATURES_HEADER_SIZE)
                if header is None:
                    raise ProtocolError("READY's frame after the service must be a credit header")
                # Unknown feature bits are a newer worker's: not granted, and not an error.
                compact = bool(header[CREDIT_HEADER_SIZE] & FEATURE_COMPACT)
                info = bool(header[CREDIT_HEADER_SIZE] & FEATURE_CLIENT_INFO)
            (credit,) = _CREDIT_HEADER.unpack_from(header, len(HEADER_MAGIC))
            if credit == 0:
                raise ProtocolError("READY asks for credit 0")
        return Ready(service, delimited, v1, credit, compact, len(frames) == 4, info)
    if command == W_DISCONNECT and len(frames) == 2:
        return Disconnect(delimited, v1)
    name = WORKER_COMMAND_NAMES.get(command, repr(command))
    raise ProtocolError(f"invalid worker command {name} with {len(frames)} frames")


def _parse_compact_reply(head: bytes, body: list[Frame]) -> WorkerReply:
    """A PARTIAL or FINAL in compact framing: ``head`` is magic, command, job token."""
    if len(head) <= _COMPACT_PREFIX:
        raise ProtocolError("a compact message needs a job token after its command")
    address = head[_COMPACT_PREFIX:]
    if head.startswith(COMPACT_FINAL):
        header = _header_of_size(body, STATUS_HEADER_SIZE)
        if header is not None:
            return WorkerReply(address, body[1:], True, _status(header[4]), compact=True)
        return WorkerReply(address, body, compact=True)
    if head.startswith(COMPACT_PARTIAL):
        return WorkerReply(address, body, False, compact=True)
    name = WORKER_COMMAND_NAMES.get(head[4:5], repr(head[4:5]))
    raise ProtocolError(f"invalid worker command {name} in compact framing")


def _worker_frames(command: bytes, rest: list[Frame], delimited: bool, v1: bool) -> list[Frame]:
    if v1:
        return [b"", MDPW01, _V2_TO_V1[command], *rest]
    if delimited:
        return [b"", MDPW02, command, *rest]
    return [MDPW02, command, *rest]


def encode_ready(
    service: bytes,
    delimited: bool = False,
    v1: bool = False,
    credit: int = 1,
    compact: bool = False,
    client_info: bool = False,
) -> list[Frame]:
    """READY for ``service``. Credit 1 without features (compact framing, client info) sends
    no credit header: plain RFC 18, for any MDP broker."""
    if credit == 1 and not (compact or client_info):
        return _worker_frames(W_READY, [service], delimited, v1)
    features = (FEATURE_COMPACT if compact else 0) | (FEATURE_CLIENT_INFO if client_info else 0)
    header = encode_credit_header(credit, features)
    return _worker_frames(W_READY, [service, header], delimited, v1)


def encode_job_request(
    address: bytes,
    body: list[Frame],
    delimited: bool = False,
    v1: bool = False,
    client_key: bytes = b"",
    compact: bool = False,
    info: bytes = b"",
) -> list[Frame]:
    """A job for a worker. ``client_key`` (Z85) goes first in a key header when given, then
    ``info``, a client info header (:func:`encode_client_info`), when given.

    A body whose first frame starts with the header magic is escaped (an OK status header in
    front), so a worker can always tell a key header from data. ``compact`` (the worker asked
    for it) puts protocol, command and token in one frame; ``delimited`` and ``v1`` are then
    moot.
    """
    if not (client_key or delimited or v1 or compact or (body and is_header(body[0]))):
        if not info:
            return [MDPW02, W_REQUEST, address, b"", *body]  # the common MDP job, in one go
        return [MDPW02, W_REQUEST, address, b"", info, *body]
    body = _escaped(body)
    if info:
        body = [info, *body]
    if client_key:
        body = [HEADER_MAGIC + client_key, *body]
    if compact:
        return [COMPACT_REQUEST + address, *body]
    return _worker_frames(W_REQUEST, [address, b"", *body], delimited, v1)


def encode_worker_reply(
    address: bytes,
    body: list[Frame],
    *,
    final: bool = True,
    status: Status = Status.OK,
    delimited: bool = False,
    v1: bool = False,
    compact: bool = False,
) -> list[Frame]:
    """A worker's PARTIAL or FINAL; an error FINAL carries a status header before the message.

    A FINAL whose first frame starts with the header magic is escaped with an OK status header.
    MDP/0.1 has no PARTIAL. ``compact``: in the framing of a compact REQUEST (the worker
    answers each job in the framing it came in).
    """
    if status is STATUS_OK:
        if final and not (delimited or v1 or compact or (body and is_header(body[0]))):
            return [MDPW02, W_FINAL, address, b"", *body]  # the common MDP reply, in one go
        if final:
            body = _escaped(body)
    else:
        body = [encode_status_header(status), *body]
    if compact:
        return [(COMPACT_FINAL if final else COMPACT_PARTIAL) + address, *body]
    if v1 and not final:
        raise ValueError("MDP/0.1 has no PARTIAL replies")
    command = W_FINAL if final else W_PARTIAL
    return _worker_frames(command, [address, b"", *body], delimited, v1)


def encode_heartbeat(delimited: bool = False, v1: bool = False) -> list[Frame]:
    return _worker_frames(W_HEARTBEAT, [], delimited, v1)


def encode_disconnect(delimited: bool = False, v1: bool = False) -> list[Frame]:
    return _worker_frames(W_DISCONNECT, [], delimited, v1)


def disconnect_like(frames: list[Frame]) -> list[Frame]:
    """DISCONNECT in the framing an unparseable message seemed to use (RFC 7 peers need theirs)."""
    first = [bytes(f) for f in frames[:2]]
    if first == [b"", MDPW01]:
        return encode_disconnect(True, v1=True)
    return encode_disconnect(first == [b"", MDPW02])


def parse_broker_message(frames: list[Frame]) -> BrokerMessage:
    """Decode what the broker sent, as a worker's DEALER socket received it."""
    if frames and is_header(frames[0]):
        head = bytes(frames[0])
        if len(head) <= _COMPACT_PREFIX or not head.startswith(COMPACT_REQUEST):
            raise ProtocolError("invalid compact message from the broker")
        body, client_key, info = _job_body(frames[1:])
        return JobRequest(head[_COMPACT_PREFIX:], body, False, False, client_key, True, info)
    if len(frames) > 4 and frames[1] == W_REQUEST and frames[0] == MDPW02 and not len(frames[3]):
        body = frames[4:]
        if not is_header(body[0]):  # no key header, no escape: the common MDP job
            return JobRequest(bytes(frames[2]), body)
    frames, delimited, v1, command = _strip_worker_prefix(frames, "broker")
    if command == W_REQUEST:
        if len(frames) < 4 or bytes(frames[3]) != b"":
            raise ProtocolError("REQUEST needs a client address and an empty frame")
        body, client_key, info = _job_body(list(frames[4:]))
        return JobRequest(bytes(frames[2]), body, delimited, v1, client_key, False, info)
    if command == W_HEARTBEAT:
        return Heartbeat(delimited, v1)
    if command == W_DISCONNECT:
        return Disconnect(delimited, v1)
    raise ProtocolError(f"invalid broker command {command!r}")


def _job_body(body: list[Frame]) -> tuple[list[Frame], bytes, bytes]:
    """A REQUEST's body without its key header, client info header and escape; the key and the
    info header (b"" if none).

    A key header is 44 bytes of the magic and Z85 text; a client info header starts with the
    magic and a tag byte that is not Z85, so one is never taken for the other at any length.
    """
    client_key = info = b""
    key = _header_of_size(body, KEY_HEADER_SIZE)
    if key is not None and not is_client_info(key):
        client_key = key[len(HEADER_MAGIC) :]
        body = body[1:]
    if body and is_client_info(body[0]):
        info = bytes(body[0])
        body = body[1:]
    if _header_of_size(body, STATUS_HEADER_SIZE) is not None:
        body = body[1:]  # the escape in front of data that starts with the magic
    return body, client_key, info
