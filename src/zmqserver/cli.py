"""Command line: ``zmqserver serve APP [options]`` and ``zmq-client``.

No logic lives here: flags are generated from the :class:`~zmqserver.config.Config` fields, the
parsed values are layered over ``ZMQSERVER_*`` variables and the ``--config`` file
(config_sources.py), and the result goes to :func:`zmqserver.server.serve`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from .client_cli import client_main
from .config import Config, show_default
from .config_sources import CONFIG_ENV, text_parser
from .config_sources import load as load_config
from .errors import AppLoadError, ConfigError
from .security import write_key_pair
from .server import serve
from .worker import BOOT_ERROR

__all__ = ["build_parser", "client_main", "main"]


def _keygen(name: str, directory: str) -> int:
    try:
        public, secret, pair = write_key_pair(directory, name)
    except (OSError, ValueError) as exc:
        print(f"zmqserver keygen: {exc}", file=sys.stderr)
        return 1
    print(f"public key file: {public}")
    print(f"secret key file: {secret} (mode 0600: keep it private)")
    print(f"public key: {pair.public.decode()}")
    return 0


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(Config):
        meta = f.metadata
        if not meta.get("flag", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f"{meta['help']} (default: {show_default(f)})",
        }
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if meta.get("nargs"):
            kwargs["nargs"] = meta["nargs"]
        default = f.default
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple):
            kwargs["type"] = type(default[0]) if default else str
        elif text_parser(f) is not None:
            kwargs["type"] = text_parser(f)
        parser.add_argument(flag, **kwargs)


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
        default=argparse.SUPPRESS,  # absent, so the config file or environment may name it
        metavar="APP",
        help="the app as module:callable, importable from the current directory "
        "(default: echo the payload back)",
    )
    serve.add_argument(
        "--config",
        dest="config_file",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"TOML file of options (also ${CONFIG_ENV}); flags win over ZMQSERVER_* "
        "environment variables, which win over the file. HUP re-reads it.",
    )
    _add_config_flags(serve)
    keygen = commands.add_parser(
        "keygen",
        help="create a CURVE key pair (NAME.key and NAME.key_secret)",
        description="Create a CURVE key pair: DIR/NAME.key (public, give it to peers) and "
        "DIR/NAME.key_secret (secret, mode 0600). Existing files are never overwritten.",
    )
    keygen.add_argument("name", metavar="NAME", help="file name of the pair, e.g. server or alice")
    keygen.add_argument(
        "--dir", default=".", metavar="DIR", help="directory to write to (default: current)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    if command == "serve":
        path = args.pop("config_file", None)
        try:
            loaded = load_config(args, os.environ, path)
        except ConfigError as exc:
            print(f"zmqserver: {exc}", file=sys.stderr)
            return 2
        for warning in loaded.warnings:
            print(f"zmqserver: warning: {warning}", file=sys.stderr)

        def reload() -> Config:
            # HUP: the same flags and environment over the file as it is now.
            return load_config(args, os.environ, loaded.path).config

        try:
            return serve(loaded.config, reload=reload)
        except ConfigError as exc:  # found at start-up, e.g. a key file that is not private
            print(f"zmqserver: {exc}", file=sys.stderr)
            return 2
        except AppLoadError as exc:  # preload_app, or a hook of the master
            print(f"zmqserver: {exc}", file=sys.stderr)
            return BOOT_ERROR
    if command == "keygen":
        return _keygen(args["name"], args["dir"])
    raise AssertionError(f"unhandled command {command}")  # pragma: no cover
