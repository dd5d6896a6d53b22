"""The client library, a package so that each part can be read (and imported) on its own.

``state`` is the sans-IO Lazy Pirate policy every driver shares, ``pipeline`` keeps many requests
apart on one socket, ``sync`` is the blocking driver and ``aio`` the asyncio one. Importing this
package loads no server code, and ``AsyncClient`` is imported only when first asked for (PEP 562)
so that a blocking user does not pay for asyncio and ``zmq.asyncio``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from .aio import AsyncClient

__all__ = [
    "AsyncClient",
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


def __getattr__(name: str) -> object:
    if name == "AsyncClient":
        from .aio import AsyncClient

        globals()[name] = AsyncClient  # once imported, found like any other name
        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
