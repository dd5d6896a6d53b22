"""Who may talk to the broker: CURVE keys, ZAP decisions and address allow/deny lists.

Rule 1 (policy apart from driver, as in pyzmq's ``zmq.auth``): the decision about a connection is
:func:`zap_decide`, a pure function from the frames of a ZAP request (ZeroMQ RFC 27/ZAP) to the
frames of its reply. It reads no files, opens no sockets and keeps no state, so every rule below is
tested without ZeroMQ. Key files are read once at start-up (and again on HUP) into frozen policy
objects; the thin :class:`ServerSecurity` driver answers ZAP requests from a ROUTER socket that the
master polls in its one event loop, next to the frontend and backend.

Why the event loop and not pyzmq's ``ThreadAuthenticator``: the loop already sleeps in
``zmq_poll``; one more socket costs nothing, and a policy that only the loop thread reads needs no
lock when HUP swaps it. A ZAP request waits at most one loop turn, and the loop never blocks on
anything but the poll.

How libzmq uses this (4.3): a server socket with ``curve_server`` asks the ZAP handler bound at
``inproc://zeromq.zap.01`` in the *same context* about every CURVE handshake; for the NULL
mechanism it asks only if the socket has a ``zap_domain``. The request carries the domain (which
of our sockets), the peer's address (an IP for TCP; ``localhost:UID:GID:PID`` for ``ipc://`` on
Linux) and, for CURVE, the client's long-term public key, already proven by the handshake. A 200
reply admits the connection and its User-Id (here: the client's Z85 public key) is attached to
every message read from it; anything else closes the connection before a single message reaches
the broker. ``ZAP_ENFORCE_DOMAIN`` makes a missing handler refuse connections rather than admit
them.

Addresses are checked at connection time only, against IP addresses and CIDR ranges. The peer
address of a ``ipc://`` connection is its process credentials, not an IP: allow/deny lists do not
apply to it; file permissions (and, for the private worker socket, a user id check) do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import ipaddress
import logging
import os
import shutil
import stat
import struct
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.auth
from zmq.utils import z85

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("zmqserver.security")

#: Where libzmq sends ZAP requests (RFC 27): fixed by the spec, one handler per context.
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
#: RFC 27 status codes.
ZAP_OK, ZAP_DENIED, ZAP_ERROR = b"200", b"400", b"500"

KEY_BYTES = 32
KEY_Z85 = 40
_Z85_ALPHABET = frozenset(z85.Z85CHARS)

#: The ipc:// endpoint local workers use, inside a private directory of its own.
LOCAL_SOCKET = "workers"
#: Longest usable ipc:// path: a sockaddr_un path holds 107 bytes plus the NUL.
_MAX_IPC_PATH = 107
#: A refusal is logged once per (port, address, reason) in this many seconds: a refused CURVE
#: client reconnects every 100 ms by default and must not flood the log.
DENIAL_LOG_INTERVAL = 60.0
_THROTTLE_ENTRIES = 4096
#: ZAP requests answered per wake-up before the loop looks at its other sockets.
ZAP_BATCH = 256

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# -- keys -----------------------------------------------------------------------------------------


def decode_key(text: bytes | str, what: str) -> bytes:
    """The 32 raw bytes of a Z85-encoded CURVE key; ``ConfigError`` naming ``what`` if not one."""
    data = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    if len(data) != KEY_Z85:
        raise ConfigError(
            f"{what}: a CURVE key is {KEY_Z85} Z85 characters ({KEY_BYTES} bytes), "
            f"got {len(data)} characters"
        )
    if not set(data) <= _Z85_ALPHABET:
        raise ConfigError(f"{what}: not a Z85-encoded CURVE key (characters outside Z85)")
    try:
        raw = z85.decode(data)
    except (ValueError, KeyError, OverflowError, struct.error) as exc:
        raise ConfigError(f"{what}: not a Z85-encoded CURVE key ({exc})") from None
    return bytes(raw)


def encode_key(raw: bytes) -> str:
    """The Z85 text of a 32-byte key (what key files, logs and User-Id show)."""
    return bytes(z85.encode(raw)).decode("ascii")


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair, both halves Z85-encoded (40 ASCII bytes each)."""

    public: bytes
    secret: bytes = dataclasses.field(repr=False)

    @classmethod
    def generate(cls) -> KeyPair:
        public, secret = zmq.curve_keypair()
        return cls(bytes(public), bytes(secret))


