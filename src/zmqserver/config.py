"""Server options: one frozen dataclass is the single source of truth.

Each option is one field; its ``metadata`` carries the help text and CLI details, and the command
line parser (cli.py) and the README's options table are generated from these fields, so the three
cannot drift apart. Names follow Net::Server::ZMQ / Net::Server::PreFork where they have one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

#: What a worker runs: payload (bytes, or list[bytes] for a multi-frame payload) -> reply.
App = Callable[..., Any]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def option(
    default: Any,
    help: str,
    *,
    flag: bool = True,
    metavar: str | None = None,
    nargs: int | None = None,
) -> Any:
    """A config field: ``help`` is the one description shown in --help and in the README."""
    meta = {"help": help, "flag": flag, "metavar": metavar, "nargs": nargs}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting of a zmqserver server. Build with keywords; :meth:`validate` checks it."""

    app: str | App | None = option(
        None,
        "The app: `module:callable` (importable from the current directory) or a "
        "callable. None echoes the payload back.",
        flag=False,
    )
    port: tuple[int, int] = option(
        (6660, 6661), "Frontend (clients) and backend (workers) TCP ports.", metavar="PORT", nargs=2
    )
    host: str = option("*", "Address both ports bind to (`*` = all interfaces).")
    frontend: str | None = option(
        None,
        "Frontend endpoint, overriding host and port (e.g. `ipc:///run/zmqs.sock`).",
        metavar="ENDPOINT",
    )
    backend: str | None = option(
        None,
        "Backend endpoint, overriding host and port (e.g. `ipc:///tmp/zmqs-workers`).",
        metavar="ENDPOINT",
    )
    service: str = option("default", "Service name of the app; plain REQ clients always reach it.")
    min_servers: int = option(5, "Worker processes started and kept running.")
    max_servers: int = option(50, "Upper bound on worker processes (TTIN stops there).")
    max_requests: int = option(
        0, "Restart a worker after it has served this many jobs (0 = never)."
    )
    max_requests_jitter: int = option(
        0, "Add a random 0..N to max_requests per worker, so workers do not restart together."
    )
    heartbeat_interval: float = option(
        1.0, "Seconds between heartbeats between broker and idle workers.", metavar="SECONDS"
    )
    heartbeat_liveness: int = option(3, "Missed heartbeats after which a peer is taken for dead.")
    graceful_timeout: float = option(
        30.0,
        "Seconds running jobs get to finish on TERM/QUIT before workers are killed.",
        metavar="SECONDS",
    )
    job_timeout: float = option(
        60.0,
        "Deadline in seconds of a job whose client sent none (plain clients); 0 = none. A queued "
        "job past its deadline gets an expired error; a running one gets its worker killed.",
        metavar="SECONDS",
    )
    kill_grace: float = option(
        5.0,
        "Seconds a running job may overrun its deadline before its worker is killed.",
        metavar="SECONDS",
    )
    retry_jobs: bool = option(
        False,
        "Rerun a job on another worker when its worker dies, even if the client did not flag "
        "the request as retryable.",
    )
    max_attempts: int = option(
        3, "Workers a retried job may be given to before it is quarantined with an error."
    )
    max_queue: int = option(
        10000, "Queued jobs per service beyond which new jobs get a queue_full error; 0 = no limit."
    )
    max_message_size: int = option(
        16 * 1024 * 1024,
        "Largest request in bytes (all frames); larger ones get a too_large error; 0 = no limit.",
        metavar="BYTES",
    )
    reply_cache: int = option(
        1024,
        "Recent replies kept to answer a client's resend of a finished request without running "
        "it again; 0 = off.",
    )
    log_level: str = option("info", "Logging level: debug, info, warning, error or critical.")
    proc_name: str = option("zmq", "Prefix of process titles (`zmq broker 6660-6661`).")

    def validate(self) -> Config:
        """Return ``self`` if the combination is valid, else raise :class:`ConfigError`."""
        port = self.port
        if (
            not isinstance(port, tuple)
            or len(port) != 2
            or not all(isinstance(p, int) and not isinstance(p, bool) for p in port)
        ):
            raise ConfigError(f"port: expected two port numbers (frontend, backend), got {port!r}")
        for p in port:
            if not 0 < p < 65536:
                raise ConfigError(f"port: {p} is not a TCP port number (1-65535)")
        if port[0] == port[1] and self.frontend is None and self.backend is None:
            raise ConfigError("port: frontend and backend ports must differ")
        if self.app is not None and not isinstance(self.app, str) and not callable(self.app):
            raise ConfigError(f"app: expected 'module:callable' or a callable, got {self.app!r}")
        _positive_int(self, "min_servers")
        _positive_int(self, "max_servers")
        _positive_int(self, "heartbeat_liveness")
        _nonnegative_int(self, "max_requests")
        _positive_int(self, "max_attempts")
        for name in ("max_queue", "max_message_size", "reply_cache"):
            _nonnegative_int(self, name)
        for name in ("job_timeout", "kill_grace"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{name}: expected a number of seconds >= 0, got {value!r}")
        if not isinstance(self.retry_jobs, bool):
            raise ConfigError(f"retry_jobs: expected true or false, got {self.retry_jobs!r}")
        _nonnegative_int(self, "max_requests_jitter")
        if self.max_servers < self.min_servers:
            raise ConfigError(
                f"max_servers ({self.max_servers}) must be >= min_servers ({self.min_servers})"
            )
        for name in ("heartbeat_interval", "graceful_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{name}: expected a positive number of seconds, got {value!r}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(
                f"log_level: expected one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        if not self.service or self.service.startswith("mmi."):
            raise ConfigError(f"service: {self.service!r} is empty or reserved (mmi.*)")
        for name in ("frontend", "backend"):
            endpoint = getattr(self, name)
            if endpoint is not None and "://" not in endpoint:
                raise ConfigError(
                    f"{name}: {endpoint!r} is not a ZeroMQ endpoint "
                    "(expected tcp://host:port or ipc:///path)"
                )
        return self

    # -- derived values ---------------------------------------------------------------------------

    @property
    def frontend_endpoint(self) -> str:
        return self.frontend or f"tcp://{self.host}:{self.port[0]}"

    @property
    def backend_endpoint(self) -> str:
        return self.backend or f"tcp://{self.host}:{self.port[1]}"

    @property
    def log_level_number(self) -> int:
        return int(logging.getLevelName(self.log_level.upper()))

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Config:
        """Build from keyword options, turning unknown names and wrong types into ConfigError."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown option {key!r}")
            kwargs[key] = _coerce(key, known[key].default, value)
        return cls(**kwargs).validate()


def _coerce(key: str, default: Any, value: Any) -> Any:
    """Accept the obvious spellings (a list for a tuple) and reject the wrong types by name."""
    if key == "port":
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value + 1)
        if isinstance(value, list | tuple):
            return tuple(value)
        raise ConfigError(f"port: expected two port numbers (frontend, backend), got {value!r}")
    if value is None or key == "app":
        return value
    if isinstance(default, bool):
        expected: type | tuple[type, ...] = bool
    elif isinstance(default, float):
        expected = (int, float)
    elif isinstance(default, int):
        expected = int
    else:
        expected = str
    if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
        raise ConfigError(f"{key}: expected {_type_name(expected)}, got {value!r}")
    return value


def _type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return "a number"
    return {bool: "true or false", int: "an integer", str: "a string"}.get(expected, "a value")


def _positive_int(config: Config, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")


def _nonnegative_int(config: Config, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name}: expected an integer >= 0, got {value!r}")


def options_table() -> str:
    """The README's options table, generated from the fields (a test keeps the README in sync)."""
    rows = ["| option | CLI flag | default | description |", "|---|---|---|---|"]
    for f in dataclasses.fields(Config):
        flag = "`--" + f.name.replace("_", "-") + "`" if f.metadata.get("flag", True) else "APP"
        default = f.default
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else str(default)
        rows.append(f"| `{f.name}` | {flag} | `{shown}` | {f.metadata['help']} |")
    return "\n".join(rows) + "\n"
