"""The CHP frames, the server's cache and a subscriber's state, wired together without sockets."""

from __future__ import annotations

import math
import struct

import pytest

from zmqserver.pubsub.agent import Agent
from zmqserver.pubsub.core import Bounds, Hashmap, Refused
from zmqserver.pubsub.frames import (
    HUGZ,
    KTHXBAI,
    KV,
    FrameError,
    decode_icanhaz,
    decode_kv,
    decode_prev,
    decode_properties,
    encode_kv,
    encode_properties,
    hugz,
    subtrees,
    wire_subtree,
)


def kvset(key: bytes, value: bytes, **props: str) -> list[bytes]:
    properties = {name.encode(): text.encode() for name, text in props.items()}
    return encode_kv(KV(key, 0, value, properties, b"u" * 16))


# -- frames -------------------------------------------------------------------------------------


def test_a_kv_round_trips_through_five_frames_with_a_network_order_sequence():
    frames = encode_kv(KV(b"/a", 258, b"v", {b"ttl": b"5"}, b"x" * 16))
    assert frames == [b"/a", struct.pack(">q", 258), b"x" * 16, b"ttl=5\n", b"v"]
    assert decode_kv(frames) == KV(b"/a", 258, b"v", {b"ttl": b"5"}, b"x" * 16)


@pytest.mark.parametrize(
    "frames",
    [[b"k"], [b"", b"", b"", b"", b"v"], [b"k", b"123", b"", b"", b"v"]],
)
def test_malformed_kv_messages_are_refused(frames):
    with pytest.raises(FrameError):
        decode_kv(frames)


def test_properties_are_name_value_lines_and_the_last_newline_is_optional():
    assert encode_properties({b"a": b"1", b"b": b""}) == b"a=1\nb=\n"
    assert decode_properties(b"a=1\nb=x=y") == {b"a": b"1", b"b": b"x=y"}


def test_icanhaz_takes_a_subtree_or_none_as_the_guides_first_clients_send():
    assert decode_icanhaz([b"ICANHAZ?", b"/a/"]) == b"/a/"
    assert decode_icanhaz([b"ICANHAZ?"]) == b""
    with pytest.raises(FrameError):
        decode_icanhaz([b"GIMME"])


def test_subtrees_are_each_prefix_ending_in_a_slash():
    assert subtrees(b"/a/b/c") == [b"", b"/", b"/a/", b"/a/b/"]
    assert subtrees(b"plain") == [b""]
    assert wire_subtree(b"/a/b") == b"/a/"
    assert wire_subtree(b"/a/") == b"/a/"
    assert wire_subtree(b"weather") == b""


# -- the server's cache -------------------------------------------------------------------------


def test_each_update_gets_the_next_sequence_and_an_empty_value_deletes():
    hm = Hashmap()
    first = decode_kv(hm.collect(kvset(b"/a", b"1"), 0.0))
    second = decode_kv(hm.collect(kvset(b"/b", b"2"), 0.0))
    assert (first.sequence, second.sequence) == (1, 2)
    gone = decode_kv(hm.collect(kvset(b"/a", b""), 0.0))
    assert gone.deleted
    assert gone.sequence == 3
    assert hm.get(b"/a") is None
    assert hm.collect(kvset(b"/nothing", b""), 0.0) is None  # nothing to delete: nothing sent


def test_prev_names_the_last_sequence_of_each_subtree():
    hm = Hashmap()
    hm.set(b"/a/x", b"1")
    hm.set(b"/b/y", b"2")
    third = decode_kv(hm.set(b"/a/z", b"3"))
    assert decode_prev(third.properties[b"prev"]) == [2, 2, 1]  # "", "/", "/a/"


def test_ttl_expiry_publishes_a_delete_at_its_deadline():
    hm = Hashmap()
    hm.collect(kvset(b"/t", b"v", ttl="2.5"), 10.0)
    assert hm.next_deadline() == 12.5
    assert hm.expire(12.0) == []
    (out,) = hm.expire(12.5)
    assert decode_kv(out).deleted
    assert hm.next_deadline() == math.inf
    assert len(hm) == 0


