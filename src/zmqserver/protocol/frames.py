"""The wire protocol's vocabulary, shared by both ports: constants, messages, header frames.

The protocol and command bytes, :class:`Form` (how a client framed its request), the message
classes the parsers return, and zmqserver's header frame (:data:`HEADER_MAGIC`), encoded and
decoded, with the escaping rule that keeps it unambiguous. :mod:`.frontend` (clients) and
:mod:`.backend` (workers) build on this module; it imports neither.
"""

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
#
# Names with a leading underscore here are the package's own: .frontend and .backend import
# them, nothing outside protocol/ does.

MDPC01: Final = b"MDPC01"  # RFC 7 client
MDPC02: Final = b"MDPC02"  # RFC 18 client
MDPW01: Final = b"MDPW01"  # RFC 7 worker
MDPW02: Final = b"MDPW02"  # RFC 18 worker

# RFC 18 client commands
C_REQUEST: Final = b"\x01"
C_PARTIAL: Final = b"\x02"
C_FINAL: Final = b"\x03"

# The MDP/0.2 client dialect of majortomo (PyPI): the client's commands numbered as the worker
# side's. RFC 18 clients never send 0x02, so a REQUEST of 0x02 names the dialect unambiguously,
# and its replies go back in the same numbering (docs/protocol.md §2.2).
C_REQUEST_SHIFTED: Final = b"\x02"
C_PARTIAL_SHIFTED: Final = b"\x03"
C_FINAL_SHIFTED: Final = b"\x04"

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
#: Feature bit: send me the client info header (§3.4b) with each job, if the server passes it.
FEATURE_CLIENT_INFO: Final = 0x02
#   client info header (broker -> worker, opt-in): the magic, a tag byte no key header (Z85
#   text) can have, then flags u8 (bit 0: a request id follows), attempt u16, request id u64,
#   milliseconds left u32 (0xFFFFFFFF: no deadline), and the client's address (text, the rest)
_INFO_TAG: Final = 0xC1
_INFO_HEADER: Final = struct.Struct(">BBHQI")
INFO_HEADER_MIN: Final = len(HEADER_MAGIC) + _INFO_HEADER.size
#: The same with the magic in front: one pack a job makes the whole fixed part.
_INFO_PACK: Final = struct.Struct(">4sBBHQI")
_INFO_HAS_ID: Final = 0x01
_INFO_NO_DEADLINE: Final = 0xFFFFFFFF
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
    #: ``MDPC02``, ``0x02``, service, body...: MDP/0.2 with the client's commands numbered as
    #: the worker's (REQUEST 0x02, PARTIAL 0x03, FINAL 0x04), as majortomo sends them.
    MDP02_SHIFTED = "mdp02-shifted"
    #: ``''``, ``MDPC02``, ``0x02``, service, body...: the same with a leading empty frame
    #: (majortomo's own form).
    MDP02_SHIFTED_DELIMITED = "mdp02-shifted-delimited"


#: The forms that have PARTIAL replies: a worker's PARTIALs are streamed to them as they come;
#: the others get one reply, the parts joined.
STREAMING_FORMS: Final = frozenset(
    (Form.MDP02, Form.MDP02_DELIMITED, Form.MDP02_SHIFTED, Form.MDP02_SHIFTED_DELIMITED)
)


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


@dataclass(init=False)
class ClientReply:
    """A reply as a client receives it (parsed by :func:`parse_client_reply`): once a job in
    every client, hence spelled out as the broker's per-job messages are (above)."""

    __slots__ = ("final", "service", "body", "request_id", "status")
    final: bool
    service: bytes
    body: list[bytes]
    request_id: int | None
    status: Status

    def __init__(
        self,
        final: bool,
        service: bytes,
        body: list[bytes],
        request_id: int | None,
        status: Status,
    ) -> None:
        self.final = final
        self.service = service
        self.body = body
        self.request_id = request_id
        self.status = status


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
    #: It sent a credit header: a zmqserver worker, which heartbeats at the broker's interval,
    #: busy or not (docs/protocol.md §7). An RFC worker's cadence is learnt by watching it.
    extended: bool = False
    #: It asked for the client info header with each job (a feature bit, §3.4b).
    client_info: bool = False


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

    __slots__ = ("address", "body", "delimited", "v1", "client_key", "compact", "info")
    address: bytes
    body: list[bytes]
    delimited: bool
    v1: bool  # MDP/0.1 (RFC 7) framing, which is always delimited
    #: The client's CURVE public key (Z85), when the broker passes client keys to workers.
    client_key: bytes
    compact: bool  # came in compact framing: the worker answers in kind
    #: The client info header (§3.4b) as it came, b"" if none: decoded only when the app asks
    #: (:func:`decode_client_info`), so a job whose app never asks pays nothing for it.
    info: bytes

    def __init__(
        self,
        address: bytes,
        body: list[bytes],
        delimited: bool = False,
        v1: bool = False,
        client_key: bytes = b"",
        compact: bool = False,
        info: bytes = b"",
    ) -> None:
        self.address = address
        self.body = body
        self.delimited = delimited
        self.v1 = v1
        self.client_key = client_key
        self.compact = compact
        self.info = info


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


def encode_client_info(
    request_id: int | None, attempt: int, ms_left: int | None, address: bytes
) -> bytes:
    """The client info header the broker puts before a job's body for a worker that asked.

    ``ms_left`` None: the job has no deadline; ``address``: the client's ``Peer-Address`` as
    libzmq gives it (an IP address for tcp), b"" when unknown.
    """
    if request_id is None:
        flags = request_id = 0
    else:
        flags = _INFO_HAS_ID
    if ms_left is None:
        left = _INFO_NO_DEADLINE
    elif ms_left < 0:
        left = 0
    else:
        left = ms_left if ms_left < _INFO_NO_DEADLINE else _INFO_NO_DEADLINE - 1
    if attempt > 0xFFFF:
        attempt = 0xFFFF
    fixed = _INFO_PACK.pack(HEADER_MAGIC, _INFO_TAG, flags, attempt, request_id, left)
    return fixed + address if address else fixed


def is_client_info(frame: Frame) -> bool:
    """True if ``frame`` is a client info header: the magic, then its tag, then the rest."""
    return len(frame) >= INFO_HEADER_MIN and bytes(frame[:5]) == HEADER_MAGIC + b"\xc1"


def decode_client_info(frame: bytes) -> tuple[int | None, int, int | None, str]:
    """(request id or None, attempt, milliseconds left or None, client address) of a client
    info header; raises :class:`ProtocolError` if ``frame`` is not one."""
    if not is_client_info(frame):
        raise ProtocolError("malformed client info header")
    _tag, flags, attempt, request_id, left = _INFO_HEADER.unpack_from(frame, len(HEADER_MAGIC))
    address = bytes(frame[INFO_HEADER_MIN:]).decode("utf-8", "replace")
    return (
        request_id if flags & _INFO_HAS_ID else None,
        attempt,
        None if left == _INFO_NO_DEADLINE else left,
        address,
    )


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


#: Status by code: a dict lookup, where ``Status(code)`` runs the enum machinery on every reply.
_STATUS_OF: dict[int, Status] = {status.value: status for status in Status}


def _status(code: int) -> Status:
    # An unknown code from a newer peer is still an error, never a success.
    return _STATUS_OF.get(code, Status.BAD_REQUEST)


def decode_status_header(frame: bytes) -> Status:
    """The status in a status header; raises :class:`ProtocolError` if it is not one."""
    if len(frame) != STATUS_HEADER_SIZE or not is_header(frame):
        raise ProtocolError("malformed status header frame")
    return _status(frame[4])
