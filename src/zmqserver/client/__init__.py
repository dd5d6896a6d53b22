"""The client library, a package so that each part can be read (and imported) on its own."""

from __future__ import annotations

from .state import (
    Client,
    Payload,
    ReplyBody,
    RequestIds,
    RequestState,
    Response,
    encode_payload,
    encode_service,
    unwrap,
)

__all__ = [
    "Client",
    "Payload",
    "ReplyBody",
    "RequestIds",
    "RequestState",
    "Response",
    "encode_payload",
    "encode_service",
    "unwrap",
]