def _check_private(path: Path, what: str) -> None:
    """Refuse a secret key file that other users can read or write."""
    mode = path.stat().st_mode
    if mode & 0o007:  # any permission for "other"; a group may be trusted on purpose
        raise ConfigError(
            f"{what}: {path} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
            f"a secret key must be private: chmod 600 {path}"
        )


def _read_certificate(path: Path, what: str) -> tuple[bytes, bytes | None]:
    if not path.exists():
        raise ConfigError(f"{what}: {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"{what}: {path} is not a file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what}: cannot read a CURVE certificate from {path}: {exc}") from None
    return public, secret


def load_secret_key(path: str | os.PathLike[str], what: str) -> KeyPair:
    """Read a secret certificate (``zmqserver keygen``'s ``.key_secret``) and check it.

    Refused, each with a message naming ``what`` and the file: a missing file, one readable by
    other users, a file without a ``secret-key`` (the public half given by mistake), keys that are
    not 40 Z85 characters, and a public key that does not belong to the secret key.
    """
    file = Path(path)
    public, secret = _read_certificate(file, what)
    if secret is None:
        raise ConfigError(
            f"{what}: {file} has no secret-key (is it the public .key file? "
            "give the .key_secret file)"
        )
    _check_private(file, what)
    decode_key(public, f"{what}: {file}: public-key")
    decode_key(secret, f"{what}: {file}: secret-key")
    if bytes(zmq.curve_public(secret)) != bytes(public):
        raise ConfigError(f"{what}: {file}: the public-key does not belong to the secret-key")
    return KeyPair(bytes(public), bytes(secret))


def load_public_key(path: str | os.PathLike[str], what: str) -> bytes:
    """The raw 32 bytes of the public key in a certificate file (public or secret)."""
    file = Path(path)
    public, _ = _read_certificate(file, what)
    return decode_key(public, f"{what}: {file}: public-key")


def load_key_dir(path: str | os.PathLike[str], what: str) -> frozenset[bytes]:
    """The public keys of every ``*.key`` file in a directory (the czmq/pyzmq convention).

    The directory must not be writable by other users: whoever can add a file there can let
    themselves in. One bad file refuses the whole directory rather than silently skipping a key
    the operator thinks is allowed.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ConfigError(f"{what}: {directory} is not a directory")
    if directory.stat().st_mode & stat.S_IWOTH:
        raise ConfigError(
            f"{what}: {directory} is writable by every user, who could add their own key: "
            f"chmod o-w {directory}"
        )
    keys = set()
    for file in sorted(directory.glob("*.key")):
        if file.stat().st_mode & stat.S_IWOTH:
            raise ConfigError(f"{what}: {file} is writable by every user: chmod o-w {file}")
        keys.add(load_public_key(file, what))
    return frozenset(keys)


_SECRET_BANNER = """\
#   ****  Generated on {now} by zmqserver keygen  ****
#   ZeroMQ CURVE **Secret** Certificate
#   Keep this file private (mode 0600). Give others the .key file, never this one.

"""
_PUBLIC_BANNER = """\
#   ****  Generated on {now} by zmqserver keygen  ****
#   ZeroMQ CURVE Public Certificate
#   Give this file to the peers that must recognise this key (e.g. the server's
#   curve_client_keys_dir); check its contents when it changes hands.

