"""The reply cache on its own: hits, the two bounds (entries and bytes), least recently used out.

It has no time-to-live: an entry stays until newer ones push it out (so none of these tests
needs a clock).
"""

from __future__ import annotations

from zmqserver.broker.replycache import ReplyCache


def key(n: int) -> tuple[bytes, int]:
    return (b"client", n)


def test_a_kept_reply_is_found_by_its_key_and_others_are_not():
    cache = ReplyCache(entries=4, max_bytes=1000)
    cache.put(key(1), [b"", b"one"])
    assert cache.get(key(1)) == [b"", b"one"]
    assert cache.get(key(2)) is None
    assert cache.get((b"other client", 1)) is None  # the key is the client and its request id
    assert key(1) in cache
    assert (len(cache), cache.bytes) == (1, 3)


def test_the_entry_bound_evicts_the_least_recently_used():
    cache = ReplyCache(entries=2, max_bytes=1000)
    cache.put(key(1), [b"a"])
    cache.put(key(2), [b"b"])
    assert cache.get(key(1)) == [b"a"]  # a hit makes 1 the most recently used
    cache.put(key(3), [b"c"])
    assert key(2) not in cache
    assert cache.get(key(1)) == [b"a"]
    assert cache.get(key(3)) == [b"c"]
    assert len(cache) == 2


def test_the_byte_bound_evicts_the_oldest_until_it_holds():
    cache = ReplyCache(entries=100, max_bytes=10)
    cache.put(key(1), [b"1234"])
    cache.put(key(2), [b"12", b"34"])  # all frames count
    assert cache.bytes == 8
    cache.put(key(3), [b"123456"])
    # 14 bytes: the oldest goes, and 4 + 6 fit the bound exactly.
    assert key(1) not in cache
    assert (key(2) in cache, key(3) in cache, cache.bytes) == (True, True, 10)
    cache.put(key(4), [b"1"])
    assert (key(2) in cache, cache.bytes) == (False, 7)


def test_a_reply_bigger_than_the_byte_bound_is_not_kept():
    cache = ReplyCache(entries=100, max_bytes=10)
    cache.put(key(1), [b"small"])
    cache.put(key(2), [b"x" * 11])
    assert key(2) not in cache
    assert key(1) in cache  # and nothing was evicted for it
    assert cache.bytes == 5


def test_no_entries_means_no_cache():
    cache = ReplyCache(entries=0, max_bytes=1000)
    cache.put(key(1), [b"reply"])
    assert len(cache) == 0
    assert cache.get(key(1)) is None


def test_new_bounds_apply_from_the_next_put():
    cache = ReplyCache(entries=10, max_bytes=1000)
    for n in range(5):
        cache.put(key(n), [b"r"])
    cache.entries = 2  # a reload
    assert len(cache) == 5
    cache.put(key(5), [b"r"])
    assert len(cache) == 2
    assert [n for n in range(6) if key(n) in cache] == [4, 5]
    assert cache.bytes == 2


def test_putting_a_key_again_replaces_its_reply_and_its_size():
    cache = ReplyCache(entries=10, max_bytes=1000)
    cache.put(key(1), [b"first"])
    cache.put(key(1), [b"second!"])
    assert cache.get(key(1)) == [b"second!"]
    assert (len(cache), cache.bytes) == (1, 7)
