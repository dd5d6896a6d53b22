"""Replies kept for Lazy Pirate resends, so a request that was answered is not run again.

Rule 1: a bounded map from request key to reply frames; no decisions about what is worth keeping
(the dispatcher keeps only outcomes that running again would repeat: a reply or an app error).

A client that lost a reply resends the same request (same routing id, same request id). The
dispatcher answers it from here instead of running the job twice. The cache is least recently
used, bounded twice: by entries (``Limits.reply_cache``) and by the bytes the replies hold in all
(``Limits.reply_cache_bytes``); the oldest go first, and a reply bigger than the byte bound is not
kept at all. There is no time-to-live: an entry lives until newer ones push it out.
"""

from __future__ import annotations

from collections import OrderedDict

from ..protocol import Frame
from .state import RequestKey, frames_size


class ReplyCache:
    """The replies of finished requests, least recently used first, within two bounds."""

    def __init__(self, entries: int, max_bytes: int) -> None:
        #: Most replies kept (0: none); set anew on a reload, applied from the next :meth:`put`.
        self.entries = entries
        #: Most bytes all of them may hold; a bigger reply is not kept.
        self.max_bytes = max_bytes
        self._replies: OrderedDict[RequestKey, list[Frame]] = OrderedDict()
        self._sizes: dict[RequestKey, int] = {}
        #: Bytes the kept replies hold.
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._replies)

    def __contains__(self, key: RequestKey) -> bool:
        return key in self._replies

    def get(self, key: RequestKey) -> list[Frame] | None:
        """The reply kept for ``key`` (now the most recently used), or None."""
        found = self._replies.get(key)
        if found is not None:
            self._replies.move_to_end(key)
        return found

    def put(self, key: RequestKey, frames: list[Frame]) -> None:
        """Keep ``frames`` as the reply to ``key``; the oldest replies go to stay in bounds."""
        if not self.entries:
            return
        size = frames_size(frames)
        budget = self.max_bytes
        if size > budget:
            return
        replies, sizes = self._replies, self._sizes
        old_size = sizes.get(key)
        if old_size is not None:  # never twice, in practice: a resend is answered from here
            self.bytes -= old_size
        replies[key] = frames
        sizes[key] = size
        self.bytes += size
        while len(replies) > self.entries or self.bytes > budget:
            old, _ = replies.popitem(last=False)
            self.bytes -= sizes.pop(old)