"""


def _certificate(banner: str, pair: KeyPair, with_secret: bool) -> bytes:
    # The ZPL certificate layout of czmq's zcert and pyzmq's zmq.auth.create_certificates, so
    # either tool (and zmq.auth.load_certificate) reads what keygen writes.
    now = datetime.datetime.now().isoformat(sep=" ", timespec="seconds")
    lines = [banner.format(now=now), "metadata\n", "curve\n"]
    lines.append(f'    public-key = "{pair.public.decode()}"\n')
    if with_secret:
        lines.append(f'    secret-key = "{pair.secret.decode()}"\n')
    return "".join(lines).encode()


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite a key (a deployed key replaced by accident locks everyone out), and
    # the mode is set at creation, so the secret is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_key_pair(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path, KeyPair]:
    """Create ``NAME.key`` (public, 0644) and ``NAME.key_secret`` (0600) in ``directory``.

    Raises :class:`FileExistsError` rather than overwrite either file, and ``ValueError`` for a
    name that is not a plain file name.
    """
    if not name or name.startswith(".") or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"key name {name!r} must be a plain file name")
    folder = Path(directory)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    public_file, secret_file = folder / f"{name}.key", folder / f"{name}.key_secret"
    for file in (public_file, secret_file):
        if file.exists():
            raise FileExistsError(f"{file} already exists; not overwriting a key")
    pair = KeyPair.generate()
    _write_new(secret_file, _certificate(_SECRET_BANNER, pair, True), 0o600)
    _write_new(public_file, _certificate(_PUBLIC_BANNER, pair, False), 0o644)
    return public_file, secret_file, pair


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
    if policy.allow_any or key in policy.keys or (ip is None and key in policy.local_keys):
        return answer(ZAP_OK, "OK", port, user_id=encode_key(key))
    return answer(ZAP_DENIED, f"unknown CURVE key {encode_key(key)}", port)


# -- applying keys to sockets ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """What a CURVE client needs: the server's public key and its own key pair (Z85)."""

    server_key: bytes
    pair: KeyPair

    @classmethod
    def load(
        cls,
        server_key: str | bytes | os.PathLike[str],
        client_key_file: str | os.PathLike[str] | None = None,
    ) -> ClientCredentials:
        """``server_key`` is the server's Z85 public key (40 characters) or a certificate file
        holding it (a ``pathlib.Path``, or a string that is not 40 characters long).
        ``client_key_file`` is this client's secret certificate; without one, a throwaway key
        pair is made, which only a server with ``curve_allow_any`` admits.
        """
        if isinstance(server_key, str | bytes) and len(server_key) == KEY_Z85:
            raw = decode_key(server_key, "server_key")
        elif isinstance(server_key, bytes):
            raise ConfigError(f"server_key: expected {KEY_Z85} Z85 characters, got bytes")
        else:
            raw = load_public_key(server_key, "server_key")
        pair = (
            KeyPair.generate()
            if client_key_file is None
            else load_secret_key(client_key_file, "client_key_file")
        )
        return cls(encode_key(raw).encode(), pair)

    @classmethod
    def ephemeral(cls, server_key: bytes) -> ClientCredentials:
        """A fresh key pair for talking to the server with Z85 public key ``server_key``."""
        return cls(server_key, KeyPair.generate())


def client_credentials(
    server_key: str | bytes | os.PathLike[str] | None,
    client_key_file: str | os.PathLike[str] | None,
) -> ClientCredentials | None:
    """The clients' keyword arguments made into credentials; None for a plain (NULL) client."""
    if server_key is None:
        if client_key_file is not None:
            raise ConfigError("client_key_file needs server_key (the server's public key)")
        return None
    return ClientCredentials.load(server_key, client_key_file)


