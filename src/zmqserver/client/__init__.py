"""The client library, a package so that each part can be read (and imported) on its own.

``state`` is the sans-IO Lazy Pirate policy every driver shares; ``sync`` is the blocking driver.
Importing this package loads no server code.
"""

from __future__ import annotations

from .state import (
    Payload,
    ReplyBody,
    RequestIds,
    RequestState,
    Response,
    encode_payload,
    encode_service,
    unwrap,
)
from .sync import Client, PendingReply

__all__ = [
    "Client",
    "Payload",
    "PendingReply",
    "ReplyBody",
    "RequestIds",
    "RequestState",
    "Response",
    "encode_payload",
    "encode_service",
    "unwrap",
]
