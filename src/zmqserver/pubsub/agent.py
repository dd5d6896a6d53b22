"""A subscriber's sans-IO state (the guide's Clone client, CHP): snapshot, then live updates.

Rule 1: no sockets, no clock. The drivers (client.py, aio.py) feed it what the snapshot DEALER
and the SUB socket received, with ``now``, and deliver the :class:`Update` objects it returns.

The dance, as in the guide's clonecli: subscribe first (the SUB socket queues what arrives),
ask for a snapshot (``ICANHAZ?``), take KVSYNC until KTHXBAI, whose sequence is where the
snapshot stands; then read the SUB queue, dropping what the snapshot already holds (a sequence
not above the last one seen). Two things make it start over with a fresh snapshot:

* a gap: the server's KVPUB carries, for each of the key's subtrees, the sequence of the
  subtree's previous update (``prev``). If that is above the last sequence this subscriber saw,
  an update of its subtree never arrived (its queue overflowed, the Suicidal Snail's fate).
* a late join: the SUB socket's subscription takes effect when its connection is up, which
  may be after the snapshot was taken; the server sent whatever it published meanwhile to
  nobody. The first message the SUB reads proves the subscription is in effect: if it is a
  HUGZ whose ``seq`` (the server's last sequence) is above the snapshot's, updates of the
  subtree may have been lost, and one more snapshot settles it (an update's ``prev`` settles it
  as for any gap). Without this a subscriber could miss an update until its subtree's next.
* silence: nothing, not even HUGZ (once a second), for ``silence`` seconds: the server is gone
  or restarted. With several servers (a Binary Star pair, docs/ha.md) the subscriber moves to
  the next one (:attr:`Agent.server`), as the guide's clonecli6 does; it moves on too when a
  snapshot does not come within ``sync_timeout`` (a passive server answers none). Each new
  snapshot is compared with what the subscriber had, and the difference is delivered as
  updates (deletes included), so the consumer ends in the server's state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .frames import (
    HUGZ,
    KTHXBAI,
    PREV,
    SEQ,
    FrameError,
    decode_kv,
    decode_prev,
    encode_icanhaz,
    wire_subtree,
)

#: Seconds without a message (HUGZ come once a second) before the server is presumed gone.
SILENCE = 3.0
#: Seconds a snapshot may take before it is asked for again (on a fresh socket).
SYNC_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Update:
    """One key's new value, as a subscriber sees it (an empty value: the key was deleted)."""

    key: bytes
    value: bytes
    sequence: int
    properties: Mapping[bytes, bytes] = field(default_factory=dict)
    #: From a snapshot (the first, or a resync's difference), not a live update.
    snapshot: bool = False

    @property
    def deleted(self) -> bool:
        return not self.value