def test_an_overwrite_cancels_the_old_ttl():
    hm = Hashmap()
    hm.set(b"/t", b"v", {b"ttl": b"1"}, 0.0)
    hm.set(b"/t", b"w", None, 0.5)
    assert hm.expire(5.0) == []
    assert hm.get(b"/t") == b"w"


def test_bounds_refuse_rather_than_evict():
    hm = Hashmap(Bounds(max_keys=2, max_bytes=60, max_key_length=8, max_value_size=40))
    hm.set(b"/a", b"1")
    hm.set(b"/b", b"2")
    with pytest.raises(Refused, match="max_keys"):
        hm.set(b"/c", b"3")
    hm.set(b"/a", b"again")  # an existing key may change
    with pytest.raises(Refused, match="max_key_length"):
        hm.set(b"/toolongkey", b"1")
    with pytest.raises(Refused, match="max_value_size"):
        hm.set(b"/a", b"x" * 41)
    hm.set(b"/b", b"x" * 40)
    with pytest.raises(Refused, match="max_bytes"):
        hm.set(b"/a", b"x" * 40)
    assert hm.size <= 60


@pytest.mark.parametrize("key", [b"HUGZ", b"KTHXBAI", b"$zmqserver/jobs/x"])
def test_publishers_may_not_write_reserved_keys(key):
    with pytest.raises(Refused, match="reserved"):
        Hashmap().collect(kvset(key, b"v"), 0.0)


def test_a_bad_ttl_is_refused():
    with pytest.raises(Refused, match="ttl"):
        Hashmap().collect(kvset(b"/a", b"v", ttl="soon"), 0.0)


def test_a_snapshot_is_the_subtree_then_kthxbai_with_the_current_sequence():
    hm = Hashmap()
    hm.set(b"/a/1", b"x")
    hm.set(b"/b/1", b"y")
    hm.set(b"/a/2", b"z", {b"ttl": b"10"}, 0.0)
    *entries, end = (decode_kv(frames) for frames in hm.snapshot(b"/a/", 4.0))
    assert [(e.key, e.value) for e in entries] == [(b"/a/1", b"x"), (b"/a/2", b"z")]
    assert entries[1].properties[b"ttl"] == b"6.000"  # what is left, not an absolute time
    assert (end.key, end.sequence, end.value) == (KTHXBAI, 3, b"/a/")


def test_hugz_has_sequence_zero_and_the_last_sequence_as_a_property():
    assert decode_kv(hugz()) == KV(HUGZ, 0)
    beat = decode_kv(hugz(42))
    assert (beat.sequence, beat.properties) == (0, {b"seq": b"42"})


# -- a subscriber against the core --------------------------------------------------------------


def sync(agent: Agent, hm: Hashmap, now: float = 0.0) -> list:
    subtree = decode_icanhaz(agent.request(now))
    out = []
    for frames in hm.snapshot(subtree, now):
        out += agent.on_snapshot(frames, now)
    return out


def test_a_subscriber_drops_what_the_snapshot_holds_and_applies_the_rest():
    hm = Hashmap()
    early = hm.set(b"/a/1", b"x")
    agent = Agent(b"/a/")
    assert [u.key for u in sync(agent, hm)] == [b"/a/1"]
    assert agent.on_live(early, 0.0) == (None, False)  # queued before the snapshot: dropped
    update, resync = agent.on_live(hm.set(b"/a/2", b"y"), 0.0)
    assert update is not None
    assert (update.key, update.value, resync) == (b"/a/2", b"y", False)
    assert agent.map == {b"/a/1": b"x", b"/a/2": b"y"}


