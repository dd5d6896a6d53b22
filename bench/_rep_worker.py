"""Baseline worker: a REP socket running an app (``module:callable``) on every message.

    python -m bench._launch bench._rep_worker {--bind|--connect} ENDPOINT [--app MODULE:CALLABLE]

``--bind``: the "no broker" baseline, clients connect straight to it. ``--connect``: behind the C
proxy's DEALER backend. The app gets ``bytes`` for a one-frame message and ``list[bytes]``
otherwise, as zmqserver's workers do. No signal handlers: SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

import zmq


def load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--bind")
    where.add_argument("--connect")
    parser.add_argument("--app", default="examples.echo:app")
    args = parser.parse_args(argv)
    app = load(args.app)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.linger = 0
    if args.bind:
        sock.bind(args.bind)
    else:
        sock.connect(args.connect)
    while True:
        frames = sock.recv_multipart()
        result = app(frames[0] if len(frames) == 1 else frames)
        if isinstance(result, bytes):
            sock.send(result)
        else:
            sock.send_multipart(result)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
