"""Shared fixtures: real servers, real sockets, bounded waits, tidy teardown.

Servers run as real ``python -m zmqserver serve`` processes in their own session, bound to
``ipc://`` endpoints in a private temp dir, and are stopped by signalling only the processes the
test started (see tests/helpers.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from tests.helpers import ServerProcess


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    # Every socket is created with linger 0, so term returns at once; destroy() is the bound.
    context.destroy(linger=0)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short private directory: ipc:// paths must fit in a sun_path (about 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="zs-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_server(
    short_tmp: Path, ctx: zmq.Context[zmq.Socket[bytes]]
) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``start_server("examples.upper:app", "--max-requests", "3", workers=2)``.

    Keywords go to :class:`~tests.helpers.ServerProcess` (``autoscale``, ``env``).
    """
    servers: list[ServerProcess] = []

    def start(
        app: str | None = "examples.upper:app", *args: str, workers: int | None = 2, **kw: Any
    ) -> ServerProcess:
        workdir = short_tmp / str(len(servers))
        workdir.mkdir()
        server = ServerProcess(workdir, app, *args, workers=workers, ctx=ctx, **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