def test_updates_to_other_subtrees_are_not_gaps_but_a_missed_one_of_ours_is():
    hm = Hashmap()
    agent = Agent(b"/a/")
    sync(agent, hm)
    hm.set(b"/b/1", b"not ours")  # never reaches a /a/ subscriber: not a gap
    assert agent.on_live(hm.set(b"/a/1", b"1"), 0.0)[1] is False
    hm.set(b"/a/2", b"lost")  # dropped at the HWM
    update, resync = agent.on_live(hm.set(b"/a/3", b"3"), 0.0)
    assert (update, resync) == (None, True)
    assert agent.gaps == 1
    diff = sync(agent, hm)  # the resync brings the missed ones, as a difference
    assert {u.key for u in diff} == {b"/a/2", b"/a/3"}
    assert agent.map == {b"/a/1": b"1", b"/a/2": b"lost", b"/a/3": b"3"}


def test_a_resync_delivers_deletes_for_keys_that_went_away():
    hm = Hashmap()
    hm.set(b"/k", b"v")
    agent = Agent(b"")
    sync(agent, hm)
    hm.set(b"/k", b"")
    (gone,) = sync(agent, hm)
    assert gone.deleted
    assert agent.map == {}


def test_a_prefix_not_ending_in_a_slash_is_filtered_locally():
    hm = Hashmap()
    agent = Agent(b"/a/b")
    assert agent.subtree == b"/a/"
    sync(agent, hm)
    assert agent.on_live(hm.set(b"/a/x", b"other"), 0.0) == (None, False)
    update, resync = agent.on_live(hm.set(b"/a/bee", b"mine"), 0.0)
    assert update is not None
    assert not resync


def test_silence_and_a_slow_snapshot_each_time_out():
    agent = Agent(b"", 0.0, silence=3.0, sync_timeout=5.0)
    agent.request(0.0)
    assert agent.next_deadline() == 5.0
    assert agent.timed_out(5.0)
    hm = Hashmap()
    sync(agent, hm, 6.0)
    assert agent.next_deadline() == 9.0
    agent.on_live(hugz(), 8.0)  # HUGZ keep it alive
    assert not agent.timed_out(10.0)
    assert agent.timed_out(11.0)
    assert agent.silences == 1


def test_a_late_join_whose_first_hugz_is_ahead_of_the_snapshot_resyncs_once():
    """The SUB's subscription took effect after the snapshot: what the server published in
    between reached nobody, and the first HUGZ's ``seq`` says so. One more snapshot brings the
    missed update; from then on the subscription is known to be in effect (a busy server's
    HUGZ, always ahead, starts no more snapshots)."""
    hm = Hashmap()
    agent = Agent(b"/w/")
    sync(agent, hm)
    hm.set(b"/w/1", b"missed")  # published before the subscription was in effect
    assert agent.on_live(hugz(hm.sequence), 1.0) == (None, True)
    assert agent.gaps == 1
    (update,) = sync(agent, hm, 1.0)
    assert (update.key, update.value) == (b"/w/1", b"missed")
    hm.set(b"/other/x", b"elsewhere")  # the server moves on, in a subtree not ours
    assert agent.on_live(hugz(hm.sequence), 2.0) == (None, False)
    assert agent.gaps == 1


def test_a_first_hugz_not_ahead_or_without_seq_or_an_update_first_joins_quietly():
    hm = Hashmap()
    hm.set(b"/w/1", b"v")
    for first in (hugz(hm.sequence), hugz(), hugz(hm.sequence - 1)):
        agent = Agent(b"/w/")
        sync(agent, hm)
        assert agent.on_live(first, 1.0) == (None, False)
        assert agent.gaps == 0
    beat = hugz()
    beat[3] = b"seq=junk\n"
    agent = Agent(b"/w/")
    sync(agent, hm)
    assert agent.on_live(beat, 1.0) == (None, False)
    # An update read first joins too; its ``prev`` vouches for what came before it.
    agent = Agent(b"/w/")
    sync(agent, hm)
    update, resync = agent.on_live(hm.set(b"/w/2", b"w"), 1.0)
    assert update is not None
    assert not resync
    assert agent.on_live(hugz(hm.sequence + 5), 2.0) == (None, False)
