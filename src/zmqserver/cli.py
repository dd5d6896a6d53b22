"""Command line: ``zmqserver serve [APP | NAME=APP...]``, ``zmqserver worker``, ``zmq-client``.

No logic lives here: flags are generated from the :class:`~zmqserver.config.Config` fields, the
parsed values are layered over ``ZMQSERVER_*`` variables and the ``--config`` file
(config/sources.py), and the result goes to :func:`zmqserver.server.serve`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from .client.cli import client_main
from .client.usage import ShortErrorParser
from .config import Config, show_default
from .config.sources import CONFIG_ENV, text_parser
from .config.sources import load as load_config
from .errors import AppLoadError, ConfigError
from .loader import explain
from .security.keys import write_key_pair
from .server import serve, serve_pool
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


def _add_config_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """One flag per option that ``command`` (``serve`` or ``worker``) has."""
    for f in dataclasses.fields(Config):
        meta = f.metadata
        if not meta.get("flag", True) or meta.get("command") not in (None, command):
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
        elif f.name == "connect":
            kwargs["action"] = _JoinAction  # --connect A --connect B: a pair (docs/ha.md)
        elif (parse := text_parser(f)) is not None:
            kwargs["type"] = _flag_type(parse, f.metadata.get("parse") is not None)
        parser.add_argument(flag, **kwargs)


def _flag_type(parse: Callable[[str], Any], octal: bool) -> Callable[[str], Any]:
    """``parse`` with an error message argparse shows as is (it would say "invalid <lambda>
    value" for a parser without a name)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError:
            kind = "an octal number such as 027" if octal else f"a number ({parse.__name__})"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None

    return convert


class _AppsAction(argparse.Action):
    """The positional arguments as options: one ``app``, or ``services`` (``NAME=APP``...)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        apps = list(values or [])
        named = [arg for arg in apps if "=" in arg]
        if not named and len(apps) == 1:
            namespace.app = apps[0]
        elif named and len(named) == len(apps):
            namespace.services = named
        elif apps:
            parser.error(f"give one APP (module:callable) or services as NAME=APP: {apps}")


class _JoinAction(argparse.Action):
    """A flag given more than once adds to its value, comma-separated (``--connect``)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        before = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, f"{before},{values}" if before else values)


