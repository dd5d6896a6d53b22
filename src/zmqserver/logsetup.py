"""Logging for the server and for the app it runs: one set of handlers, on the root logger.

Rule 1: this module decides where log records go and what they look like; who logs what is
everyone else's business.

* The handler (stderr, or ``log_file``) sits on the **root** logger, as gunicorn's does, and
  the master sets it up before it forks: every worker inherits it, so the app's own loggers
  (``logging.getLogger(__name__)``) propagate to the same place, in the same format, at
  ``log_level``, in the foreground, in ``log_file`` and in ``background`` mode alike. Before,
  the handler sat on the ``zmqserver`` logger only: the app's INFO lines were dropped, its
  warnings reached stderr unformatted through logging's last resort, and nothing reached the
  log file.
* ``log_format = "json"``: one JSON object a line, with the process's service and, inside a
  job, its request id (the broker's job token), so a log collector can follow one request.
* ``log_config``: a ``logging.config.dictConfig`` file (JSON or TOML) replaces all of the above.
* Until the server is up, its errors also go where the person starting it is looking
  (:class:`StartupRelay`): the terminal when the log goes to a file, the waiting command in
  ``background`` mode (through a pipe, see :func:`wait_for_daemon`).

A program that embeds the server (``zmqserver.run``) and configured logging itself keeps its
handlers: without ``log_file`` nothing is added.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import logging.config
import os
import sys
import tomllib
from typing import Any

from ._process import LogFile
from .errors import ConfigError

__all__ = [
    "CONTEXT",
    "LOG_FORMAT",
    "JsonFormatter",
    "StartupRelay",
    "check_log_file",
    "configure_logging",
    "drop_startup_relays",
    "load_log_config",
    "set_level",
    "wait_for_daemon",
]

LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"
#: The name of the handlers this module adds, so a reload can tell them from a program's own.
HANDLER_NAME = "zmqserver"


class LogContext:
    """What JSON lines say about the process: its service (a worker's), and the job it runs.

    One instance per process (:data:`CONTEXT`); the worker sets ``service`` once and ``job``
    around each app call (two attribute writes a job, the whole cost of request ids).
    """

    __slots__ = ("job", "service")

    def __init__(self) -> None:
        self.service: str | None = None
        self.job: bytes | None = None


CONTEXT = LogContext()


def request_id(token: bytes) -> int | str:
    """A job token as logs show it: today's 8-byte counter as a number, anything else in hex."""
    if len(token) == 8:
        return int.from_bytes(token, "big")
    return token.hex()


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, pid, service, request_id (inside a job), logger,
    message, and the traceback as ``exc`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created).astimezone()
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "pid": record.process,
            "service": CONTEXT.service,
        }
        if CONTEXT.job is not None:
            line["request_id"] = request_id(CONTEXT.job)
        line["logger"] = record.name
        line["message"] = record.getMessage()
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT)


def check_log_file(path: str) -> None:
    """Fail with a :class:`ConfigError` (exit status 2) if ``path`` cannot be appended to.

    Run where errors still reach the terminal: the daemon opens the file again for itself.
    """
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise ConfigError(f"log_file: cannot open {path}: {exc.strerror}") from None


def load_log_config(path: str) -> dict[str, Any]:
    """The ``dictConfig`` dictionary in ``path``: JSON (``.json``) or TOML (anything else)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"log_config: cannot read {path}: {exc.strerror}") from None
    try:
        loaded = json.loads(data) if path.endswith(".json") else tomllib.loads(data.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"log_config: {path}: {exc}") from None
    if not isinstance(loaded, dict) or "version" not in loaded:
        raise ConfigError(f"log_config: {path}: expected a dictConfig table with 'version = 1'")
    # The server's loggers exist before the file is applied; the default (True) would silence
    # them, which is never what a configuration that does not name them means.
    loaded.setdefault("disable_existing_loggers", False)
    return loaded


def configure_logging(
    log_level: int, log_file: str | None, log_format: str, log_config: str | None
) -> None:
    """Set up the process's logging (the master's, which its workers inherit).

    ``log_config`` wins over everything else. Otherwise one handler, to ``log_file`` or stderr,
    goes on the root logger at ``log_level``; without ``log_file``, a process whose logging is
    already set up (a program embedding the server) keeps its own and only gets the level.
    """
    if log_config is not None:
        try:
            logging.config.dictConfig(load_log_config(log_config))
        except (ValueError, TypeError, AttributeError, ImportError) as exc:
            raise ConfigError(f"log_config: {log_config}: {exc}") from None
        return
    root = logging.getLogger()
    server = logging.getLogger("zmqserver")
    server.setLevel(log_level)
    handler: logging.Handler
    if log_file is not None:
        try:
            handler = LogFile(log_file)
        except OSError as exc:
            raise ConfigError(f"log_file: cannot open {log_file}: {exc.strerror}") from None
    elif not root.handlers and not server.handlers:
        handler = logging.StreamHandler(sys.stderr)
    else:
        return
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(log_level)


def set_level(log_level: int) -> None:
    """HUP's new ``log_level``: the server's logger, and the root logger if we set it up."""
    logging.getLogger("zmqserver").setLevel(log_level)
    root = logging.getLogger()
    if any(h.get_name() == HANDLER_NAME for h in root.handlers):
        root.setLevel(log_level)


class StartupRelay(logging.Handler):
    """Until the server is up, copy its errors to the person who started it.

    ``fd`` is stderr (foreground, with the log going to a file) or, in ``background`` mode, the
    pipe to the command waiting in :func:`wait_for_daemon`; on the pipe each line says what it
    is: ``log TEXT``, then ``ready`` or ``exit STATUS``. Workers drop it when they are forked
    (:func:`drop_startup_relays`): what they report before the server is up reaches the master,
    which logs it here.
    """

    def __init__(self, fd: int, *, pipe: bool) -> None:
        super().__init__(logging.ERROR)
        self.fd: int | None = fd
        self.pipe = pipe
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if self.fd is None:
            return
        lines = self.format(record).splitlines() or [""]
        prefix = "log " if self.pipe else "zmqserver: "
        self._write("".join(f"{prefix}{line}\n" for line in lines))

    def _write(self, text: str) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.fd, text.encode(errors="replace"))

    def attach(self) -> StartupRelay:
        logging.getLogger("zmqserver").addHandler(self)
        return self

    def ready(self) -> None:
        """The server is up: the waiting command may return 0; errors go to the log only."""
        if self.pipe:
            self._write("ready\n")
        self.detach()

    def finish(self, code: int) -> None:
        """The server stopped (before it was up, if the relay is still attached)."""
        if self.pipe:
            self._write(f"exit {code}\n")
        self.detach()

    def detach(self) -> None:
        logging.getLogger("zmqserver").removeHandler(self)
        if self.pipe and self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = None


def drop_startup_relays() -> None:
    """In a freshly forked worker: forget the master's relays (and close its pipe)."""
    for handler in list(logging.getLogger("zmqserver").handlers):
        if isinstance(handler, StartupRelay):
            handler.detach()


def wait_for_daemon(fd: int) -> int:
    """In the command that started a daemon: show its errors; 0 once it is up, else the
    status it stopped with (1 if it vanished without saying)."""
    with os.fdopen(fd, "rb") as pipe:
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip("\n")
            if line == "ready":
                return 0
            if line.startswith("exit "):
                code = int(line[5:]) if line[5:].isdigit() else 1
                print(
                    f"zmqserver: the server stopped during start-up (exit status {code})",
                    file=sys.stderr,
                )
                return code or 1
            print(f"zmqserver: {line.removeprefix('log ')}", file=sys.stderr)
    print("zmqserver: the server stopped during start-up (see its log)", file=sys.stderr)
    return 1