def apply_client(sock: zmq.Socket[Any], credentials: ClientCredentials) -> None:
    """Make ``sock`` a CURVE client. Call before ``connect``: libzmq copies options then."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, credentials.server_key)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, credentials.pair.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, credentials.pair.secret)


def apply_server(
    sock: zmq.Socket[bytes],
    *,
    keys: KeyPair | None,
    zap_domain: bytes | None,
    handshake_timeout: float,
) -> None:
    """Set a server socket's security options. Call before ``bind``: the listener copies them.

    ``keys`` makes it a CURVE server; ``zap_domain`` sends every connection (also NULL ones) to
    the ZAP handler; ``handshake_timeout`` drops a peer that has not finished its handshake.
    """
    if keys is not None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    if zap_domain:
        sock.setsockopt(zmq.ZAP_DOMAIN, zap_domain)
        # Without a handler bound, libzmq 4.3 would admit everyone; this makes it refuse.
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    sock.setsockopt(zmq.HANDSHAKE_IVL, max(1, round(handshake_timeout * 1000)))


# -- configuration checks (pure: no files read) ---------------------------------------------------


def public_backend(config: Config) -> str | None:
    """The backend endpoint opened to remote worker pools, or None if the backend is private.

    An explicit ``backend`` endpoint is opened as given; the ``port``-derived TCP endpoint only
    with ``remote_workers``. Local workers always use a private ipc:// socket instead.
    """
    if config.backend is not None or config.remote_workers:
        return config.backend_endpoint
    return None


def _strings(config: Config, name: str) -> tuple[str, ...]:
    value = getattr(config, name)
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}: expected a list of IP addresses or CIDR ranges, got {value!r}")
    return value


def address_policies(config: Config) -> tuple[AddressPolicy, AddressPolicy]:
    """The frontend's and backend's allow/deny lists, checked (``ConfigError`` on a bad one)."""
    allow, deny = _strings(config, "allow"), _strings(config, "deny")
    front = AddressPolicy.build(allow, deny, "allow", "deny")
    back = AddressPolicy.build(
        _strings(config, "backend_allow"),
        _strings(config, "backend_deny"),
        "backend_allow",
        "backend_deny",
    )
    return front, back


def check_config(config: Config) -> None:
    """Check the security options' consistency; :meth:`ServerSecurity.load` reads the files."""
    for name in (
        "curve_secret_key_file",
        "curve_backend_secret_key_file",
        "curve_client_keys_dir",
        "curve_worker_keys_dir",
    ):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"{name}: expected a file or directory path, got {value!r}")
    if not isinstance(config.curve_allow_any, bool):
        raise ConfigError(
            f"curve_allow_any: expected true or false, got {config.curve_allow_any!r}"
        )
    if not isinstance(config.remote_workers, bool):
        raise ConfigError(f"remote_workers: expected true or false, got {config.remote_workers!r}")
    front_curve = config.curve_secret_key_file is not None
    if config.curve_allow_any and config.curve_client_keys_dir is not None:
        raise ConfigError(
            "curve_allow_any and curve_client_keys_dir: give one (any client key, or only the "
            "keys in the directory), not both"
        )
    if not front_curve:
        for name in ("curve_client_keys_dir", "curve_allow_any"):
            if getattr(config, name):
                raise ConfigError(
                    f"{name} is set but curve_secret_key_file is not: "
                    "the frontend only checks client keys when it uses CURVE"
                )
    elif config.curve_client_keys_dir is None and not config.curve_allow_any:
        raise ConfigError(
            "curve_secret_key_file needs curve_client_keys_dir (the client keys allowed) "
            "or curve_allow_any (any client key)"
        )
    back_curve = config.curve_backend_secret_key_file is not None
    if config.curve_worker_keys_dir is not None and not back_curve:
        raise ConfigError(
            "curve_worker_keys_dir is set but curve_backend_secret_key_file is not: "
            "the backend only checks worker keys when it uses CURVE"
        )
    if back_curve and config.curve_worker_keys_dir is None:
        raise ConfigError(
            "curve_backend_secret_key_file needs curve_worker_keys_dir "
            "(the public keys of the remote workers allowed)"
        )
    _, back = address_policies(config)
    if public_backend(config) is None:
        if back_curve:
            raise ConfigError(
                "curve_backend_secret_key_file secures the backend for remote worker pools, "
                "but the backend is not open to them: set remote_workers (or backend)"
            )
        if back.active:
            raise ConfigError(
                "backend_allow/backend_deny filter remote workers, but the backend is not open "
                "to them: set remote_workers (or backend)"
            )
    domain = config.zap_domain
    if not isinstance(domain, str) or not domain or len(domain.encode()) > 200:
        # An empty domain would switch ZAP off for NULL connections, and the allow/deny lists
        # with it.
        raise ConfigError(f"zap_domain: expected a non-empty name, got {domain!r}")
    timeout = config.handshake_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigError(
            f"handshake_timeout: expected a positive number of seconds, got {timeout!r}"
        )


def remove_stale_dirs(base: Path) -> None:
    """Remove private worker directories left by masters that died without cleaning up (SIGKILL).

    Only directories named ``zmqserver-<pid>-*``, owned by this user, whose pid is not running:
    never another user's, never a live server's (a reused pid just leaves a directory behind).
    """
    uid = os.getuid()
    for path in base.glob("zmqserver-*-*"):
        pid = path.name.split("-")[1]
        try:
            if not pid.isdigit() or path.lstat().st_uid != uid or not path.is_dir():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # gone already, or a pid we may not signal: not ours to judge
            continue


# -- the driver: one ZAP socket in the master's event loop ----------------------------------------


