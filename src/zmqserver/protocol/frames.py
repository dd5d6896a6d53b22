"""The wire protocol's frames, encoded and decoded (the package docstring has the rules)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from ..errors import ProtocolError, Status

# -- constants ------------------------------------------------------------------------------------
#
# Final: compiled (mypyc), a Final constant is built in, where any other module-level name is a
# dictionary lookup each time it is read.

MDPC01: Final = b"MDPC01"  # RFC 7 client
MDPC02: Final = b"MDPC02"  # RFC 18 client
MDPW01: Final = b"MDPW01"  # RFC 7 worker
MDPW02: Final = b"MDPW02"  # RFC 18 worker

# RFC 18 client commands
C_REQUEST: Final = b"\x01"
C_PARTIAL: Final = b"\x02"
C_FINAL: Final = b"\x03"

# RFC 18 worker commands
W_READY: Final = b"\x01"
W_REQUEST: Final = b"\x02"
W_PARTIAL: Final = b"\x03"
W_FINAL: Final = b"\x04"
W_HEARTBEAT: Final = b"\x05"
W_DISCONNECT: Final = b"\x06"

#: First bytes of a zmqserver header frame: a NUL (no text payload starts with one by accident),
#: "ZQ", and the header version.
HEADER_MAGIC: Final = b"\x00ZQ\x01"

# Layouts after the magic, all big-endian (network order):
#   request header (client -> broker): request id u64, timeout ms u32 (0 = server default), flags u8
#   reply header   (broker -> client): request id u64, status u8
#   status header  (worker -> broker, broker -> foreign MDP client on error): status u8
_REQUEST_HEADER: Final = struct.Struct(">QIB")
_REPLY_HEADER: Final = struct.Struct(">QB")
_STATUS_HEADER: Final = struct.Struct(">B")
REQUEST_HEADER_SIZE: Final = len(HEADER_MAGIC) + _REQUEST_HEADER.size
REPLY_HEADER_SIZE: Final = len(HEADER_MAGIC) + _REPLY_HEADER.size
STATUS_HEADER_SIZE: Final = len(HEADER_MAGIC) + _STATUS_HEADER.size
#: key header (broker -> worker, opt-in): the client's CURVE public key, 40 Z85 characters
KEY_HEADER_SIZE: Final = len(HEADER_MAGIC) + 40
#   credit header (worker -> broker, after READY's service frame): credit u16, [features u8]
_CREDIT_HEADER: Final = struct.Struct(">H")
CREDIT_HEADER_SIZE: Final = len(HEADER_MAGIC) + _CREDIT_HEADER.size
#: The credit header with a features byte after the credit: what more the worker speaks.
FEATURES_HEADER_SIZE: Final = CREDIT_HEADER_SIZE + 1
#: Feature bit: send me jobs in compact framing (docs/protocol.md §6.1a), and I may answer so.
FEATURE_COMPACT: Final = 0x01
#: A compact job message starts with one frame: the magic, the MDP/0.2 command, the job token.
#: It stands for the three or four frames MDP spends on the same (protocol, command, token, '').
COMPACT_REQUEST: Final = HEADER_MAGIC + W_REQUEST
COMPACT_PARTIAL: Final = HEADER_MAGIC + W_PARTIAL
COMPACT_FINAL: Final = HEADER_MAGIC + W_FINAL
_COMPACT_PREFIX: Final = len(HEADER_MAGIC) + 1
#: Most jobs a worker may be configured to hold at once. A READY may ask for more (up to 65535:
#: a newer peer is not an error); the broker grants at most its own ``worker_credit``.
MAX_CREDIT: Final = 64

#: Request flag: the broker may run the job again on another worker if its worker dies mid-job.
FLAG_RETRYABLE: Final = 0x01

#: Status.OK, for the per-job paths: compiled, reading a member of Status (an IntEnum of
#: errors.py, which is not compiled) is an attribute lookup of 70 ns; a Final is built in.
STATUS_OK: Final = Status.OK

#: Plain clients have no envelope to carry a status, so their error replies are one UTF-8 frame
#: starting with this prefix: ``ERROR <reason>: <message>``.
PLAIN_ERROR_PREFIX: Final = b"ERROR "

MAX_SERVICE_NAME: Final = 255

# RFC 7 (MDP/0.1) numbers the worker commands differently and has no PARTIAL: its REPLY is a
# FINAL. Messages are translated to the MDP/0.2 command bytes at the edge, so the rest of the
# code knows one command set.
_V1_TO_V2 = {
    b"\x01": b"\x01",
    b"\x02": b"\x02",
    b"\x03": b"\x04",
    b"\x04": b"\x05",
    b"\x05": b"\x06",
}
_V2_TO_V1 = {v2: v1 for v1, v2 in _V1_TO_V2.items()}

WORKER_COMMAND_NAMES = {
    W_READY: "READY",
    W_REQUEST: "REQUEST",
    W_PARTIAL: "PARTIAL",
    W_FINAL: "FINAL",
    W_HEARTBEAT: "HEARTBEAT",
    W_DISCONNECT: "DISCONNECT",
}


class Form(Enum):
    """How a client framed its request; its replies are framed the same way."""

    #: ``''``, body...: a REQ socket, or a DEALER that sends the empty delimiter itself.
    PLAIN = "plain"
    #: body...: a DEALER that sends no delimiter. Answered with no delimiter.
    RAW = "raw"
    #: ``''``, ``MDPC01``, service, body...: RFC 7 (MDP/0.1) client on a REQ socket.
    MDP01 = "mdp01"
    #: ``MDPC02``, ``0x01``, service, body...: RFC 18 (MDP/0.2) client on a DEALER socket.
    MDP02 = "mdp02"
    #: ``''``, ``MDPC02``, ``0x01``, service, body...: the same with a leading empty frame.
    MDP02_DELIMITED = "mdp02-delimited"


#: One frame of a message: ``bytes``, or on the broker's compiled I/O path a zero-copy buffer
#: for a large frame (``_fastio.Frame``: ``len()``, ``bytes()``, ``==`` against bytes). Typed
#: ``Any`` because this module is also compiled (mypyc, see _compiled.py), and compiled
#: code checks a value typed ``bytes`` at run time: a 64 KiB Frame must pass through untouched.
Frame = Any

# -- messages -------------------------------------------------------------------------------------
#
# Parsed messages are values: nothing mutates one after it is made. They are not declared
# frozen all the same, because a frozen dataclass's __init__ sets each field through
# object.__setattr__: 0.75 us against 0.17 for six fields, paid for every message the broker
# and the workers parse (two per job in the broker).
#
# No ``slots=True``: mypyc compiles a dataclass made with it as an ordinary Python class, whose
# every attribute read is a dictionary lookup. The messages parsed once a job (ClientRequest,
# WorkerReply, JobRequest) spell out ``__slots__`` and ``__init__`` instead: compiled, that is a
# native constructor (0.1 us, not the 0.25-0.7 of a dataclass's generated one); interpreted,
# it is the same slotted class as before. Their fields then carry no defaults (a default would
# clash with the slot); the ``__init__`` has them.


@dataclass(init=False)
class ClientRequest:
    """A job as a client sent it.

    ``service`` is ``None`` for plain and raw requests, which go to the default service.
    ``request_id`` is ``None`` unless the client sent a zmqserver header; ``timeout_ms`` 0 and
    ``flags`` 0 then mean "server defaults".
    """

    __slots__ = ("form", "service", "body", "request_id", "timeout_ms", "flags")
    form: Form
    service: bytes | None
    body: list[Frame]
    request_id: int | None
    timeout_ms: int
    flags: int

    def __init__(
        self,
        form: Form,
        service: bytes | None,
        body: list[Frame],
        request_id: int | None = None,
        timeout_ms: int = 0,
        flags: int = 0,
    ) -> None:
        self.form = form
        self.service = service
        self.body = body
        self.request_id = request_id
        self.timeout_ms = timeout_ms
        self.flags = flags


@dataclass
class ClientReply:
    """A reply as a client receives it (parsed by :func:`parse_client_reply`)."""

    final: bool
    service: bytes
    body: list[bytes]
    request_id: int | None
    status: Status


@dataclass
class Ready:
    """Worker -> broker: I offer this service and am free for ``credit`` jobs at once.

    ``credit`` is 1 unless the READY carried a credit header (our extension): a foreign
    MDP worker takes one job at a time. It is what the worker asks for; the broker grants
    at most its configured ``worker_credit``.
    """

    service: bytes
    delimited: bool = False
    v1: bool = False  # MDP/0.1 (RFC 7) framing, which is always delimited
    credit: int = 1
    #: It asked for its jobs in compact framing (a feature bit of the credit header).
    compact: bool = False


@dataclass(init=False)
class WorkerReply:
    """Worker -> broker: (part of) the answer to the job whose address the broker gave."""

    __slots__ = ("address", "body", "final", "status", "delimited", "v1", "compact")
    address: bytes
    body: list[Frame]
    final: bool
    status: Status
    delimited: bool
    v1: bool  # MDP/0.1 (RFC 7) framing, which is always delimited
    compact: bool  # compact framing: allowed only from a worker whose READY asked for it

    def __init__(
        self,
        address: bytes,
        body: list[Frame],
        final: bool = True,
        status: Status = Status.OK,
        delimited: bool = False,
        v1: bool = False,
        compact: bool = False,
    ) -> None:
        self.address = address
        self.body = body
        self.final = final
        self.status = status
        self.delimited = delimited
        self.v1 = v1
        self.compact = compact


@dataclass
class Heartbeat:
    """Either direction: I am alive. Any other message counts as one too."""

    delimited: bool = False
    v1: bool = False  # MDP/0.1 (RFC 7) framing, which is always delimited


@dataclass
class Disconnect:
    """Either direction: I am going away (worker) / go away (broker)."""

    delimited: bool = False
    v1: bool = False  # MDP/0.1 (RFC 7) framing, which is always delimited


@dataclass(init=False)
class JobRequest:
    """Broker -> worker: run this job and echo ``address`` in the reply."""

    __slots__ = ("address", "body", "delimited", "v1", "client_key", "compact")
    address: bytes
    body: list[bytes]
    delimited: bool
    v1: bool  # MDP/0.1 (RFC 7) framing, which is always delimited
    #: The client's CURVE public key (Z85), when the broker passes client keys to workers.
    client_key: bytes
    compact: bool  # came in compact framing: the worker answers in kind

    def __init__(
        self,
        address: bytes,
        body: list[bytes],
        delimited: bool = False,
        v1: bool = False,
        client_key: bytes = b"",
        compact: bool = False,
    ) -> None:
        self.address = address
        self.body = body
        self.delimited = delimited
        self.v1 = v1
        self.client_key = client_key
        self.compact = compact


WorkerMessage = Ready | WorkerReply | Heartbeat | Disconnect
BrokerMessage = JobRequest | Heartbeat | Disconnect


# -- header frames --------------------------------------------------------------------------------


def encode_request_header(request_id: int, timeout_ms: int = 0, flags: int = 0) -> bytes:
    """The header frame a zmqserver client puts first in an MDP/0.2 request body."""
    return HEADER_MAGIC + _REQUEST_HEADER.pack(request_id, timeout_ms, flags)


def encode_reply_header(request_id: int, status: Status) -> bytes:
    """The header frame the broker puts first in a reply to a client that sent a header."""
    return HEADER_MAGIC + _REPLY_HEADER.pack(request_id, status)


def encode_status_header(status: Status) -> bytes:
    """The header frame that marks an error reply where there is no request id to echo."""
    return HEADER_MAGIC + _STATUS_HEADER.pack(status)


def encode_credit_header(credit: int, features: int = 0) -> bytes:
    """The header frame a worker puts after READY's service frame to hold ``credit`` jobs.

    ``features`` (bits such as :data:`FEATURE_COMPACT`) adds a byte; without any, the header
    keeps its first, 6-byte form, which every zmqserver broker reads.
    """
    if not 1 <= credit <= MAX_CREDIT:
        raise ValueError(f"credit must be 1 to {MAX_CREDIT}, got {credit}")
    if not 0 <= features <= 0xFF:
        raise ValueError(f"features must fit in a byte, got {features}")
    header = HEADER_MAGIC + _CREDIT_HEADER.pack(credit)
    return header + bytes((features,)) if features else header


def is_header(frame: Frame) -> bool:
    """True if ``frame`` starts with the header magic (a header, or data that needs escaping)."""
    if isinstance(frame, bytes):  # every frame but a large one: compiled, a native prefix test
        return frame.startswith(HEADER_MAGIC)
    return bool(frame[:4] == HEADER_MAGIC)


def _header_of_size(body: list[Frame], size: int) -> bytes | None:
    """The first body frame if it is a header of exactly ``size`` bytes, else None.

    The escaping rule that keeps this unambiguous: a sender whose first data frame happens to
    start with the magic puts an OK status header in front of it (:func:`_escaped`), so a data
    frame is never read as a header.
    """
    if body and len(body[0]) == size and is_header(body[0]):
        return bytes(body[0])
    return None


def _escaped(body: list[Frame]) -> list[Frame]:
    if body and is_header(body[0]):
        return [encode_status_header(Status.OK), *body]
    return body


def _status(code: int) -> Status:
    try:
        return Status(code)
    except ValueError:
        # An unknown code from a newer peer is still an error, never a success.
        return Status.BAD_REQUEST


def decode_status_header(frame: bytes) -> Status:
    """The status in a status header; raises :class:`ProtocolError` if it is not one."""
    if len(frame) != STATUS_HEADER_SIZE or not is_header(frame):
        raise ProtocolError("malformed status header frame")
    return _status(frame[4])


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
        raise _bad_request(form, service, f"MDP/0.2 clients may only send REQUEST, got {command!r}")
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
    command = C_FINAL if final else C_PARTIAL
    if form is Form.MDP02:
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
        compact = False
        if len(frames) == 4:
            header = _header_of_size(frames[3:], CREDIT_HEADER_SIZE)
            if header is None:
                header = _header_of_size(frames[3:], FEATURES_HEADER_SIZE)
                if header is None:
                    raise ProtocolError("READY's frame after the service must be a credit header")
                # Unknown feature bits are a newer worker's: not granted, and not an error.
                compact = bool(header[CREDIT_HEADER_SIZE] & FEATURE_COMPACT)
            (credit,) = _CREDIT_HEADER.unpack_from(header, len(HEADER_MAGIC))
            if credit == 0:
                raise ProtocolError("READY asks for credit 0")
        return Ready(service, delimited, v1, credit, compact)
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
) -> list[Frame]:
    """READY for ``service``. Credit 1 without compact framing sends no credit header: plain
    RFC 18, for any MDP broker."""
    if credit == 1 and not compact:
        return _worker_frames(W_READY, [service], delimited, v1)
    header = encode_credit_header(credit, FEATURE_COMPACT if compact else 0)
    return _worker_frames(W_READY, [service, header], delimited, v1)


def encode_job_request(
    address: bytes,
    body: list[Frame],
    delimited: bool = False,
    v1: bool = False,
    client_key: bytes = b"",
    compact: bool = False,
) -> list[Frame]:
    """A job for a worker. ``client_key`` (Z85) goes first in a key header when given.

    A body whose first frame starts with the header magic is escaped (an OK status header in
    front), so a worker can always tell a key header from data. ``compact`` (the worker asked
    for it) puts protocol, command and token in one frame; ``delimited`` and ``v1`` are then
    moot.
    """
    if not (client_key or delimited or v1 or compact or (body and is_header(body[0]))):
        return [MDPW02, W_REQUEST, address, b"", *body]  # the common MDP job, built in one go
    body = _escaped(body)
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


def parse_broker_message(frames: list[Frame]) -> BrokerMessage:
    """Decode what the broker sent, as a worker's DEALER socket received it."""
    if frames and is_header(frames[0]):
        head = bytes(frames[0])
        if len(head) <= _COMPACT_PREFIX or not head.startswith(COMPACT_REQUEST):
            raise ProtocolError("invalid compact message from the broker")
        body, client_key = _job_body(frames[1:])
        return JobRequest(head[_COMPACT_PREFIX:], body, client_key=client_key, compact=True)
    if len(frames) > 4 and frames[1] == W_REQUEST and frames[0] == MDPW02 and not len(frames[3]):
        body = frames[4:]
        if not is_header(body[0]):  # no key header, no escape: the common MDP job
            return JobRequest(bytes(frames[2]), body)
    frames, delimited, v1, command = _strip_worker_prefix(frames, "broker")
    if command == W_REQUEST:
        if len(frames) < 4 or bytes(frames[3]) != b"":
            raise ProtocolError("REQUEST needs a client address and an empty frame")
        body, client_key = _job_body(list(frames[4:]))
        return JobRequest(bytes(frames[2]), body, delimited, v1, client_key)
    if command == W_HEARTBEAT:
        return Heartbeat(delimited, v1)
    if command == W_DISCONNECT:
        return Disconnect(delimited, v1)
    raise ProtocolError(f"invalid broker command {command!r}")


def _job_body(body: list[Frame]) -> tuple[list[Frame], bytes]:
    """A REQUEST's body without its key header and escape, and the key (b"" if none)."""
    client_key = b""
    key = _header_of_size(body, KEY_HEADER_SIZE)
    if key is not None:
        client_key = key[len(HEADER_MAGIC) :]
        body = body[1:]
    if _header_of_size(body, STATUS_HEADER_SIZE) is not None:
        body = body[1:]  # the escape in front of data that starts with the magic
    return body, client_key
