"""The passive server's sockets to its Binary Star peer's pub-sub (docs/ha.md).

Rule 1: glue. What to keep, and what to publish on takeover, is replica.py's (sans-IO); this
module owns a SUB on the peer's P+1 and, while a snapshot is under way, a DEALER on its P,
driven as a subscriber drives them (client.py): the SUB queues while the snapshot comes, and a
fresh DEALER for each snapshot, so that an answer to a request given up on is never taken.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from typing import Final

import zmq

from ..security.sockets import ClientCredentials, apply_client
from ..supervisor.component import Handle, WatchItem
from .agent import SYNC_TIMEOUT
from .core import Hashmap
from .endpoints import chp_endpoints
from .frames import PEER_COPY_ID
from .replica import Replica

log = logging.getLogger("zmqserver.pubsub")

#: Messages read from one socket in one turn of the master's loop.
BATCH: Final = 1000
#: What the SUB may queue (a snapshot's worth of updates while it comes); past it ZeroMQ drops
#: and the replica sees a gap, which a new snapshot repairs.
RCVHWM: Final = 100_000


class PeerCopy:
    """A copy of the peer's map, kept while this server is not active."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        hashmap: Hashmap,
        now: float,
        retry: float = SYNC_TIMEOUT,
        credentials: ClientCredentials | None = None,
    ) -> None:
        """``retry``: seconds before a snapshot request unanswered is made again. The pair's
        heartbeat: a peer that is not active yet drops it, and the copy must not wait a
        subscriber's patience for the peer's first answer (a failover then would find it
        empty). ``credentials``: CURVE to the peer's ports (a pair with CURVE)."""
        self.ctx = ctx
        self.credentials = credentials
        self.snapshot_endpoint, self.updates_endpoint, _ = chp_endpoints(endpoint)
        self.replica = Replica(hashmap, now, sync_timeout=retry)
        self.sub: zmq.Socket[bytes] | None = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, RCVHWM)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        if credentials is not None:
            apply_client(self.sub, credentials)
        self.sub.connect(self.updates_endpoint)
        self.dealer: zmq.Socket[bytes] | None = None
        self._sync(now)

    def watch(self) -> list[WatchItem]:
        """The DEALER while a snapshot comes (the SUB keeps its queue meanwhile), else the SUB."""
        sock = self.dealer if self.replica.syncing else self.sub
        return [] if sock is None else [(sock, zmq.POLLIN)]

    def next_deadline(self) -> float:
        return self.replica.next_deadline()

    def handle(self, ready: Collection[Handle], now: float) -> None:
        replica = self.replica
        if self.dealer is not None and self.dealer in ready:
            self._read_snapshot(now)
        elif self.sub is not None and self.sub in ready and not replica.syncing:
            self._read_updates(now)
        if replica.timed_out(now):
            self._sync(now)

    def collect(self, frames: list[bytes], now: float) -> None:
        """A KVSET at our collector while we are not active."""
        self.replica.on_collect(frames, now)

    def takeover(self, now: float) -> list[list[bytes]]:
        """Stop copying; the KVPUBs of what the peer received but never published."""
        self.close()
        return self.replica.takeover(now)

    def close(self) -> None:
        for sock in (self.dealer, self.sub):
            if sock is not None:
                sock.close(linger=0)
        self.dealer = self.sub = None

    # -- helpers ----------------------------------------------------------------------------------

    def _sync(self, now: float) -> None:
        if self.sub is None:
            return  # closed
        if self.dealer is not None:
            self.dealer.close(linger=0)
        dealer = self.dealer = self.ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        # Not a subscriber: the peer, if it is not active either, neither counts this request
        # as a client's vote for a failover nor as one it dropped.
        dealer.setsockopt(zmq.ROUTING_ID, PEER_COPY_ID + os.urandom(8))
        if self.credentials is not None:
            apply_client(dealer, self.credentials)
        dealer.connect(self.snapshot_endpoint)
        dealer.send_multipart(self.replica.request(now), zmq.NOBLOCK)

    def _read_snapshot(self, now: float) -> None:
        dealer, replica = self.dealer, self.replica
        assert dealer is not None
        for _ in range(BATCH):
            try:
                frames = dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            first = not replica.synced
            replica.on_snapshot(frames, now)
            if not replica.syncing:
                if first:
                    log.info(
                        "pub-sub: in step with the peer: %d keys at sequence %d",
                        len(replica.hashmap),
                        replica.hashmap.sequence,
                    )
                dealer.close(linger=0)
                self.dealer = None
                return

    def _read_updates(self, now: float) -> None:
        sub, replica = self.sub, self.replica
        assert sub is not None
        for _ in range(BATCH):
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if replica.on_update(frames, now):
                self._sync(now)  # a gap: a new snapshot (the SUB keeps its queue)
                return
