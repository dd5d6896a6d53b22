"""Who may connect: the pure policy, from the frames of a ZAP request to the frames of its reply.

Rule 1 (policy apart from driver, as in pyzmq's ``zmq.auth``): the decision about a connection is
:func:`zap_decide`, a pure function from the frames of a ZAP request (ZeroMQ RFC 27/ZAP) to the
frames of its reply. It reads no files, opens no sockets, keeps no state and does not import zmq,
so every rule below is tested without ZeroMQ. Key files are read once at start-up (and again on
HUP) into the frozen policy objects defined here, by keys.py; the driver in zap.py answers ZAP
requests with them. The config checks (zmqserver.config.validate) use the same parsers, so a
list that passes validation is the list the policy enforces.

Addresses are checked at connection time only, against IP addresses and CIDR ranges. The peer
address of a ``ipc://`` connection is its process credentials, not an IP: allow/deny lists do not
apply to it; file permissions (and, for the private worker socket, a user id check) do.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigError

ZAP_VERSION = b"1.0"
#: RFC 27 status codes.
ZAP_OK, ZAP_DENIED, ZAP_ERROR = b"200", b"400", b"500"

#: A CURVE key is 32 bytes: 40 characters in Z85.
KEY_BYTES = 32
#: Z85's 85 characters (RFC 32), in digit order.
_Z85_CHARS = (
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def encode_key(raw: bytes) -> str:
    """The Z85 text (ZeroMQ RFC 32) of a 32-byte key: what key files, logs and User-Id show.

    The same algorithm as pyzmq's ``zmq.utils.z85.encode``, written out (a few lines) so that the
    policy needs no zmq import; a test compares the two.
    """
    if len(raw) % 4:
        raise ValueError(f"Z85 encodes whole 4-byte words, got {len(raw)} bytes")
    out = bytearray()
    for (word,) in struct.iter_unpack(">I", raw):
        chunk = bytearray(5)
        for i in range(4, -1, -1):
            word, digit = divmod(word, 85)
            chunk[i] = _Z85_CHARS[digit]
        out += chunk
    return out.decode("ascii")


# -- addresses ------------------------------------------------------------------------------------


def _normalize(network: Network) -> Network:
    """IPv4-mapped IPv6 ranges (``::ffff:10.0.0.0/104``) become the IPv4 range they stand for."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


def parse_networks(entries: Iterable[str], option: str) -> tuple[Network, ...]:
    """IP addresses and CIDR ranges, IPv4 or IPv6; ``ConfigError`` naming the bad entry."""
    networks = []
    for entry in entries:
        text = str(entry).strip()
        try:
            network = ipaddress.ip_network(text)
        except ValueError as exc:
            if "host bits set" in str(exc):
                meant = ipaddress.ip_network(text, strict=False)
                raise ConfigError(
                    f"{option}: {text!r} has host bits set (did you mean '{meant}'?)"
                ) from None
            raise ConfigError(
                f"{option}: {text!r} is not an IP address or CIDR range "
                "(e.g. 192.168.1.0/24, 2001:db8::/32)"
            ) from None
        networks.append(_normalize(network))
    return tuple(networks)


