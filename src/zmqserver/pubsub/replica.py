"""The passive server's copy of its peer's pub-sub map (sans-IO), the guide's clonesrv6 model.

Rule 1: no sockets, no clock. The component (component.py) feeds in what the peer's snapshot
port (P) and publisher (P+1) sent, and what its own collector received, with ``now``; on
takeover it publishes what :meth:`Replica.takeover` returns.

Two ways in, as in the guide's clonesrv6, so that a failover loses nothing but what no server
received:

* **The peer's updates.** The passive server is a subscriber of its peer, with the same
  :class:`~.agent.Agent` as any subscriber (snapshot, then live updates; a gap or a late
  join takes a new snapshot). Each update is stored under the sequence the active server gave
  it, so the passive map *and its sequence* are the active one's: on takeover it continues
  the numbering where the peer stopped.
* **The publishers' updates.** A publisher that knows both servers sends each KVSET to both
  collectors. The passive one keeps it *pending*, by uuid, until the active server's KVPUB
  with that uuid arrives (or arrived first: then the KVSET is dropped when it comes). On
  takeover, what is still pending is what the dead server received but never published: it
  is applied then, numbered after the peer's last update.

Pending entries are forgotten ``horizon`` seconds after they arrived, but only when a later
message from the peer proves it was alive all that time (it saw the update and refused it, or
it was a delete of nothing): a dead peer leaves the list as it was until the takeover. A KVSET
without a uuid cannot be matched, so it is not kept.

The server's own events (keys under ``$zmqserver/``) are per server: the peer's are not copied.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from .agent import SILENCE, SYNC_TIMEOUT, Agent, Update
from .core import SERVER_PREFIX, Hashmap, Refused

#: Seconds a pending KVSET waits for the active server's KVPUB while the peer is heard from.
HORIZON: Final = 5.0
#: Pending KVSETs (and uuids published before their KVSET came) kept at most; the oldest go.
MAX_PENDING: Final = 100_000


class Replica:
    """What a passive server knows of its peer's map, and what it owes on takeover."""

    def __init__(
        self,
        hashmap: Hashmap,
        now: float,
        *,
        silence: float = SILENCE,
        sync_timeout: float = SYNC_TIMEOUT,
        horizon: float = HORIZON,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.hashmap = hashmap
        self.agent = Agent(b"", now, silence=silence, sync_timeout=sync_timeout)
        self.horizon = horizon
        self.max_pending = max_pending
        #: uuid -> (when it came, the KVSET's frames), in arrival order.
        self.pending: OrderedDict[bytes, tuple[float, list[bytes]]] = OrderedDict()
        #: uuids the peer published before their KVSET reached us -> when.
        self.seen: OrderedDict[bytes, float] = OrderedDict()
        #: Whether a snapshot from the peer has completed (the map is the peer's).
        self.synced = False
        #: Updates copied from the peer; pending KVSETs dropped (bound, horizon); KVSETs not
        #: kept (no uuid); updates the map refused (its bounds are smaller than the peer's).
        self.copied = 0
        self.expired = 0
        self.unmatched = 0
        self.refused = 0

    # -- the link to the peer (driven like a subscriber) ------------------------------------------

    def request(self, now: float) -> list[bytes]:
        """The ICANHAZ? to send to the peer's snapshot port, on a fresh socket."""
        return self.agent.request(now)

    @property
    def syncing(self) -> bool:
        return self.agent.syncing

    def next_deadline(self) -> float:
        return self.agent.next_deadline()

    def timed_out(self, now: float) -> bool:
        """True: ask the peer for a snapshot again (it did not answer, or fell silent)."""
        return self.agent.timed_out(now)

    def on_snapshot(self, frames: list[bytes], now: float) -> None:
        """A KVSYNC or the KTHXBAI from the peer; at KTHXBAI the map becomes the peer's."""
        agent = self.agent
        first = not self.synced
        for update in agent.on_snapshot(frames, now):
            self._apply(update, now)
        if agent.syncing:
            return
        if first:
            # The first snapshot's difference was against an empty map: keys of ours that the
            # peer does not have (a split brain's, or an old run's) go now.
            for key, _ in self.hashmap.items():
                if key not in agent.map and not key.startswith(SERVER_PREFIX):
                    self.hashmap.set(key, b"", None, now, sequence=agent.sequence)
            self.synced = True
        self.hashmap.sequence = agent.sequence
        self._prune(now)

    def on_update(self, frames: list[bytes], now: float) -> bool:
        """A message from the peer's publisher (KVPUB or HUGZ); True: resync (a gap)."""
        update, resync = self.agent.on_live(frames, now)
        if resync:
            return True
        if len(frames) == 5 and frames[2] and not self.agent.syncing:
            uuid = bytes(frames[2])
            if self.pending.pop(uuid, None) is None:
                self.seen[uuid] = now
                if len(self.seen) > self.max_pending:
                    self.seen.popitem(last=False)
        if update is not None:
            self._apply(update, now)
        if self.synced and self.agent.sequence > self.hashmap.sequence:
            self.hashmap.sequence = self.agent.sequence  # e.g. a delete of a key we lacked
        self._prune(now)
        return False

    # -- the publishers' updates ------------------------------------------------------------------

    def on_collect(self, frames: list[bytes], now: float) -> None:
        """A KVSET at our own collector while passive: pending until the peer publishes it."""
        if len(frames) != 5 or not frames[2]:
            self.unmatched += 1
            return
        uuid = bytes(frames[2])
        if self.seen.pop(uuid, None) is not None:
            return  # the peer published it already
        self.pending[uuid] = (now, frames)
        if len(self.pending) > self.max_pending:
            self.pending.popitem(last=False)
            self.expired += 1

    def takeover(self, now: float) -> list[list[bytes]]:
        """We are the active server now: the KVPUBs of the updates the peer never published,
        numbered after its last one. The replica is spent afterwards."""
        out: list[list[bytes]] = []
        for _, frames in self.pending.values():
            try:
                kvpub = self.hashmap.collect(frames, now)
            except Refused:
                self.refused += 1
                continue
            if kvpub is not None:
                out.append(kvpub)
        self.pending.clear()
        self.seen.clear()
        return out

    # -- helpers ----------------------------------------------------------------------------------

    def _apply(self, update: Update, now: float) -> None:
        if update.key.startswith(SERVER_PREFIX):
            return  # the peer's own events: per server
        try:
            self.hashmap.set(
                update.key, update.value, update.properties, now, sequence=update.sequence
            )
        except Refused:
            self.refused += 1
            return
        self.copied += 1

    def _prune(self, now: float) -> None:
        """The peer was heard at ``now``: forget what it has had ``horizon`` seconds to publish."""
        limit = now - self.horizon
        pending, seen = self.pending, self.seen
        while pending:
            uuid, (when, _) = next(iter(pending.items()))
            if when > limit:
                break
            del pending[uuid]
            self.expired += 1
        while seen:
            uuid, when = next(iter(seen.items()))
            if when > limit:
                break
            del seen[uuid]
