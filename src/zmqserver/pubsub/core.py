"""The pub-sub server's sans-IO core: a bounded last-value cache numbered by one sequence.

Rule 1: no sockets, no clock, no logging. Frames and ``now`` come in; frames to publish (and to
answer a snapshot with) go out, with the reason when an update is refused. The component
(component.py) does the I/O and logs the refusals, throttled.

What it keeps, for the Clustered Hashmap Protocol (RFC 12):

* the last value of each key (with its sequence and properties), within :class:`Bounds` on the
  number of keys, the bytes held, a key's length and a value's size. A full cache refuses a
  new key rather than evicting an old one: evicting would silently change what late joiners
  see, refusing is logged and visible to the publisher's operator.
* one sequence, strictly increasing over every update it publishes (sets, deletes, expiries);
* ``ttl`` deadlines: an expired key is deleted and the delete is published like any other;
* for each subtree, the sequence of its last update, which each KVPUB carries in its ``prev``
  property so that a subscriber of any subtree can tell it missed one (frames.subtrees).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from .frames import (
    PREV,
    RESERVED_KEYS,
    TTL,
    FrameError,
    decode_kv,
    encode_properties,
    encode_raw,
    kthxbai,
    subtrees,
)

#: Keys that only the server writes: its own events (events.py).
SERVER_PREFIX: Final = b"$zmqserver/"


@dataclass(frozen=True, slots=True)
class Bounds:
    """What the cache may hold; 0 means no bound (for max_keys and max_bytes only)."""

    max_keys: int = 100_000
    max_bytes: int = 64 * 1024 * 1024
    max_key_length: int = 256
    max_value_size: int = 1024 * 1024


class Refused(Exception):
    """An update the core will not take; the message says why (for a throttled log line)."""


class _Entry:
    __slots__ = ("sequence", "value", "properties", "expires", "size")

    def __init__(
        self, sequence: int, value: bytes, properties: bytes, expires: float, size: int
    ) -> None:
        self.sequence = sequence
        self.value = value
        self.properties = properties
        self.expires = expires
        self.size = size


class Hashmap:
    """The server's map: take updates, publish them numbered, answer snapshots, expire keys."""

    def __init__(self, bounds: Bounds | None = None) -> None:
        self.bounds = bounds or Bounds()
        #: The sequence of the last update published (0: none yet).
        self.sequence = 0
        self._map: dict[bytes, _Entry] = {}
        self._bytes = 0
        self._expiries: list[tuple[float, bytes, int]] = []  # (when, key, sequence), a heap
        self._last_in: dict[bytes, int] = {}  # subtree -> sequence of its last update

    # -- what it holds ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._map)

    @property
    def size(self) -> int:
        """Bytes held: keys, values and properties."""
        return self._bytes

    def get(self, key: bytes) -> bytes | None:
        entry = self._map.get(key)
        return None if entry is None else entry.value

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every key and its value (a copy: the caller may change the map meanwhile)."""
        return [(key, entry.value) for key, entry in self._map.items()]

    # -- updates ------------------------------------------------------------------------------

    def collect(self, frames: list[bytes], now: float) -> list[bytes] | None:
        """A KVSET from the collector: the KVPUB to publish, or None (a delete of nothing).

        Raises :class:`Refused` (bad frames, a reserved key, a bound) with the reason.
        """
        try:
            kv = decode_kv(frames)
        except FrameError as exc:
            raise Refused(f"bad update: {exc}") from None
        key = kv.key
        if key in RESERVED_KEYS or key.startswith(SERVER_PREFIX):
            raise Refused(f"update of reserved key {key[:64]!r}")
        return self.set(key, kv.value, kv.properties, now, kv.uuid)

    def set(
        self,
        key: bytes,
        value: bytes,
        properties: Mapping[bytes, bytes] | None = None,
        now: float = 0.0,
        uuid: bytes = b"",
        sequence: int = 0,
    ) -> list[bytes] | None:
        """Store (or, with an empty value, delete) ``key`` and return the KVPUB to publish.

        ``properties`` may hold ``ttl`` (seconds, a decimal): the key is deleted when it runs
        out. None is returned for a delete of a key the map does not hold (nothing changed).
        ``sequence`` (a replica's, replica.py): store the update under the sequence its server
        gave it instead of the next one of ours, and take it as our last if it is higher.
        """
        bounds = self.bounds
        if not key:
            raise Refused("an empty key")
        if len(key) > bounds.max_key_length:
            raise Refused(f"a key of {len(key)} bytes (max_key_length {bounds.max_key_length})")
        if len(value) > bounds.max_value_size:
            raise Refused(
                f"a value of {len(value)} bytes for {key[:64]!r} "
                f"(max_value_size {bounds.max_value_size})"
            )
        props = dict(properties or {})
        props.pop(PREV, None)  # ours to set
        expires = math.inf
        ttl = props.get(TTL)
        if ttl is not None:
            try:
                seconds = float(ttl)
            except ValueError:
                raise Refused(f"a ttl of {ttl[:32]!r} for {key[:64]!r}") from None
            if not math.isfinite(seconds) or seconds < 0:
                raise Refused(f"a ttl of {ttl[:32]!r} for {key[:64]!r}")
            if seconds > 0:
                expires = now + seconds
            else:
                del props[TTL]  # ttl=0: no expiry (the guide's clients send it)
        old = self._map.get(key)
        if not value:
            if old is None:
                return None
            return self._delete(key, old, props, uuid, sequence)
        stored = encode_properties(props)
        size = len(key) + len(value) + len(stored)
        grown = self._bytes + size - (old.size if old is not None else 0)
        if old is None and bounds.max_keys and len(self._map) >= bounds.max_keys:
            raise Refused(f"new key {key[:64]!r}: the cache holds max_keys ({bounds.max_keys})")
        if bounds.max_bytes and grown > bounds.max_bytes:
            raise Refused(f"{key[:64]!r}: the cache would exceed max_bytes ({bounds.max_bytes})")
        sequence = self._next(sequence)
        self._map[key] = _Entry(sequence, value, stored, expires, size)
        self._bytes = grown
        if expires != math.inf:
            heapq.heappush(self._expiries, (expires, key, sequence))
        return self._kvpub(key, sequence, value, props, uuid)

    def _delete(
        self,
        key: bytes,
        old: _Entry,
        props: dict[bytes, bytes],
        uuid: bytes,
        sequence: int = 0,
    ) -> list[bytes]:
        del self._map[key]
        self._bytes -= old.size
        props.pop(TTL, None)
        return self._kvpub(key, self._next(sequence), b"", props, uuid)

    def _next(self, given: int = 0) -> int:
        if given:
            self.sequence = max(self.sequence, given)
            return given
        self.sequence += 1
        return self.sequence

    def _kvpub(
        self, key: bytes, sequence: int, value: bytes, props: dict[bytes, bytes], uuid: bytes
    ) -> list[bytes]:
        last_in = self._last_in
        parts = subtrees(key)
        prev = b" ".join(b"%d" % last_in.get(subtree, 0) for subtree in parts)
        # Forgetting a subtree's last sequence only makes its next prev 0: a gap that goes
        # unnoticed, never one reported falsely. So the table is bounded by a plain reset.
        if len(last_in) > 4 * (self.bounds.max_keys or 100_000):
            last_in.clear()
        for subtree in parts:
            last_in[subtree] = sequence
        props[PREV] = prev
        return encode_raw(key, sequence, value, encode_properties(props), uuid)

    # -- time ---------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When :meth:`expire` has a key to delete (infinity: none)."""
        expiries = self._expiries
        while expiries:
            when, key, sequence = expiries[0]
            entry = self._map.get(key)
            if entry is not None and entry.sequence == sequence:
                return when
            heapq.heappop(expiries)  # overwritten or deleted since: forget it
        return math.inf

    def expire(self, now: float) -> list[list[bytes]]:
        """Delete the keys whose ttl ran out by ``now``; the KVPUBs that say so."""
        out: list[list[bytes]] = []
        while self.next_deadline() <= now:
            _, key, _ = heapq.heappop(self._expiries)
            entry = self._map[key]
            out.append(self._delete(key, entry, {}, b""))
        return out

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot(self, subtree: bytes, now: float) -> list[list[bytes]]:
        """KVSYNC for each key under ``subtree`` (a prefix), then KTHXBAI.

        A key with a ttl carries the seconds it has left (not the absolute time the guide's
        server stores: the client's clock is not ours).
        """
        out: list[list[bytes]] = []
        for key, entry in self._map.items():
            if not key.startswith(subtree):
                continue
            properties = entry.properties
            if entry.expires != math.inf:
                left = b"ttl=%.3f\n" % max(0.0, entry.expires - now)
                properties = b"".join(
                    line + b"\n"
                    for line in properties.split(b"\n")
                    if line and not line.startswith(b"ttl=")
                )
                properties += left
            out.append(encode_raw(key, entry.sequence, entry.value, properties))
        out.append(kthxbai(self.sequence, subtree))
        return out
