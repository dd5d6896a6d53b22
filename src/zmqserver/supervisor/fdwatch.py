"""A rarely busy ZeroMQ socket waited on by its ZMQ_FD instead of as a socket.

zmq_poll checks every socket it is given for commands, a ``poll`` and a ``getpid`` on every
call, and under load the master's wait is called every job or two. For a socket asked something
a few times a minute (the control endpoint, the ZAP handler) that is pure cost; a plain fd costs
the wait nothing more. The price is ZMQ_FD's rule: it says only that something may have changed,
and signals again only after a read has found the socket empty. So the component reads until
``zmq.Again``, and if it stops at a batch limit instead, the loop must come straight back
(:meth:`FdWatch.next_deadline` says 0) rather than wait for a signal that will not come.

docs/architecture.md ("How to add a component") says when to use it.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import zmq

from .component import Handle, WatchItem


class FdWatch:
    """The watch on one socket: what to wait on, whether a turn must read it, when to return."""

    __slots__ = ("sock", "fd", "more")

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock
        self.fd = int(sock.getsockopt(zmq.FD))
        #: The last read stopped at its batch limit: messages may wait that no signal announces.
        self.more = False

    def item(self) -> WatchItem:
        return (self.fd, zmq.POLLIN)

    def due(self, ready: Collection[Handle]) -> bool:
        """Whether this turn must read the socket: its fd fired, or the last read left some."""
        return self.more or self.fd in ready

    def read(self, emptied: bool) -> None:
        """Record how a read ended: ``emptied`` if it found the socket empty (the fd re-armed),
        False if it stopped at its batch limit (come back at once)."""
        self.more = not emptied

    def next_deadline(self) -> float:
        return 0.0 if self.more else math.inf
