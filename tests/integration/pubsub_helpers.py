"""Helpers for the pub-sub tests: three free consecutive ports, a server with pub-sub on."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Callable
from typing import Any

from tests.helpers import ServerProcess, wait_until

from zmqserver.pubsub.frames import HUGZ, decode_kv


def free_base_port() -> int:
    """A port P with P, P+1 and P+2 free on 127.0.0.1 (checked by binding; a race with another
    process is possible, and shows as a bind error in the server's log)."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        sockets = []
        try:
            for offset in range(3):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no three free consecutive ports")


def start_pubsub(
    start_server: Callable[..., ServerProcess],
    *args: str,
    app: str = "tests.apps:publish",
    workers: int = 2,
    **kw: Any,
) -> tuple[ServerProcess, str]:
    """A server with pub-sub on 127.0.0.1; (the server, ``tcp://127.0.0.1:P``)."""
    base = free_base_port()
    server = start_server(
        app, "--pubsub-port", str(base), "--host", "127.0.0.1", *args, workers=workers, **kw
    )
    endpoint = f"tcp://127.0.0.1:{base}"
    wait_until(lambda: "pub-sub: snapshots on" in server.log(), 15, f"pub-sub up: {server.log}")
    return server, endpoint


def heard_hugz(sock: Any, timeout: float = 5.0) -> bool:
    """Whether a SUB socket receives a HUGZ within ``timeout`` seconds."""
    with contextlib.suppress(Exception):
        while sock.poll(int(timeout * 1000)):
            if decode_kv(sock.recv_multipart()).key == HUGZ:
                return True
    return False