class _VersionAction(argparse.Action):
    """``--version``: computed only when asked (it imports the compiled modules to see which
    are in use)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: Any):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        from ._version import version_line

        print(version_line())
        parser.exit()


class _Parser(ShortErrorParser):
    #: The subcommands' parsers, by name (see :func:`parse`).
    commands: dict[str, argparse.ArgumentParser]


def build_parser() -> _Parser:
    parser = _Parser(prog="zmqserver", description="A preforking ZeroMQ job server.")
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version and which compiled parts are in use, then exit",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the broker and a pool of workers in the foreground",
        description="Run the broker and a pool of worker processes running APP, or one pool "
        "per service NAME=APP.",
    )
    pool = commands.add_parser(
        "worker",
        help="run a pool of workers for a broker on another host",
        description="Run a supervised pool of worker processes that connect to a broker's "
        "backend (--connect tcp://BROKER:6661; the broker needs remote_workers): the same "
        "signals and options as serve, without the broker.",
    )
    check = commands.add_parser(
        "check",
        help="validate a configuration and show each option's value and where it came from",
        description="Check the configuration `serve` would run with (the same APP, flags, "
        "--config file and ZMQSERVER_* variables): the options, key files, user, and that each "
        "app and hook imports. Prints every option with its source (default, config file, "
        "environment, command line). Exit status 0 when valid, 2 when not. A FILE.toml "
        "argument is taken as --config FILE.toml.",
    )
    for command, parser_ in (("serve", serve), ("worker", pool), ("check", check)):
        parser_.add_argument(
            "apps",
            nargs="*",
            action=_AppsAction,
            default=argparse.SUPPRESS,  # absent, so the config file or environment may name it
            metavar="APP | NAME=APP",
            help="the app as module:callable, importable from the current directory "
            "(default: echo the payload back); or several services, each NAME=module:callable "
            "with its own pool",
        )
        parser_.add_argument(
            "--config",
            dest="config_file",
            default=argparse.SUPPRESS,
            metavar="FILE",
            help=f"TOML file of options (also ${CONFIG_ENV}); flags win over ZMQSERVER_* "
            "environment variables, which win over the file. HUP re-reads it.",
        )
        _add_config_flags(parser_, "serve" if command == "check" else command)
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")
    check.add_argument(
        "--worker",
        action="store_true",
        help="check a remote pool's configuration (zmqserver worker) instead of a server's",
    )
    for f in dataclasses.fields(Config):  # a pool's own options, for --worker
        if f.metadata.get("command") == "worker":
            check.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                default=argparse.SUPPRESS,
                metavar=f.metadata.get("metavar"),
                help=f"with --worker: {f.metadata['help']}",
            )
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
    status = commands.add_parser(
        "status",
        help="show a running server's services, queues, rates, latencies and workers",
        description="Ask a running server (its control endpoint) for its state. Which server: "
        "--control-endpoint, else --pid-file's PIDFILE.control, else the one serving --port "
        "(or --config's). Exit status 1 when none runs.",
    )
    status.add_argument("--json", action="store_true", help="print the status document as JSON")
    top = commands.add_parser(
        "top",
        help="a live view of a running server; + and - scale the selected service",
        description="Show a running server's services and workers, refreshed from its control "
        "endpoint (found as for status). Keys: up/down/tab select a service, + and - add or "
        "remove one of its workers, q quits.",
    )
    top.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="between refreshes (1)"
    )
    control = commands.add_parser(
        "control",
        help="scale, drain, reload or stop a running server's services",
        description="Send one command to a running server's control endpoint; see "
        "docs/operations.md. Commands: " + "; ".join(_COMMAND_HELP),
    )
    control.add_argument("action", metavar="COMMAND", help="scale, incr, decr, drain, reload...")
    control.add_argument("args", nargs="*", metavar="ARG", help="SERVICE, COUNT")
    for sub in (status, control, top):
        sub.add_argument("--control-endpoint", metavar="ENDPOINT", help="the endpoint to ask")
        sub.add_argument("--pid-file", metavar="FILE", help="the server's pid file")
        sub.add_argument(
            "--config", dest="config_file", metavar="FILE", help="the server's config file"
        )
        sub.add_argument("--port", type=int, metavar="PORT", help="the server's frontend port")
        sub.add_argument("--curve-server-key-file", metavar="FILE", help="tcp://: server key")
        sub.add_argument("--curve-secret-key-file", metavar="FILE", help="tcp://: our key pair")
    parser.commands = {
        "serve": serve, "worker": pool, "check": check, "keygen": keygen,
        "status": status, "control": control, "top": top,
    }  # fmt: skip
    return parser


#: One line per control command, for --help (the server's commands.py documents each).
_COMMAND_HELP = (
    "scale SERVICE COUNT",
    "incr SERVICE [COUNT]",
    "decr SERVICE [COUNT]",
    "drain SERVICE",
    "reload",
    "stop",
    "stats / services / workers / config (JSON)",
)


def _control(command: str, args: dict[str, Any]) -> int:
    """`zmqserver status`, `zmqserver control` and `zmqserver top`."""
    from . import control_client as cc

    where = "zmqserver " + command
    found = _locate(where, args)
    if isinstance(found, int):
        return found
    endpoint, curve = found
    if command == "top":
        from . import top

        if args["interval"] <= 0:
            print(f"{where}: --interval must be above 0", file=sys.stderr)
            return 2
        try:
            cc.ask(endpoint, {"command": "stats"}, curve=curve)  # no server: say so, no screen
        except cc.NoServer as exc:
            print(f"{where}: {exc}", file=sys.stderr)
            return 1
        return top.run(lambda request: cc.ask(endpoint, request, curve=curve), args["interval"])
    if command == "status":
        request: dict[str, Any] = {"command": "stats"}
    else:
        request = {"command": args["action"]}
        rest = list(args["args"])
        if rest and not rest[0].isdigit():
            request["service"] = rest.pop(0)
        if rest:
            if not rest[0].isdigit():
                print(f"{where}: expected a count, got {rest[0]!r}", file=sys.stderr)
                return 2
            request["count"] = int(rest[0])
    try:
        reply = cc.ask(endpoint, request, curve=curve)
    except cc.NoServer as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"{where}: {reply.get('error', reply)}", file=sys.stderr)
        return 1
    reply.pop("ok")
    if command == "status" and not args.get("json"):
        print(cc.format_status(reply))
    else:
        print(json.dumps(reply, indent=2))
    return 0


def _locate(where: str, args: dict[str, Any]) -> tuple[str, Any] | int:
    """The control endpoint to ask and the CURVE keys for it, or an exit status (said why)."""
    from . import control_client as cc

    pid_file = args.get("pid_file")
    frontend = f"tcp://*:{args['port']}" if args.get("port") else None
    if args.get("config_file") and (pid_file is None or frontend is None):
        try:
            config = load_config({}, os.environ, args["config_file"]).config
        except ConfigError as exc:
            print(f"{where}: {exc}", file=sys.stderr)
            return 2
        pid_file = pid_file or config.pid_file
        frontend = frontend or config.frontend_endpoint
        if args.get("control_endpoint") is None and config.control_endpoint is not None:
            args["control_endpoint"] = config.control_endpoint
    curve = None
    if args.get("curve_secret_key_file"):
        from .security.keys import load_public_key, load_secret_key

        try:
            pair = load_secret_key(args["curve_secret_key_file"], "--curve-secret-key-file")
            server = load_public_key(args["curve_server_key_file"], "--curve-server-key-file")
        except (ConfigError, OSError, TypeError) as exc:
            print(f"{where}: {exc}", file=sys.stderr)
            return 2
        curve = (server, pair.public, pair.secret)
    try:
        endpoint, _ = cc.find_endpoint(
            endpoint=args.get("control_endpoint"),
            pid_file=pid_file,
            frontend=frontend or "tcp://*:6660",
        )
    except cc.NoServer as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 1
    return endpoint, curve


def parse(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line as options, ``command`` included.

    ``serve`` and ``worker`` arguments may mix services and flags in any order
    (``serve echo=a:app --min-servers 2 upper=b:app``), which plain argparse cannot do for a
    positional list split by flags.
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("serve", "worker", "check"):
        args = vars(parser.commands[argv[0]].parse_intermixed_args(argv[1:]))
        return {"command": argv[0], **args}
    return vars(parser.parse_args(argv))


def _check(args: dict[str, Any]) -> int:
    """``zmqserver check``: exit status 0 when valid, 2 when not (as ``serve`` would exit)."""
    from .check import Report, check, render_json, render_text

    as_json, command = args.pop("json"), "worker" if args.pop("worker") else "serve"
    path = args.pop("config_file", None)
    if path is None and str(args.get("app", "")).endswith(".toml"):
        path = args.pop("app")  # `zmqserver check zmqserver.toml`
    try:
        report = check(load_config(args, os.environ, path), command)
    except ConfigError as exc:
        report = Report(command, error=str(exc))
    if as_json:
        print(render_json(report))
    elif report.options:
        print(render_text(report), file=sys.stdout if report.valid else sys.stderr)
    else:
        print(f"zmqserver check: not valid: {report.error}", file=sys.stderr)
    return 0 if report.valid else 2


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = args.pop("command")
    if command == "check":
        return _check(args)
    if command in ("serve", "worker"):
        path = args.pop("config_file", None)
        try:
            loaded = load_config(args, os.environ, path)
            if command == "worker" and loaded.config.connect is None:
                raise ConfigError(
                    "connect: give the broker's backend endpoint (--connect tcp://BROKER:6661)"
                )
        except ConfigError as exc:
            print(f"zmqserver: {exc}", file=sys.stderr)
            return 2
        for warning in loaded.warnings:
            print(f"zmqserver: warning: {warning}", file=sys.stderr)

        def reload() -> Config:
            # HUP: the same flags and environment over the file as it is now.
            return load_config(args, os.environ, loaded.path).config

        start = serve if command == "serve" else serve_pool
        try:
            return start(loaded.config, reload=reload)
        except ConfigError as exc:  # found at start-up, e.g. a key file that is not private
            print(f"zmqserver: {exc}", file=sys.stderr)
            return 2
        except AppLoadError as exc:  # preload_app, or a hook of the master
            print(f"zmqserver: {explain(exc)}", file=sys.stderr)
            return BOOT_ERROR
    if command in ("status", "control", "top"):
        return _control(command, args)
    if command == "keygen":
        return _keygen(args["name"], args["dir"])
    raise AssertionError(f"unhandled command {command}")  # pragma: no cover
