"""The ``zmq-client`` command: send one job, print the reply. argparse -> Client -> stdout.

Rule 1: no logic lives here that a library user would also need; that belongs in the library
(sync.py, state.py). It sits in the client package, not with the server's command line, because
it is a client: ``zmq-client`` imports the client library and none of the server.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import BinaryIO, TextIO

import zmq

from .._version import version
from ..durable.tsp import DEFAULT_BACKOFF, DEFAULT_RETRIES
from ..errors import (
    ConfigError,
    JobPending,
    ProtocolError,
    RequestTimeout,
    ServerError,
    UnknownTicket,
)
from ..security.handshakes import Handshakes
from .options import ClientOptions, new_identity
from .sync import Client
from .usage import ShortErrorParser

DEFAULT_ENDPOINT = "tcp://127.0.0.1:6660"

#: Exit statuses. 2 is shared with argparse's usage errors, which cannot be given another code.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_TIMEOUT = 2
#: ``zmq-client result``: the durable job has no result yet.
EXIT_PENDING = 3

DURABLE_COMMANDS = ("enqueue", "result", "status")

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


def endpoint_arg(text: str) -> str:
    """``-e HOST:PORT`` as ``tcp://HOST:PORT``: the form people type, and the only transport
    that has a port. Several, separated by commas (a Binary Star pair, docs/ha.md), each so."""
    if "," in text:
        return ",".join(endpoint_arg(part.strip()) for part in text.split(","))
    if "://" in text:
        return text
    host, colon, port = text.rpartition(":")
    if not (host and colon and port.isdigit()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an endpoint (tcp://HOST:PORT, HOST:PORT or ipc:///PATH)"
        )
    return f"tcp://{text}"


#: How long the diagnosis after a timeout waits for a connection and its handshake.
PROBE_TIME = 1.0


def probe(options: ClientOptions, wait: float = PROBE_TIME) -> str:
    """What a fresh connection to the server meets: ``"nothing"`` (no connection could be made),
    ``"refused"`` (connected, but the ZeroMQ/CURVE handshake failed or never finished) or
    ``"up"`` (the handshake succeeded). One socket, closed before returning.

    A timed-out request says none of this by itself: ZeroMQ hides connection failures and a
    CURVE refusal behind silence, so the hints would otherwise be guesses.
    """
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    handshakes = Handshakes(sock)
    try:
        dataclasses.replace(options, identity=new_identity()).setup(sock)
        handshakes.read(wait)
    except ValueError:
        return "nothing"
    finally:
        handshakes.close()
        sock.close(linger=0)
        ctx.term()
    if handshakes.succeeded:
        return "up"
    return "refused" if handshakes.refused() else "nothing"


def timeout_hints(options: ClientOptions, payload_size: int, seen: str) -> list[str]:
    """The likely causes of a request that got no reply, given what :func:`probe` saw."""
    where = options.endpoint
    if seen == "nothing":
        return [f"nothing accepts connections at {where}: is the server running, and is that "
                "its frontend endpoint?"]  # fmt: skip
    if seen == "refused":
        if options.curve is None:
            return [f"the server at {where} refused the handshake: does it use CURVE? (give "
                    "--server-key, and --key-file if it allows only known clients)"]  # fmt: skip
        return [f"the server at {where} refused the CURVE handshake: check --server-key (the "
                "server's public key) and --key-file (is this client's public key in the "
                "server's curve_client_keys_dir?)"]  # fmt: skip
    return [
        f"the server at {where} is up but sent no reply in time; likely causes:",
        "  the job takes longer than --timeout, or the service has no workers (see the "
        "server's log)",
        f"  the payload ({payload_size} bytes) is over the server's max_message_size, and the "
        "server dropped it",
        "  it is the passive server of a Binary Star pair (`zmqserver status` there says so): "
        "give -e both servers' frontends, a,b",
    ]


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"zmq-client {version()}")
    parser.add_argument(
        "-e", "--endpoint", default=DEFAULT_ENDPOINT,
        type=endpoint_arg,
        help=f"ZeroMQ endpoint of the broker's frontend; HOST:PORT means tcp://HOST:PORT; "
        "several, comma-separated: a Binary Star pair, tried in turn "
        f"(default: {DEFAULT_ENDPOINT})",
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


def build_parser() -> argparse.ArgumentParser:
    """The ``zmq-client`` argument parser."""
    parser = ShortErrorParser(
        prog="zmq-client",
        description="Send one job to a zmqserver broker and print the reply. Durable jobs "
        "(a server with --store): zmq-client enqueue|result|status --help.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(parser)
    parser.add_argument("payload", nargs="*", metavar="PAYLOAD", help="one request frame")
    return parser


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0: {text!r}")
    return value


def build_durable_parser(command: str) -> argparse.ArgumentParser:
    """The parser of ``zmq-client enqueue``, ``result`` or ``status`` (docs/durable.md)."""
    parser = ShortErrorParser(
        prog=f"zmq-client {command}",
        description={
            "enqueue": "Store a durable job; print its ticket once the server has committed it.",
            "result": "Print a durable job's reply (exit 3 while it has none).",
            "status": "Print a durable job's state, attempts, next start and last error.",
        }[command],
    )
    _common_options(parser)
    if command == "enqueue":
        parser.add_argument(
            "--delay", type=_nonnegative_float, metavar="SECONDS", help="not before this delay"
        )
        parser.add_argument(
            "--eta", type=_nonnegative_float, metavar="UNIXTIME", help="not before this time"
        )
        parser.add_argument(
            "--job-retries", type=int, default=DEFAULT_RETRIES, metavar="N",
            help=f"runs again after Retry or a lost worker (default: {DEFAULT_RETRIES})",
        )  # fmt: skip
        parser.add_argument(
            "--backoff", type=_nonnegative_float, default=DEFAULT_BACKOFF, metavar="SECONDS",
            help=f"first wait before a retry, doubled each time (default: {DEFAULT_BACKOFF})",
        )  # fmt: skip
        parser.add_argument("payload", nargs="*", metavar="PAYLOAD", help="one request frame")
    else:
        parser.add_argument("ticket", metavar="TICKET")
    if command == "result":
        parser.add_argument(
            "-w", "--wait", type=_nonnegative_float, default=0.0, metavar="SECONDS",
            help="wait up to this long for the result (default: 0, ask once)",
        )  # fmt: skip
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["sub"], ["pub"]):
        from ..pubsub.cli import main  # pub-sub's own commands, only when asked for

        return main(argv)
    at = _durable_command(argv)
    if at is not None:
        return _durable_main(argv[at], argv[:at] + argv[at + 1 :])
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
    client = _client(args)
    if client is None:
        return EXIT_ERROR
    try:
        with client:
            for part in client.stream(payload):
                for frame in [part] if isinstance(part, bytes) else part:
                    _write_frame(frame, sys.stdout)
    except RequestTimeout as exc:
        print(f"zmq-client: timeout: {exc}", file=sys.stderr)
        options = ClientOptions.from_arguments(
            args.endpoint, server_key=args.server_key, client_key_file=args.key_file
        )
        for hint in timeout_hints(options, sum(map(len, payload)), probe(options)):
            print(f"zmq-client: {hint}", file=sys.stderr)
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


#: The common options that take a value (the next argument, unless written --option=value).
_VALUED = frozenset(
    ("-e", "--endpoint", "-s", "--service", "-t", "--timeout", "-r", "--retries",
     "--server-key", "--key-file")
)  # fmt: skip


def _durable_command(argv: list[str]) -> int | None:
    """Where ``enqueue``, ``result`` or ``status`` is, if it is the first positional argument
    (a payload of that name is sent after ``--``: ``zmq-client -- result``)."""
    skip = False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--":
            return None
        elif arg in _VALUED:
            skip = True
        elif not arg.startswith("-"):
            return index if arg in DURABLE_COMMANDS else None
    return None


def _client(args: argparse.Namespace) -> Client | None:
    """The client the common options describe; None (and the reason on stderr) if they are
    unusable (a malformed endpoint or service name, unusable CURVE keys)."""
    try:
        return Client(
            args.endpoint,
            service=args.service,
            timeout=args.timeout,
            retries=args.retries,
            server_key=args.server_key,
            client_key_file=args.key_file,
        )
    except (ValueError, ConfigError) as exc:
        print(f"zmq-client: {exc}", file=sys.stderr)
        return None


def _durable_main(command: str, argv: list[str]) -> int:
    try:
        args = build_durable_parser(command).parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    client = _client(args)
    if client is None:
        return EXIT_ERROR
    try:
        with client:
            if command == "enqueue":
                payload = [os.fsencode(arg) for arg in args.payload] or [_read_stdin()]
                ticket = client.enqueue(
                    payload,
                    delay=args.delay,
                    eta=args.eta,
                    retries=args.job_retries,
                    backoff=args.backoff,
                )
                print(ticket, flush=True)
            elif command == "result":
                reply = client.result(args.ticket, wait=args.wait)
                for frame in [reply] if isinstance(reply, bytes) else reply:
                    _write_frame(frame, sys.stdout)
            else:
                status = client.status(args.ticket)
                for name in ("state", "attempts", "retries", "eta", "error"):
                    print(f"{name}: {getattr(status, name)}", flush=True)
    except (ValueError, UnknownTicket) as exc:
        print(f"zmq-client: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except JobPending as exc:
        print(f"zmq-client: pending: {exc}", file=sys.stderr)
        return EXIT_PENDING
    except RequestTimeout as exc:
        print(f"zmq-client: timeout: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    except ServerError as exc:
        print(f"zmq-client: {exc.reason}: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


def _read_stdin() -> bytes:
    stdin = _binary(sys.stdin)
    return stdin.read() if stdin is not None else sys.stdin.read().encode()


if __name__ == "__main__":
    sys.exit(client_main())
