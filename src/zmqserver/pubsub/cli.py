"""``zmq-client sub PREFIX`` and ``zmq-client pub KEY VALUE``: pub-sub from the shell.

Rule 1: argparse -> Subscriber/Publisher -> stdout; nothing a library user would need.
``zmq-client`` hands the arguments here when the first one is ``sub`` or ``pub``
(``zmq-client -- sub`` still sends a job whose payload is "sub").
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import ConfigError
from .client import Publisher, Subscriber
from .endpoints import text

DEFAULT_ENDPOINT = "tcp://127.0.0.1:6670"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zmq-client",
        description="Follow or publish updates on a zmqserver's pub-sub (CHP, ZeroMQ RFC 12).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("sub", help="print the snapshot, then each update as it comes")
    sub.add_argument("prefix", nargs="?", default="", help="keys starting with this (all)")
    sub.add_argument("--json", action="store_true", help="one JSON object per line")
    sub.add_argument("-n", "--count", type=int, default=0, help="exit after N updates")
    sub.add_argument(
        "-t", "--timeout", type=float, default=0.0, metavar="SECONDS",
        help="exit (status 2) after this long without an update (default: wait forever)",
    )  # fmt: skip
    pub = commands.add_parser("pub", help="set KEY to VALUE (an empty VALUE deletes it)")
    pub.add_argument("key")
    pub.add_argument("value")
    pub.add_argument("--ttl", type=float, help="seconds before the server deletes the key")
    for command in (sub, pub):
        command.add_argument(
            "-e", "--endpoint", default=DEFAULT_ENDPOINT,
            help="the server's pub-sub port, tcp://HOST:P, or a Binary Star pair's two, "
            f"comma-separated (default: {DEFAULT_ENDPOINT})",
        )  # fmt: skip
        command.add_argument("--server-key", metavar="KEY|FILE", help="speak CURVE (as for jobs)")
        command.add_argument("--key-file", metavar="FILE", help="this client's secret key file")
    return parser


def _shown(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def main(argv: list[str]) -> int:
    """Run ``zmq-client sub|pub ...``; the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    try:
        if args.command == "pub":
            with Publisher(
                args.endpoint, server_key=args.server_key, client_key_file=args.key_file
            ) as publisher:
                if not publisher.wait_connected():
                    where = ", ".join(publisher.endpoints)
                    print(f"zmq-client: cannot reach {where}", file=sys.stderr)
                    return 2
                publisher.publish(os.fsencode(args.key), os.fsencode(args.value), args.ttl)
            return 0
        return _follow(args)
    except (ValueError, ConfigError) as exc:
        print(f"zmq-client: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _follow(args: argparse.Namespace) -> int:
    seen = 0
    with Subscriber(
        args.endpoint,
        text(args.prefix),
        server_key=args.server_key,
        client_key_file=args.key_file,
    ) as subscriber:
        while True:
            update = subscriber.recv(args.timeout or None)
            if update is None:
                if not subscriber.snapshots:
                    patience = subscriber.agent.sync_timeout
                    print(
                        f"zmq-client: no snapshot from {subscriber.endpoint} within "
                        f"{args.timeout:g}s: no server there, or the passive one of a pair (a "
                        f"subscriber moves to the next endpoint after {patience:g}s "
                        "without one: give -t more than that)",
                        file=sys.stderr,
                    )
                return 2
            if args.json:
                line = json.dumps(
                    {
                        "key": _shown(update.key),
                        "value": _shown(update.value),
                        "sequence": update.sequence,
                        "deleted": update.deleted,
                        "snapshot": update.snapshot,
                    }
                )
            elif update.deleted:
                line = f"{_shown(update.key)} (deleted)"
            else:
                line = f"{_shown(update.key)} {_shown(update.value)}"
            print(line, flush=True)
            seen += 1
            if args.count and seen >= args.count:
                return 0