def peer_ip(address: str) -> Address | None:
    """The IP of a ZAP request's address, IPv4-mapped IPv6 as IPv4; None if it is not an IP."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def ipc_uid(address: str) -> int | None:
    """The user id in libzmq's address of an ipc:// peer (``localhost:UID:GID:PID`` on Linux)."""
    parts = address.split(":")
    if len(parts) == 4 and parts[0] == "localhost" and parts[1].isdigit():
        return int(parts[1])
    return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Allow and deny lists for one port.

    With an allow list, only addresses in it get in; addresses in the deny list never do. A range
    in both lists is refused at start-up (:meth:`build`): "allow 10/8, deny 10.1/16" reads
    differently depending on which list wins, and a security rule must not need a tie-breaker.
    """

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    @classmethod
    def build(
        cls, allow: Iterable[str], deny: Iterable[str], allow_name: str, deny_name: str
    ) -> AddressPolicy:
        allowed = parse_networks(allow, allow_name)
        denied = parse_networks(deny, deny_name)
        for a in allowed:
            for d in denied:
                if a.version == d.version and a.overlaps(d):
                    both = d if d.prefixlen >= a.prefixlen else a
                    raise ConfigError(
                        f"{allow_name} {str(a)!r} and {deny_name} {str(d)!r} both match {both}: "
                        "an address may be allowed or denied, not both"
                    )
        return cls(allowed, denied)

    @property
    def active(self) -> bool:
        return bool(self.allow or self.deny)

    def refuse(self, ip: Address) -> str | None:
        """Why ``ip`` may not connect, or None if it may."""
        if any(ip in network for network in self.deny):
            return f"address {ip} is denied"
        if self.allow and not any(ip in network for network in self.allow):
            return f"address {ip} is not in the allow list"
        return None


# -- ZAP: the decision (sans-IO) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortPolicy:
    """Everything the ZAP handler knows about one of the broker's ports."""

    port: str  # "frontend" or "backend", for log messages
    curve: bool = False
    #: CURVE: admit any client key (encryption without client authentication).
    allow_any: bool = False
    #: CURVE: raw public keys admitted from anywhere the address rules allow.
    keys: frozenset[bytes] = frozenset()
    #: CURVE: raw public keys admitted only from local (ipc://) peers: the forked workers' key.
    local_keys: frozenset[bytes] = frozenset()
    #: CURVE: a Binary Star peer's key (ha_peer_key), admitted as a client's: its copy of our
    #: pub-sub map comes through our client ports. Apart from the key directory, so that a
    #: HUP re-reading the directory keeps it.
    peer_keys: frozenset[bytes] = frozenset()
    addresses: AddressPolicy = AddressPolicy()
    #: ipc:// peers must run as one of these users; None admits any local user.
    local_uids: frozenset[int] | None = None


@dataclass(frozen=True, slots=True)
class ZapOutcome:
    """What :func:`zap_decide` answered, and why (for the driver's log)."""

    reply: list[bytes] | None  # None: too malformed to answer
    allowed: bool
    reason: str
    port: str = "?"
    address: str = ""
    user_id: str = ""


def zap_decide(request: Sequence[bytes], policies: Mapping[bytes, PortPolicy]) -> ZapOutcome:
    """Answer one ZAP request (RFC 27), given as its frames without the ROUTER envelope.

    Request: version, request id, domain, address, routing id, mechanism, credentials...
    Reply: version, request id, status code, status text, user id, metadata.
    The checks, in order: the domain names one of our ports; the address is allowed (TCP) or the
    local peer runs as an allowed user (ipc); the mechanism is the port's; a CURVE key is known.
    """
    if len(request) < 6:
        return ZapOutcome(None, False, f"malformed ZAP request of {len(request)} frames")
    version, request_id, domain, raw_address, _routing_id, mechanism, *credentials = (
        bytes(frame) for frame in request
    )
    address = raw_address.decode("utf-8", "replace")

    def answer(code: bytes, text: str, port: str = "?", user_id: str = "") -> ZapOutcome:
        reply = [ZAP_VERSION, request_id, code, text.encode(), user_id.encode(), b""]
        return ZapOutcome(reply, code == ZAP_OK, text, port, address, user_id)

    if version != ZAP_VERSION:
        return answer(ZAP_ERROR, f"unsupported ZAP version {version!r}")
    policy = policies.get(domain)
    if policy is None:
        return answer(ZAP_DENIED, f"unknown ZAP domain {domain!r}")
    port = policy.port
    ip = peer_ip(address)
    if ip is not None:
        refusal = policy.addresses.refuse(ip)
        if refusal is not None:
            return answer(ZAP_DENIED, refusal, port)
    elif address and ipc_uid(address) is None:
        # Neither an IP nor libzmq's ipc credentials: nothing the rules can vouch for.
        return answer(ZAP_DENIED, f"unrecognised peer address {address!r}", port)
    elif policy.local_uids is not None and ipc_uid(address) not in policy.local_uids:
        return answer(ZAP_DENIED, "local peer runs as another user", port)
    if mechanism == b"NULL" and not policy.curve:
        return answer(ZAP_OK, "OK", port)
    if mechanism != b"CURVE" or not policy.curve:
        want = "CURVE" if policy.curve else "NULL"
        shown = mechanism.decode("ascii", "replace")
        return answer(ZAP_DENIED, f"mechanism {shown} refused; this port uses {want}", port)
    if len(credentials) != 1 or len(credentials[0]) != KEY_BYTES:
        return answer(ZAP_DENIED, "malformed CURVE credentials", port)
    key = credentials[0]
    if (
        policy.allow_any
        or key in policy.keys
        or key in policy.peer_keys
        or (ip is None and key in policy.local_keys)
    ):
        return answer(ZAP_OK, "OK", port, user_id=encode_key(key))
    return answer(ZAP_DENIED, f"unknown CURVE key {encode_key(key)}", port)
