"""The client library, a package so that each part can be read (and imported) on its own.

``state`` is the sans-IO Lazy Pirate policy every driver shares, ``pipeline`` keeps many requests
apart on one socket, ``options`` checks a client's arguments and sets up its socket, ``sync`` is
the blocking driver, ``aio`` the asyncio one and ``cli`` the ``zmq-client`` command. Importing
this package loads no server code, and ``AsyncClient`` is imported only when first asked for
(PEP 562) so that a blocking user does not pay for asyncio and ``zmq.asyncio``.
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


# Hidden from type checkers, which see the TYPE_CHECKING import above instead: a module
# __getattr__ would make them accept any name imported from this package, typos included.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        if name == "AsyncClient":
            from .aio import AsyncClient

            globals()[name] = AsyncClient  # once imported, found like any other name
            return AsyncClient
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
