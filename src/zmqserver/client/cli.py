"""The ``zmq-client`` command: send one job, print the reply. argparse -> Client -> stdout.

Rule 1: no logic lives here that a library user would also need; that belongs in the library
(sync.py, state.py). It sits in the client package, not with the server's command line, because
it is a client: ``zmq-client`` imports the client library and none of the server.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO, TextIO

from .._version import version
from ..errors import ConfigError, ProtocolError, RequestTimeout, ServerError
from .sync import Client

DEFAULT_ENDPOINT = "tcp://127.0.0.1:6660"

#: Exit statuses. 2 is shared with argparse's usage errors, which cannot be given another code.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_TIMEOUT = 2

_EPILOG = """\
Each PAYLOAD argument is sent as one frame; with none, all of stdin is sent as one frame.
`zmq-client sub PREFIX` and `zmq-client pub KEY VALUE` use the server's pub-sub instead
(see `zmq-client sub --help`); `zmq-client -- sub` sends a job whose payload is "sub".
Each reply frame is written to stdout followed by a newline, as it arrives.

exit status: 0 reply received, 1 error reply (or a broken reply), 2 no reply (or a usage error)
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``zmq-client`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="zmq-client",
        description="Send one job to a zmqserver broker and print the reply.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"zmq-client {version()}")
    parser.add_argument(
        "-e", "--endpoint", default=DEFAULT_ENDPOINT,
        help=f"ZeroMQ endpoint of the broker's frontend (default: {DEFAULT_ENDPOINT})",
    )  # fmt: skip
    parser.add_argument(
        "-s", "--service", default="",
        help="service to send the job to (default: the server's default service)",
    )  # fmt: skip
    parser.add_argument(
        "-t", "--timeout", type=_positive_float, default=5.0, metavar="SECONDS",
        help="seconds to wait for a reply on each attempt (default: 5)",
    )  # fmt: skip
    parser.add_argument(
        "-r", "--retries", type=_positive_int, default=3, metavar="N",
        help="attempts in all before giving up (default: 3)",
    )  # fmt: skip
    parser.add_argument(
        "--server-key", metavar="KEY|FILE",
        help="speak CURVE: the server's public key (40 Z85 characters) or its .key file",
    )  # fmt: skip
    parser.add_argument(
        "--key-file", metavar="FILE",
        help="this client's secret key file (.key_secret, from zmqserver keygen); "
        "default with --server-key: a throwaway key (servers with curve_allow_any)",
    )  # fmt: skip
    parser.add_argument("payload", nargs="*", metavar="PAYLOAD", help="one request frame")
    return parser


def _binary(stream: TextIO) -> BinaryIO | None:
    # Frames are bytes and are written as they are, so go under the text layer when there is one.
    buffer: BinaryIO | None = getattr(stream, "buffer", None)
    return buffer


def _write_frame(frame: bytes, stream: TextIO) -> None:
    buffer = _binary(stream)
    if buffer is None:
        stream.write(frame.decode("utf-8", "surrogateescape") + "\n")
        stream.flush()
        return
    stream.flush()  # anything already written through the text layer goes first
    buffer.write(frame + b"\n")
    buffer.flush()


def client_main(argv: list[str] | None = None) -> int:
    """Run ``zmq-client`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] in (["sub"], ["pub"]):
        from ..pubsub.cli import main  # pub-sub's own commands, only when asked for

        return main(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    if args.payload:
        # os.fsencode undoes the surrogateescape decoding Python applied to argv, so an argument
        # that is not valid UTF-8 is still sent as the exact bytes the shell passed.
        payload: list[bytes] = [os.fsencode(arg) for arg in args.payload]
    else:
        stdin = _binary(sys.stdin)
        payload = [stdin.read() if stdin is not None else sys.stdin.read().encode()]
    try:
        client = Client(
            args.endpoint,
            service=args.service,
            timeout=args.timeout,
            retries=args.retries,
            server_key=args.server_key,
            client_key_file=args.key_file,
        )
    except (ValueError, ConfigError) as exc:
        print(f"zmq-client: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        with client:
            for part in client.stream(payload):
                for frame in [part] if isinstance(part, bytes) else part:
                    _write_frame(frame, sys.stdout)
    except RequestTimeout as exc:
        print(f"zmq-client: timeout: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    except ServerError as exc:
        print(f"zmq-client: {exc.reason}: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except ProtocolError as exc:
        print(f"zmq-client: protocol_error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(client_main())
