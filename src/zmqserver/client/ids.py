"""Request ids for one client, the numbers that match replies to requests (state.py).

A module of its own, run from source where state.py is compiled: an iterator's ``__next__``
returning an ``int`` does not compile (mypyc 2.4 gives it an unboxed return that the type slot
cannot take), and a client makes one of these per socket, not per request.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

_U64 = (1 << 64) - 1


class RequestIds:
    """Request ids for one client: a random 64-bit start, then one more per request.

    A random start (rather than 0) keeps the ids of two clients, or of one client before and after
    a restart, from colliding at a server that remembers recent ids to spot retries. The ``secrets``
    module is used because it reads the OS entropy pool directly, so a forked child does not repeat
    its parent's sequence.
    """

    def __init__(self, start: int | None = None) -> None:
        self._next = secrets.randbits(64) if start is None else start & _U64

    def __next__(self) -> int:
        current = self._next
        self._next = (current + 1) & _U64
        return current

    def __iter__(self) -> Iterator[int]:
        return self
