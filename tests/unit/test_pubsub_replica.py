"""Pub-sub across a Binary Star failover, without sockets (pubsub/replica.py, docs/ha.md).

An *active* Hashmap stands for the live server; a Replica over a second Hashmap stands for the
passive one, fed the frames the active one would send it. A subscriber's Agent moving between
servers is tested here too.
"""

from __future__ import annotations

import pytest

from zmqserver.pubsub.agent import Agent
from zmqserver.pubsub.core import Hashmap
from zmqserver.pubsub.endpoints import peer_pubsub, servers
from zmqserver.pubsub.frames import KV, decode_kv, encode_kv, hugz
from zmqserver.pubsub.replica import Replica


def kvset(key: bytes, value: bytes, uuid: bytes, **props: str) -> list[bytes]:
    properties = {name.encode(): text.encode() for name, text in props.items()}
    return encode_kv(KV(key, 0, value, properties, uuid))


def uid(n: int) -> bytes:
    return b"%016d" % n


class Pair:
    """The active server's map and a passive replica of it, synced by a snapshot."""

    def __init__(self, keys: int = 3) -> None:
        self.active = Hashmap()
        for n in range(keys):
            self.active.set(b"/k/%d" % n, b"v%d" % n)
        self.passive = Hashmap()
        self.replica = Replica(self.passive, 0.0)
        self.replica.request(0.0)
        for frames in self.active.snapshot(b"", 0.0):
            self.replica.on_snapshot(frames, 0.0)
        assert self.replica.synced

    def publish(self, key: bytes, value: bytes, n: int, now: float = 1.0) -> list[bytes]:
        """A publisher's KVSET to the active server; the KVPUB it publishes."""
        out = self.active.collect(kvset(key, value, uid(n)), now)
        assert out is not None
        return out

    def contents(self, hashmap: Hashmap) -> dict[bytes, bytes]:
        return dict(hashmap.items())


def test_the_snapshot_copies_the_map_and_its_sequence():
    pair = Pair()
    assert pair.contents(pair.passive) == pair.contents(pair.active)
    assert pair.passive.sequence == pair.active.sequence == 3


def test_live_updates_keep_the_sequence_of_the_active_server():
    pair = Pair()
    for n in range(5):
        assert not pair.replica.on_update(pair.publish(b"/k/x", b"%d" % n, n), 1.0)
    assert pair.contents(pair.passive) == pair.contents(pair.active)
    assert pair.passive.sequence == pair.active.sequence == 8
    # The next update after a takeover continues the numbering.
    assert pair.replica.takeover(2.0) == []
    out = pair.passive.collect(kvset(b"/k/y", b"new", uid(99)), 2.0)
    assert out is not None
    assert decode_kv(out).sequence == 9


def test_deletes_and_keys_of_the_first_snapshot_not_at_the_peer():
    active = Hashmap()
    active.set(b"/a", b"1")
    passive = Hashmap()
    passive.set(b"/stale", b"from a split brain")
    replica = Replica(passive, 0.0)
    replica.request(0.0)
    for frames in active.snapshot(b"", 0.0):
        replica.on_snapshot(frames, 0.0)
    assert dict(passive.items()) == {b"/a": b"1"}
    out = active.set(b"/a", b"")
    assert out is not None
    replica.on_update(out, 1.0)
    assert len(passive) == 0


def test_a_kvset_the_active_server_never_published_is_published_on_takeover():
    pair = Pair()
    published = pair.publish(b"/k/a", b"seen", 1)
    pair.replica.on_collect(kvset(b"/k/a", b"seen", uid(1)), 1.0)  # KVSET first, then KVPUB
    pair.replica.on_update(published, 1.0)
    published = pair.publish(b"/k/b", b"seen too", 2)
    pair.replica.on_update(published, 1.0)  # KVPUB first, then KVSET
    pair.replica.on_collect(kvset(b"/k/b", b"seen too", uid(2)), 1.0)
    # In flight when the active server died: it reached the passive collector only.
    pair.replica.on_collect(kvset(b"/k/c", b"in flight", uid(3)), 1.5)
    assert list(pair.replica.pending) == [uid(3)]
    owed = pair.replica.takeover(2.0)
    assert [(decode_kv(f).key, decode_kv(f).sequence) for f in owed] == [(b"/k/c", 6)]
    assert pair.passive.get(b"/k/c") == b"in flight"
    assert pair.passive.get(b"/k/a") == b"seen"


