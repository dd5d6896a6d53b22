"""Which server a client with several endpoints talks to, and when it moves on (sans-IO).

Rule 1: no sockets, no clocks. A client given the two endpoints of a Binary Star pair
(docs/ha.md) talks to one of them at a time, the first at start; when an attempt times out it
moves to the next, Lazy-Pirate style, as the guide's ``bstarcli`` does. The drivers (sync.py,
aio.py) ask :meth:`Endpoints.on_timeout` and, on True, replace their socket with one connected
to :attr:`Endpoints.current`.

One rule keeps a pipelined client (many requests in flight on one socket) from bouncing: it
moves only for an attempt that was sent after its last move. Every attempt waits the same
``timeout``, so an attempt that expires less than ``timeout`` after the move was sent before it,
to the server the client already left; its resend goes to the new one without a move.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["Endpoints", "split_endpoints"]


def split_endpoints(endpoint: str | Sequence[str]) -> tuple[str, ...]:
    """``endpoint`` as a tuple: one endpoint, a sequence of them, or (a command line's form)
    one string of them separated by commas. Raises ``ValueError`` if there is none."""
    if isinstance(endpoint, str):
        parts = tuple(part.strip() for part in endpoint.split(","))
    else:
        parts = tuple(endpoint)
        if not all(isinstance(part, str) for part in parts):
            raise TypeError(f"endpoints must be strings, got {endpoint!r}")
    if not parts or not all(parts):
        raise ValueError(f"expected one or more endpoints, got {endpoint!r}")
    return parts


class Endpoints:
    """The endpoints a client may use, the one in use, and when it last moved."""

    __slots__ = ("all", "index", "moved_at", "moves")

    def __init__(self, endpoints: Sequence[str]) -> None:
        if not endpoints:
            raise ValueError("expected at least one endpoint")
        self.all = tuple(endpoints)
        self.index = 0
        self.moved_at = -math.inf
        #: Moves so far (a failover count for the caller's metrics).
        self.moves = 0

    @property
    def current(self) -> str:
        return self.all[self.index]

    def on_timeout(self, now: float, timeout: float) -> bool:
        """An attempt timed out at ``now``: move to the next endpoint? (the module docstring)"""
        if len(self.all) < 2 or now < self.moved_at + timeout:
            return False
        self.index = (self.index + 1) % len(self.all)
        self.moved_at = now
        self.moves += 1
        return True
