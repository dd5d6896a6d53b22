"""The CHP frames (ZeroMQ RFC 12, the guide's Clone pattern): bytes in, messages out.

Rule 1: no sockets, no clock, no state. Everything here is a pure function of frames, so a
C or Go client can be checked against the same tests (tests/unit/test_pubsub_frames.py).

Every key-value message has five frames::

    key | sequence (8 bytes, network order, signed) | uuid (16 bytes or empty)
        | properties ("name=value\\n"...) | value

The snapshot request is ``["ICANHAZ?", subtree]`` (the guide's early clients send no subtree
frame: that means the whole map). KTHXBAI, HUGZ and the update messages share the five-frame
shape; only the key tells them apart.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

ICANHAZ: Final = b"ICANHAZ?"
KTHXBAI: Final = b"KTHXBAI"
HUGZ: Final = b"HUGZ"

#: Keys only the server sends: an update on one of these from a publisher is refused.
RESERVED_KEYS: Final = frozenset({KTHXBAI, HUGZ, ICANHAZ})

#: The routing id a Binary Star server's copy of its peer's map asks for snapshots under
#: (pubsub/peer.py), followed by random bytes. The peer tells it from a subscriber's: a
#: subscriber asking a server that is not active is a client's vote for a failover (clonesrv6),
#: the peer's copy is not, nor a request dropped.
PEER_COPY_ID: Final = b"zmqserver-peer-copy:"

#: The property that asks the server to delete a key after this many seconds.
TTL: Final = b"ttl"
#: The property the server adds to each KVPUB: for the key's subtrees ("", "/", "/a/", ... one
#: per "/" in the key, shortest first), the sequence of the previous update in that subtree, so a
#: subscriber of any subtree can tell that it missed one (docs/protocol.md).
PREV: Final = b"prev"
#: HUGZ's property: the sequence of the server's last update (see ``Agent.on_live``).
SEQ: Final = b"seq"

_SEQ = struct.Struct("!q")


class FrameError(ValueError):
    """A message that is not CHP: the server drops it (with a throttled log line)."""


@dataclass(frozen=True, slots=True)
class KV:
    """One key-value message: KVPUB, KVSYNC, KVSET, KTHXBAI or HUGZ (the key says which)."""

    key: bytes
    sequence: int = 0
    value: bytes = b""
    properties: Mapping[bytes, bytes] = field(default_factory=dict)
    uuid: bytes = b""

    @property
    def deleted(self) -> bool:
        """An empty value deletes the key (RFC 12)."""
        return not self.value


def encode_properties(properties: Mapping[bytes, bytes]) -> bytes:
    """``name=value\\n`` lines, in the mapping's order."""
    return b"".join(b"%s=%s\n" % (name, value) for name, value in properties.items())


def decode_properties(data: bytes) -> dict[bytes, bytes]:
    """The properties frame as a dict; a line without ``=`` is a name with an empty value.

    Lenient on purpose: the guide's kvmsg ends the last line with or without a newline.
    """
    properties: dict[bytes, bytes] = {}
    for line in data.split(b"\n"):
        if line:
            name, _, value = line.partition(b"=")
            properties[name] = value
    return properties


def encode_kv(kv: KV) -> list[bytes]:
    return [kv.key, _SEQ.pack(kv.sequence), kv.uuid, encode_properties(kv.properties), kv.value]


def encode_raw(
    key: bytes, sequence: int, value: bytes, properties: bytes = b"", uuid: bytes = b""
) -> list[bytes]:
    """Five frames from parts already encoded (the server's hot path: no KV object)."""
    return [key, _SEQ.pack(sequence), uuid, properties, value]


def decode_sequence(data: bytes) -> int:
    """8 bytes, network order (CHP); also the 4 bytes of the guide's first Clone models."""
    if len(data) == 8:
        return int(_SEQ.unpack(data)[0])
    if len(data) == 4:
        return int(struct.unpack("!l", data)[0])
    if not data:
        return 0
    raise FrameError(f"a sequence frame of {len(data)} bytes (8 expected)")


def decode_kv(frames: Sequence[bytes]) -> KV:
    """Five frames as a :class:`KV`; :class:`FrameError` if they are not."""
    if len(frames) != 5:
        raise FrameError(f"{len(frames)} frames (5 expected)")
    key, sequence, uuid, properties, value = (bytes(frame) for frame in frames)
    if not key:
        raise FrameError("an empty key")
    return KV(key, decode_sequence(sequence), value, decode_properties(properties), uuid)


def encode_icanhaz(subtree: bytes = b"") -> list[bytes]:
    return [ICANHAZ, subtree]


def decode_icanhaz(frames: Sequence[bytes]) -> bytes:
    """The subtree a snapshot request asks for (frames without the ROUTER's routing id)."""
    if not frames or bytes(frames[0]) != ICANHAZ or len(frames) > 2:
        raise FrameError("not an ICANHAZ? request")
    return bytes(frames[1]) if len(frames) == 2 else b""


def kthxbai(sequence: int, subtree: bytes) -> list[bytes]:
    """The end of a snapshot: the sequence it is current to, and the subtree it covers."""
    return encode_raw(KTHXBAI, sequence, subtree)


def hugz(last: int = 0) -> list[bytes]:
    """The heartbeat: sequence 0, so a client that keeps only newer sequences ignores it.

    ``last`` (the server's last sequence) goes in a ``seq`` property: a subscriber whose SUB
    subscription took effect only after its snapshot learns from it whether it missed updates.
    """
    return encode_raw(HUGZ, 0, b"", b"seq=%d\n" % last if last else b"")


def subtrees(key: bytes) -> list[bytes]:
    """The subtrees ``key`` belongs to, shortest first: ``""``, then each prefix ending in "/".

    ``b"/a/b/c"`` -> ``["", "/", "/a/", "/a/b/"]``; a subscriber of subtree ``s`` reads entry
    ``s.count(b"/")`` of a KVPUB's ``prev`` property.
    """
    out = [b""]
    start = 0
    while True:
        index = key.find(b"/", start)
        if index < 0:
            return out
        out.append(key[: index + 1])
        start = index + 1


def decode_prev(value: bytes) -> list[int]:
    """The ``prev`` property's sequences (space-separated decimals); [] if malformed."""
    try:
        return [int(part) for part in value.split()]
    except ValueError:
        return []


def wire_subtree(prefix: bytes) -> bytes:
    """The subtree to subscribe to for ``prefix``: itself if it ends in "/" (or is empty), else
    the longest such prefix of it (the subscriber then filters by ``prefix`` itself), so the
    ``prev`` property can vouch for every update the subscriber should have seen."""
    if not prefix or prefix.endswith(b"/"):
        return prefix
    return prefix[: prefix.rfind(b"/") + 1]