class ServerSecurity:
    """The broker's security: keys, the private worker socket, and the ZAP handler socket.

    Life cycle, all in the master: :meth:`load` (start-up: reads and checks every key file),
    :meth:`start` (binds the ZAP handler; before any server socket binds), :meth:`apply` for each
    ROUTER before it binds, :meth:`handle_zap` when the ZAP socket is readable, :meth:`reload` on
    HUP, :meth:`close` at exit.
    """

    def __init__(
        self,
        config: Config,
        *,
        frontend_keys: KeyPair | None = None,
        backend_keys: KeyPair | None = None,
        client_keys: frozenset[bytes] = frozenset(),
        worker_keys: frozenset[bytes] = frozenset(),
    ) -> None:
        check_config(config)
        self.config = config
        self.frontend_keys = frontend_keys
        self.backend_keys = backend_keys
        self.public_backend = public_backend(config)
        front_addresses, back_addresses = address_policies(config)
        #: Keys for the forked workers when the backend speaks CURVE: made in the master before
        #: any fork, inherited by the children, never written anywhere.
        self.worker_credentials: ClientCredentials | None = None
        local_keys: frozenset[bytes] = frozenset()
        if backend_keys is not None:
            self.worker_credentials = ClientCredentials.ephemeral(backend_keys.public)
            local_keys = frozenset({decode_key(self.worker_credentials.pair.public, "local")})
        self.frontend_domain = config.zap_domain.encode()
        self.backend_domain = f"{config.zap_domain}.workers".encode()
        self.local_uids = {os.getuid()}
        self.policies: dict[bytes, PortPolicy] = {
            self.frontend_domain: PortPolicy(
                "frontend",
                curve=frontend_keys is not None,
                allow_any=config.curve_allow_any,
                keys=client_keys,
                addresses=front_addresses,
            ),
            self.backend_domain: PortPolicy(
                "backend",
                curve=backend_keys is not None,
                keys=worker_keys,
                local_keys=local_keys,
                addresses=back_addresses,
                local_uids=frozenset(self.local_uids),
            ),
        }
        self.zap_socket: zmq.Socket[bytes] | None = None
        self.local_dir: Path | None = None
        self.allowed = 0
        self.denied = 0
        # (port, address) -> [when last logged, refusals not logged since]
        self._logged: dict[tuple[str, str], list[float]] = {}

    @classmethod
    def load(cls, config: Config) -> ServerSecurity:
        """Read and check every key file the config names; ``ConfigError`` names what is wrong."""
        check_config(config)
        frontend_keys = backend_keys = None
        client_keys: frozenset[bytes] = frozenset()
        worker_keys: frozenset[bytes] = frozenset()
        if config.curve_secret_key_file is not None:
            frontend_keys = load_secret_key(config.curve_secret_key_file, "curve_secret_key_file")
        if config.curve_backend_secret_key_file is not None:
            backend_keys = load_secret_key(
                config.curve_backend_secret_key_file, "curve_backend_secret_key_file"
            )
        if config.curve_client_keys_dir is not None:
            client_keys = load_key_dir(config.curve_client_keys_dir, "curve_client_keys_dir")
            if not client_keys:
                log.warning(
                    "curve_client_keys_dir %s holds no *.key file: no client can connect until "
                    "one is added (then send HUP)",
                    config.curve_client_keys_dir,
                )
        if config.curve_worker_keys_dir is not None:
            worker_keys = load_key_dir(config.curve_worker_keys_dir, "curve_worker_keys_dir")
        return cls(
            config,
            frontend_keys=frontend_keys,
            backend_keys=backend_keys,
            client_keys=client_keys,
            worker_keys=worker_keys,
        )

    # -- start-up --

    def start(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        """Bind the ZAP handler in ``ctx``; must happen before any server socket binds.

        A ROUTER rather than the REP of RFC 27's examples: a REP that failed to answer one request
        would never receive the next, and every later handshake would hang until its timeout.
        """
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(ZAP_ENDPOINT)
        self.zap_socket = sock
        if self.public_backend is not None and self.backend_keys is None:
            log.warning(
                "the backend %s takes workers without CURVE: anyone who can reach it can register "
                "as a worker and read jobs (see docs/security.md)",
                self.public_backend,
            )

    def apply(self, sock: zmq.Socket[bytes], name: str) -> None:
        """Set the options of the broker's ``"frontend"`` or ``"backend"`` ROUTER, before bind."""
        timeout = self.config.handshake_timeout
        if name == "frontend":
            policy = self.policies[self.frontend_domain]
            needs_zap = policy.curve or policy.addresses.active
            domain = self.frontend_domain if needs_zap else None
            apply_server(
                sock, keys=self.frontend_keys, zap_domain=domain, handshake_timeout=timeout
            )
        elif name == "backend":
            # Always through ZAP: it checks that local peers run as our user, whatever the
            # directory permissions say.
            apply_server(
                sock,
                keys=self.backend_keys,
                zap_domain=self.backend_domain,
                handshake_timeout=timeout,
            )
        else:
            raise ValueError(f"unknown broker socket {name!r}")

    def local_endpoint(self) -> str:
        """The ipc:// endpoint of the private worker socket, in a new 0700 directory."""
        if self.local_dir is None:
            base = tempfile.gettempdir()
            if len(base) > _MAX_IPC_PATH - 40:
                base = "/tmp"  # a long TMPDIR would not fit in a socket path
            remove_stale_dirs(Path(base))
            prefix = f"zmqserver-{os.getpid()}-"
            self.local_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
            os.chmod(self.local_dir, 0o700)  # mkdtemp's mode, made explicit
        return f"ipc://{self.local_dir / LOCAL_SOCKET}"

    def bind_local(self, sock: zmq.Socket[bytes]) -> str:
        """Also bind the backend ``sock`` to the private worker socket; return its endpoint."""
        endpoint = self.local_endpoint()
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            message = f"cannot bind the local workers' socket {endpoint}: {exc}"
            raise OSError(exc.errno, message) from exc
        return endpoint

    def admit_local_user(self, uid: int, gid: int = -1) -> None:
        """Let local workers running as ``uid`` in (after a privilege drop to that user)."""
        self.local_uids.add(uid)
        policy = self.policies[self.backend_domain]
        self.policies[self.backend_domain] = dataclasses.replace(
            policy, local_uids=frozenset(self.local_uids)
        )
        if self.local_dir is not None:
            os.chown(self.local_dir, uid, gid)

    # -- the event loop's part --

    def handle_zap(self) -> None:
        """Answer the ZAP requests waiting on the handler socket (called when it is readable)."""
        sock = self.zap_socket
        assert sock is not None
        for _ in range(ZAP_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            # ROUTER envelope: the requester's routing id, then (REQ-style) an empty delimiter.
            try:
                split = frames.index(b"") + 1
            except ValueError:
                continue
            outcome = zap_decide(frames[split:], self.policies)
            self._note(outcome)
            if outcome.reply is not None:
                with contextlib.suppress(zmq.Again):  # the handshake then times out instead
                    sock.send_multipart([*frames[:split], *outcome.reply], zmq.NOBLOCK)

    def _note(self, outcome: ZapOutcome) -> None:
        if outcome.allowed:
            self.allowed += 1
            log.debug(
                "%s: admitted %s %s", outcome.port, outcome.address or "local peer", outcome.user_id
            )
            return
        self.denied += 1
        now = time.monotonic()
        # Per address, not per reason: a peer trying a new key each time must not flood the log.
        key = (outcome.port, outcome.address)
        entry = self._logged.get(key)
        if entry is not None and now - entry[0] < DENIAL_LOG_INTERVAL:
            entry[1] += 1
            return
        if len(self._logged) >= _THROTTLE_ENTRIES:
            self._logged.clear()
        quiet = int(entry[1]) if entry is not None else 0
        self._logged[key] = [now, 0]
        log.warning(
            "%s: refused a connection from %s: %s%s",
            outcome.port,
            outcome.address or "a local peer",
            outcome.reason,
            f" ({quiet} more refused since the last report)" if quiet else "",
        )

    def reload(self) -> None:
        """Re-read the key directories (on HUP). A bad directory keeps the keys already loaded."""
        config = self.config
        for name, domain, what in (
            ("curve_client_keys_dir", self.frontend_domain, "client"),
            ("curve_worker_keys_dir", self.backend_domain, "worker"),
        ):
            directory = getattr(config, name)
            if directory is None:
                continue
            try:
                keys = load_key_dir(directory, name)
            except (ConfigError, OSError) as exc:
                log.error("HUP: keeping the %s keys already loaded: %s", what, exc)
                continue
            self.policies[domain] = dataclasses.replace(self.policies[domain], keys=keys)
            log.info("HUP: %d %s key(s) loaded from %s", len(keys), what, directory)

    def close(self) -> None:
        """Close the ZAP socket (before the context terminates) and remove the private directory."""
        if self.zap_socket is not None:
            self.zap_socket.close(linger=0)
            self.zap_socket = None
        if self.local_dir is not None:
            shutil.rmtree(self.local_dir, ignore_errors=True)
            self.local_dir = None
