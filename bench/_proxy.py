"""Baseline broker: pyzmq's C device ``zmq.proxy(ROUTER frontend, DEALER backend)``.

Run as its own process by the suite (bench/systems.py):
``python -m bench._launch bench._proxy FRONTEND BACKEND``. It has no signal handlers, so SIGTERM
ends it at once (the proxy loop runs in C).
"""

from __future__ import annotations

import sys

import zmq


def main(argv: list[str]) -> int:
    frontend_endpoint, backend_endpoint = argv
    ctx = zmq.Context()
    frontend = ctx.socket(zmq.ROUTER)
    frontend.bind(frontend_endpoint)
    backend = ctx.socket(zmq.DEALER)
    backend.bind(backend_endpoint)
    zmq.proxy(frontend, backend)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