def test_pending_updates_are_forgotten_only_while_the_peer_is_heard():
    pair = Pair()
    pair.replica.on_collect(kvset(b"/k/z", b"refused by the peer?", uid(7)), 1.0)
    # The peer silent: however late the takeover, the update is still owed.
    assert len(pair.replica.pending) == 1
    # The peer heard (a HUGZ) long after the update came: it had its chance to publish it.
    pair.replica.on_update(hugz(pair.active.sequence), 1.0 + pair.replica.horizon + 0.1)
    assert not pair.replica.pending
    assert pair.replica.expired == 1


def test_a_kvset_without_uuid_cannot_be_matched_and_is_not_kept():
    pair = Pair()
    pair.replica.on_collect(kvset(b"/k/z", b"v", b""), 1.0)
    assert not pair.replica.pending
    assert pair.replica.unmatched == 1


def test_pending_is_bounded():
    passive = Hashmap()
    replica = Replica(passive, 0.0, max_pending=2)
    for n in range(3):
        replica.on_collect(kvset(b"/k", b"%d" % n, uid(n)), 1.0)
    assert list(replica.pending) == [uid(1), uid(2)]


def test_a_gap_in_the_peer_updates_asks_for_a_new_snapshot():
    pair = Pair()
    pair.publish(b"/k/a", b"lost", 1)  # never reaches the replica
    assert pair.replica.on_update(pair.publish(b"/k/b", b"2", 2), 1.0)


def test_the_server_own_events_are_not_copied():
    pair = Pair()
    out = pair.active.set(b"$zmqserver/workers/x/1", b"{}")
    assert out is not None
    pair.replica.on_update(out, 1.0)
    assert pair.passive.get(b"$zmqserver/workers/x/1") is None
    assert pair.passive.sequence == pair.active.sequence  # the numbering follows all the same


def test_a_subscriber_moves_to_the_next_server_on_silence_and_on_no_snapshot():
    agent = Agent(b"", 0.0, silence=3.0, sync_timeout=5.0, servers=2)
    agent.request(0.0)
    assert agent.timed_out(5.0)
    assert agent.server == 1  # no snapshot: the next server
    agent.request(5.0)
    agent.on_snapshot([b"KTHXBAI", b"\0" * 8, b"", b"", b""], 5.5)
    assert not agent.syncing
    assert not agent.timed_out(8.0)
    assert agent.timed_out(8.5)
    assert (agent.server, agent.moves) == (0, 2)
    single = Agent(b"", 0.0, servers=1)
    single.request(0.0)
    assert single.timed_out(10.0)
    assert (single.server, single.moves) == (0, 0)


def test_endpoints_of_several_servers_and_of_the_peer():
    assert servers("tcp://a:10,tcp://b:20") == [
        ("tcp://a:10", "tcp://a:11"),
        ("tcp://b:20", "tcp://b:21"),
    ]
    assert servers(["tcp://a:10"]) == [("tcp://a:10", "tcp://a:11")]
    assert servers("ipc:///x", updates="ipc:///y") == [("ipc:///x", "ipc:///y")]
    with pytest.raises(ValueError, match="one endpoint"):
        servers("tcp://a:1,tcp://b:1", updates="ipc:///y")
    with pytest.raises(ValueError, match="one or more"):
        servers("tcp://a:1,")
    assert peer_pubsub("tcp://10.0.0.2:6690", 6680) == "tcp://10.0.0.2:6680"
    assert peer_pubsub("ipc:///x", 6680, "tcp://h:7000") == "tcp://h:7000"
    with pytest.raises(ValueError, match="ha_peer_pubsub"):
        peer_pubsub("ipc:///x", 6680)


def test_a_pairs_remote_pool_publishes_to_both_brokers_collectors():
    """A worker of a pool given both backends sends each update to both collectors: the
    passive broker keeps it, and publishes it if the active one dies first (docs/ha.md)."""
    from zmqserver.pubsub.publish import Route, pool_route

    assert pool_route("tcp://a:6661", 6670) == Route("tcp://a:6672")
    assert pool_route("tcp://a:6661, tcp://b:6661", 6670) == Route(
        "tcp://a:6672", also=("tcp://b:6672",)
    )
