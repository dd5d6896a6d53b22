"""Small process-level helpers: titles and parent-death signals."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import signal
import sys

log = logging.getLogger("zmqserver")

_PR_SET_PDEATHSIG = 1


def set_title(title: str) -> None:
    """Set the process title seen in ps/top (`zmq broker 6660-6661`); best effort."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # pragma: no cover - setproctitle is a dependency
        return
    setproctitle(title)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies.

    Workers also check ``os.getppid()`` on every wake-up; this makes the exit prompt even when a
    worker is stuck in a long job and SIGKILL took the master.
    """
    if not sys.platform.startswith("linux"):
        return
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable")


def endpoint_label(endpoint: str) -> str:
    """The short form of an endpoint used in process titles: the port for tcp, else as is."""
    if endpoint.startswith("tcp://"):
        return endpoint.rsplit(":", 1)[-1]
    return endpoint
