"""zmqserver: a preforking ZeroMQ job server.

A broker process with a ROUTER for clients and a ROUTER for workers, a supervised pool of forked
worker processes running your callable, and Lazy Pirate clients. See README.md.

``import zmqserver`` loads the blocking client and the errors, and nothing of the server: most
processes that import this package are clients, and should not pay for (or be broken by) the
broker, the supervisor or asyncio. ``run``, ``AsyncClient``, ``client_key``, ``request``,
``Config``, ``App`` and the pub-sub names (``Subscriber``, ``AsyncSubscriber``, ``Publisher``,
``publish``) are imported on first use (PEP 562); tests/unit/test_imports.py holds that.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# First: importing it decides, for the compiled modules, between extension and source.
from . import _compiled  # noqa: F401
from .client import Client
from .errors import (
    AppError,
    AppLoadError,
    BadRequest,
    Closed,
    ConfigError,
    DeadlineExpired,
    JobFailed,
    JobPending,
    MessageTooLarge,
    ProtocolError,
    QueueFull,
    RequestTimeout,
    Retry,
    RetryLater,
    ServerError,
    ShuttingDown,
    Status,
    UnknownService,
    UnknownTicket,
    WorkerLost,
    ZmqServerError,
)

if TYPE_CHECKING:
    from .client.aio import AsyncClient
    from .config import App, Config
    from .context import request
    from .pubsub.aio import AsyncSubscriber
    from .pubsub.client import Publisher, Subscriber
    from .pubsub.publish import publish
    from .server import run
    from .worker import client_key

if TYPE_CHECKING:
    __version__: str

__all__ = [
    "App",
    "AppError",
    "AppLoadError",
    "AsyncClient",
    "AsyncSubscriber",
    "BadRequest",
    "Client",
    "Closed",
    "Config",
    "ConfigError",
    "DeadlineExpired",
    "JobFailed",
    "JobPending",
    "MessageTooLarge",
    "ProtocolError",
    "Publisher",
    "QueueFull",
    "RequestTimeout",
    "Retry",
    "RetryLater",
    "ServerError",
    "ShuttingDown",
    "Status",
    "Subscriber",
    "UnknownService",
    "UnknownTicket",
    "WorkerLost",
    "client_key",
    "ZmqServerError",
    "publish",
    "request",
    "run",
]

#: The public names imported on first use, and the module (relative to this package) of each.
_LAZY = {
    "App": ".config",
    "AsyncClient": ".client.aio",
    "AsyncSubscriber": ".pubsub.aio",
    "Config": ".config",
    "Publisher": ".pubsub.client",
    "Subscriber": ".pubsub.client",
    "client_key": ".worker",
    "publish": ".pubsub.publish",
    "request": ".context",
    "run": ".server",
}


# Hidden from type checkers, which see the TYPE_CHECKING imports above instead: a module
# __getattr__ would make them accept any name imported from this package, typos included.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        if name == "__version__":  # from the package metadata (importlib.metadata: on demand)
            from ._version import version

            globals()[name] = value = version()
            return value
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, __name__), name)
        globals()[name] = value  # found directly from now on, without this function
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