class Agent:
    """What a subscriber of ``prefix`` knows, and what it must do next."""

    def __init__(
        self,
        prefix: bytes = b"",
        now: float = 0.0,
        *,
        silence: float = SILENCE,
        sync_timeout: float = SYNC_TIMEOUT,
        servers: int = 1,
    ) -> None:
        if servers < 1:
            raise ValueError(f"expected one server or more, not {servers!r}")
        self.prefix = prefix
        #: How many servers the subscriber knows, and the index of the one it uses.
        self.servers = servers
        self.server = 0
        #: What the SUB socket subscribes to (and the snapshot asks for): ``prefix`` cut back to
        #: a "/" so that the ``prev`` property vouches for it; updates are then filtered here.
        self.subtree = wire_subtree(prefix)
        self._depth = self.subtree.count(b"/")
        self.silence = silence
        self.sync_timeout = sync_timeout
        #: The last sequence seen: the snapshot's, then each live update's of the subtree.
        self.sequence = 0
        #: The current state, key -> value.
        self.map: dict[bytes, bytes] = {}
        self.syncing = True
        self._pending: dict[bytes, Update] = {}
        self._since = now  # when the sync began, or the server was last heard
        self._joined = False  # the SUB has read a message: its subscription is in effect
        #: Gaps seen (each started a resync; a late join counts as one), silences, and
        #: snapshots taken.
        self.gaps = 0
        self.silences = 0
        self.snapshots = 0
        #: Moves to the next server (several servers only).
        self.moves = 0

    # -- what to send, when ---------------------------------------------------------------------

    def request(self, now: float) -> list[bytes]:
        """Begin a (re)sync: the ICANHAZ? to send on a fresh snapshot socket."""
        self.syncing = True
        self._pending = {}
        self._since = now
        return encode_icanhaz(self.subtree)

    def next_deadline(self) -> float:
        """When :meth:`timed_out` turns true with nothing received meanwhile."""
        limit = self.sync_timeout if self.syncing else self.silence
        return self._since + limit if limit > 0 else math.inf

    def timed_out(self, now: float) -> bool:
        """True: start over (:meth:`request`, on a fresh socket): the snapshot did not come, or
        the server has been silent too long. With several servers, :attr:`server` has moved to
        the next: the driver connects its sockets there first."""
        if now < self.next_deadline():
            return False
        if not self.syncing:
            self.silences += 1
        if self.servers > 1:
            self.server = (self.server + 1) % self.servers
            self.moves += 1
            self._joined = False  # a new SUB connection: its subscription is new too
        return True

    # -- what arrives ---------------------------------------------------------------------------

    def on_snapshot(self, frames: list[bytes], now: float) -> list[Update]:
        """A KVSYNC or the KTHXBAI; at KTHXBAI, the updates that bring the consumer to the
        snapshot's state. Malformed frames are skipped (the sync timeout covers the worst)."""
        if not self.syncing:
            return []  # a late answer to a request we gave up on
        try:
            kv = decode_kv(frames)
        except FrameError:
            return []
        self._since = now
        if kv.key != KTHXBAI:
            if kv.key.startswith(self.prefix) and kv.value:
                self._pending[kv.key] = Update(
                    kv.key, kv.value, kv.sequence, kv.properties, snapshot=True
                )
            return []
        self.syncing = False
        self.snapshots += 1
        self.sequence = kv.sequence
        new, old = self._pending, self.map
        self._pending = {}
        out = [update for key, update in new.items() if old.get(key) != update.value]
        out += [Update(key, b"", kv.sequence, snapshot=True) for key in old if key not in new]
        self.map = {key: update.value for key, update in new.items()}
        return out

    def on_live(self, frames: list[bytes], now: float) -> tuple[Update | None, bool]:
        """A message from the SUB socket: ``(update to deliver or None, resync needed)``."""
        if self.syncing:
            return None, False
        try:
            kv = decode_kv(frames)
        except FrameError:
            return None, False
        self._since = now
        if not self._joined:
            self._joined = True
            if kv.key == HUGZ and _last_sequence(kv.properties) > self.sequence:
                self.gaps += 1
                return None, True
        if kv.key == HUGZ or kv.sequence <= self.sequence:
            return None, False  # a heartbeat, or already in the snapshot
        if not kv.key.startswith(self.subtree):
            return None, False  # a subscription of the socket that is not ours (HUGZ's)
        prev = decode_prev(kv.properties.get(PREV, b""))
        if len(prev) > self._depth and prev[self._depth] > self.sequence:
            self.gaps += 1
            return None, True
        self.sequence = kv.sequence
        if not kv.key.startswith(self.prefix):
            return None, False
        if kv.value:
            self.map[kv.key] = kv.value
        elif self.map.pop(kv.key, None) is None:
            return None, False  # a delete of a key we never had (expired before the snapshot)
        return Update(kv.key, kv.value, kv.sequence, kv.properties), False


def _last_sequence(properties: Mapping[bytes, bytes]) -> int:
    """A HUGZ's ``seq`` property (0 if absent or malformed: a server that does not send it
    leaves its subscribers as RFC 12's algorithm does)."""
    try:
        return int(properties.get(SEQ, b"0"))
    except ValueError:
        return 0
