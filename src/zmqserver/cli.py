"""Command line: ``zmqserver serve APP [options]`` and ``zmq-client``.

No logic lives here: flags are generated from the :class:`~zmqserver.config.Config` fields and
the parsed values go straight to :func:`zmqserver.run`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from .client_cli import client_main
from .config import Config
from .errors import ConfigError
from .server import run

__all__ = ["build_parser", "client_main", "main"]


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(Config):
        meta = f.metadata
        if not meta.get("flag", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f"{meta['help']} (default: {_show(f.default)})",
        }
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if meta.get("nargs"):
            kwargs["nargs"] = meta["nargs"]
        default = f.default
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple):
            kwargs["type"] = type(default[0])
        elif isinstance(default, float):
            kwargs["type"] = float
        elif isinstance(default, int):
            kwargs["type"] = int
        parser.add_argument(flag, **kwargs)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zmqserver", description="A preforking ZeroMQ job server."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the broker and a pool of workers in the foreground",
        description="Run the broker and a pool of worker processes running APP.",
    )
    serve.add_argument(
        "app",
        nargs="?",
        default=None,
        metavar="APP",
        help="the app as module:callable, importable from the current directory "
        "(default: echo the payload back)",
    )
    _add_config_flags(serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    if command == "serve":
        try:
            config = Config.from_mapping(args)
        except ConfigError as exc:
            print(f"zmqserver: {exc}", file=sys.stderr)
            return 2
        return run(config=config)
    raise AssertionError(f"unhandled command {command}")  # pragma: no cover
