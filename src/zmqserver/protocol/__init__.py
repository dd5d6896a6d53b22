"""The wire protocol: frames in, messages out, and back.

Rule 1: this package never imports zmq, never does I/O and keeps no state between calls. Frames
are ``bytes`` (or anything with the buffer protocol and ``bytes()`` semantics); the routing id a
ROUTER socket prepends is *not* part of the frames handled here. Everything here is documented
frame by frame in docs/protocol.md; change both together.

Two ports, two families of messages:

* **Frontend** (clients). Several protocols share one port and are told apart per message by their
  first frames (:func:`parse_client_request`), and every reply goes back in the form the request
  came in (:func:`encode_client_reply`).
* **Backend** (workers). The Majordomo worker protocol MDP/0.2 (ZeroMQ RFC 18), optionally with an
  empty frame before the header, which some MDP libraries send even on DEALER sockets.

zmqserver's own extension is one *header frame* that starts with :data:`HEADER_MAGIC`. It carries
what no Majordomo frame does: a request id (so a retried request's late reply can be told from the
current one), a per-request timeout, flags, and a one-byte :class:`Status`, so a client can tell an
error from a result without guessing at the payload. A message without it is plain MDP.

The package, in three modules (compiled by mypyc, see _compiled.py):

- :mod:`.frames`: the constants, :class:`Form`, the message classes, and the header frames:
  what both ports share.
- :mod:`.frontend`: clients' requests and replies.
- :mod:`.backend`: the worker protocol, between the broker and its workers.

This ``__init__`` is not compiled and defines nothing: it re-exports their names, so
``from zmqserver.protocol import X`` works for every one of them.
"""

from __future__ import annotations

from .backend import (
    disconnect_like,
    encode_disconnect,
    encode_heartbeat,
    encode_job_request,
    encode_ready,
    encode_worker_reply,
    parse_broker_message,
    parse_worker_message,
)
from .frames import (
    C_FINAL,
    C_FINAL_SHIFTED,
    C_PARTIAL,
    C_PARTIAL_SHIFTED,
    C_REQUEST,
    C_REQUEST_SHIFTED,
    COMPACT_FINAL,
    COMPACT_PARTIAL,
    COMPACT_REQUEST,
    CREDIT_HEADER_SIZE,
    FEATURE_CLIENT_INFO,
    FEATURE_COMPACT,
    FEATURES_HEADER_SIZE,
    FLAG_RETRYABLE,
    HEADER_MAGIC,
    INFO_HEADER_MIN,
    KEY_HEADER_SIZE,
    MAX_CREDIT,
    MAX_SERVICE_NAME,
    MDPC01,
    MDPC02,
    MDPW01,
    MDPW02,
    PLAIN_ERROR_PREFIX,
    REPLY_HEADER_SIZE,
    REQUEST_HEADER_SIZE,
    STATUS_HEADER_SIZE,
    STATUS_OK,
    STREAMING_FORMS,
    W_DISCONNECT,
    W_FINAL,
    W_HEARTBEAT,
    W_PARTIAL,
    W_READY,
    W_REQUEST,
    WORKER_COMMAND_NAMES,
    BrokerMessage,
    ClientReply,
    ClientRequest,
    Disconnect,
    Form,
    Frame,
    Heartbeat,
    JobRequest,
    Ready,
    WorkerMessage,
    WorkerReply,
    decode_client_info,
    decode_status_header,
    encode_client_info,
    encode_credit_header,
    encode_reply_header,
    encode_request_header,
    encode_status_header,
    is_client_info,
    is_header,
)
from .frontend import (
    encode_client_reply,
    encode_client_request,
    parse_client_reply,
    parse_client_request,
)

__all__ = [
    "BrokerMessage",
    "COMPACT_FINAL",
    "COMPACT_PARTIAL",
    "COMPACT_REQUEST",
    "CREDIT_HEADER_SIZE",
    "C_FINAL",
    "C_FINAL_SHIFTED",
    "C_PARTIAL",
    "C_PARTIAL_SHIFTED",
    "C_REQUEST",
    "C_REQUEST_SHIFTED",
    "ClientReply",
    "ClientRequest",
    "Disconnect",
    "FEATURES_HEADER_SIZE",
    "FEATURE_CLIENT_INFO",
    "FEATURE_COMPACT",
    "FLAG_RETRYABLE",
    "INFO_HEADER_MIN",
    "Form",
    "Frame",
    "HEADER_MAGIC",
    "Heartbeat",
    "JobRequest",
    "KEY_HEADER_SIZE",
    "MAX_CREDIT",
    "MAX_SERVICE_NAME",
    "MDPC01",
    "MDPC02",
    "MDPW01",
    "MDPW02",
    "PLAIN_ERROR_PREFIX",
    "REPLY_HEADER_SIZE",
    "REQUEST_HEADER_SIZE",
    "Ready",
    "STATUS_HEADER_SIZE",
    "STATUS_OK",
    "STREAMING_FORMS",
    "WORKER_COMMAND_NAMES",
    "W_DISCONNECT",
    "W_FINAL",
    "W_HEARTBEAT",
    "W_PARTIAL",
    "W_READY",
    "W_REQUEST",
    "WorkerMessage",
    "WorkerReply",
    "decode_client_info",
    "decode_status_header",
    "encode_client_info",
    "encode_client_reply",
    "encode_client_request",
    "encode_credit_header",
    "disconnect_like",
    "encode_disconnect",
    "encode_heartbeat",
    "encode_job_request",
    "encode_ready",
    "encode_reply_header",
    "encode_request_header",
    "encode_status_header",
    "encode_worker_reply",
    "is_client_info",
    "is_header",
    "parse_broker_message",
    "parse_client_reply",
    "parse_client_request",
    "parse_worker_message",
]
