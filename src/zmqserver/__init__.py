"""zmqserver: a preforking ZeroMQ job server.

A broker process with a ROUTER for clients and a ROUTER for workers, a supervised pool of forked
worker processes running your callable, and Lazy Pirate clients. See README.md.
"""

from __future__ import annotations

# First: importing it decides, for the compiled modules, between extension and source.
from . import _compiled  # noqa: F401
from .client import Client
from .client.aio import AsyncClient
from .config import App, Config
from .errors import (
    AppError,
    AppLoadError,
    BadRequest,
    Closed,
    ConfigError,
    DeadlineExpired,
    MessageTooLarge,
    ProtocolError,
    QueueFull,
    RequestTimeout,
    ServerError,
    ShuttingDown,
    Status,
    UnknownService,
    WorkerLost,
    ZmqServerError,
)
from .server import run
from .worker import client_key

__version__ = "0.1.0"

__all__ = [
    "App",
    "AppError",
    "AppLoadError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Closed",
    "Config",
    "ConfigError",
    "DeadlineExpired",
    "MessageTooLarge",
    "ProtocolError",
    "QueueFull",
    "RequestTimeout",
    "ServerError",
    "ShuttingDown",
    "Status",
    "UnknownService",
    "WorkerLost",
    "client_key",
    "ZmqServerError",
    "run",
]
