"""The Binary Star peer link's security: CURVE, ZAP, allow/deny, and what its handshakes say.

The link is two sockets per server (supervisor/ha_side.py): a PUB bound on ``ha_bind`` and a
SUB connected to the peer's. It is secured as the frontend is, with the frontend's own key
pair, so that a pair needs one more option and no more keys (docs/ha.md, "Security"):

* With ``curve_secret_key_file``, our PUB is a CURVE server with the frontend's key pair, and
  our SUB a CURVE client with that same pair, which knows the peer's public key
  (``ha_peer_key``). The SUB thus hears only a PUB that holds the peer's secret key: a server
  with another key is never heard. The PUB's ZAP policy admits the peer's key alone, so our
  state goes to nobody else.
* The PUB always has a ZAP domain of its own (``<zap_domain>.ha``): the frontend's
  ``allow``/``deny`` lists apply to the peer link, CURVE or not, and a connection that does
  not speak ZeroMQ is dropped at once, as on every other port (docs/security.md, §3).

A peer that cannot get through looks exactly like a dead one: silence. That is the failure a
pair must not have unexplained, since silence is what makes the other server take over. So
both sockets are watched with libzmq's monitor, and each failed handshake is logged as an
error that says which half is wrong (one server with CURVE and the other without; a wrong
``ha_peer_key`` on this side or on the peer's), at most once a minute per cause. ZAP's own
refusals are logged by the ZAP handler (security/zap.py), as ``peer link: refused ...``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..config import Config
from ..errors import ConfigError
from ..security import (
    KEY_Z85,
    ClientCredentials,
    PortPolicy,
    ServerSecurity,
    apply_client,
    apply_server,
    decode_key,
    encode_key,
    load_public_key,
)
from .component import Handle, WatchItem

log = logging.getLogger("zmqserver.ha")

#: The same cause is logged at most once in this many seconds (libzmq retries every heartbeat).
LOG_INTERVAL = 60.0
#: What the ZAP handler's log calls the peer link's port.
PORT_NAME = "peer link"

_MISMATCH = zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
_CRYPTO = zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC
_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_HALF = (
    "one server of the pair runs with CURVE (curve_secret_key_file and ha_peer_key) and the "
    "other without: configure both the same way"
)


def load_peer_key(value: str | None) -> bytes | None:
    """The raw public key ``ha_peer_key`` names (40 Z85 characters, or a key file); ConfigError
    naming the option if it is neither. Read at start-up, with the other key files."""
    if value is None:
        return None
    if len(value) == KEY_Z85:
        return decode_key(value, "ha_peer_key")
    if not Path(value).expanduser().exists():
        raise ConfigError(
            f"ha_peer_key: {value!r} is neither a CURVE public key (40 Z85 characters) nor a "
            "key file that exists"
        )
    try:
        holds_secret = "secret-key" in Path(value).expanduser().read_text(errors="replace")
    except OSError:
        holds_secret = False  # load_public_key names the problem
    if holds_secret:
        raise ConfigError(
            f"ha_peer_key: {value!r} holds a secret key: give the peer's public key (its "
            ".key file); the secret half stays on the peer"
        )
    return load_public_key(value, "ha_peer_key")


def explain(side: str, event: int, value: int, curve: bool) -> tuple[int, str] | None:
    """Why a handshake on the peer link failed, as (log level, text); None for a fine event.

    ``side`` is ``"sub"`` (our connection to the peer's ha_bind) or ``"pub"`` (a connection to
    ours); ``value`` is the monitor event's value (a ZAP status code, a ZMTP protocol error);
    ``curve`` says whether this server speaks CURVE on the link. Pure, so that each message is
    tested without sockets. A wrong configuration of the pair is an error; a stranger's failed
    handshake on our ha_bind (a port scan) is only a warning.
    """
    error = logging.ERROR
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MISMATCH:
        return error, f"the two servers speak different security mechanisms: {_HALF}"
    if side == "sub":
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return error, (
                f"the peer refused this server (ZAP status {value}): the peer's ha_peer_key "
                "must be this server's public key, and its allow/deny lists must admit this host"
            )
        if event in (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
            if curve:
                return error, (
                    "the peer closed the CURVE handshake: this server's ha_peer_key is not the "
                    "public key of the server at ha_peer"
                )
            return error, f"the handshake with the peer failed (libzmq error {value:#x})"
    elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _CRYPTO:
        return error, (
            "a server connected with the wrong public key for this one: the peer's ha_peer_key "
            "must be this server's public key"
        )
    elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
        return logging.WARNING, f"a connection's handshake failed (libzmq error {value:#x})"
    return None


@dataclass
class _Said:
    """When a cause was last logged, and how often it happened since."""

    at: float
    quiet: int = 0


class PeerLinkSecurity:
    """Secures the peer link's two sockets (before they bind/connect) and logs their failures."""

    def __init__(self, config: Config, security: ServerSecurity) -> None:
        self.security = security
        self.bind = config.ha_bind or ""
        self.peer = config.ha_peer or ""
        self.handshake_timeout = float(config.handshake_timeout)
        self.peer_key = load_peer_key(config.ha_peer_key)
        self.keys = security.frontend_keys
        #: CURVE on the link: validate.py makes it both the frontend's key pair and ha_peer_key.
        self.curve = self.keys is not None and self.peer_key is not None
        self.domain = security.frontend_domain + b".ha"
        self.monitors: dict[zmq.Socket[bytes], tuple[str, zmq.Socket[bytes]]] = {}
        self._said: dict[str, _Said] = {}
        #: Handshakes with the peer that failed since the last one that succeeded.
        self.failures = 0

    def secure_pub(self, pub: zmq.Socket[bytes]) -> None:
        """Make ``pub`` (ha_bind) a server that only the peer may reach. Before ``bind``."""
        security = self.security
        front = security.policies[security.frontend_domain]
        keys = frozenset() if self.peer_key is None else frozenset({self.peer_key})
        security.policies[self.domain] = PortPolicy(
            PORT_NAME, curve=self.curve, keys=keys, addresses=front.addresses
        )
        apply_server(
            pub,
            keys=self.keys if self.curve else None,
            zap_domain=self.domain,
            handshake_timeout=self.handshake_timeout,
        )
        self._monitor(pub, "pub")

    def credentials(self) -> ClientCredentials | None:
        """What this server connects to its peer's ports with: its frontend key pair, and the
        peer's public key as the server key (None without CURVE)."""
        if not self.curve:
            return None
        assert self.keys is not None
        assert self.peer_key is not None
        return ClientCredentials(encode_key(self.peer_key).encode(), self.keys)

    def admit_peer(self) -> None:
        """Admit the peer's key on our client ports too (the frontend's ZAP domain, which the
        pub-sub ports share): the peer's copy of our pub-sub map connects there."""
        if not self.curve:
            return
        assert self.peer_key is not None
        security = self.security
        front = security.policies[security.frontend_domain]
        security.policies[security.frontend_domain] = dataclasses.replace(
            front, peer_keys=frozenset({self.peer_key})
        )

    def secure_sub(self, sub: zmq.Socket[bytes]) -> None:
        """Make ``sub`` (to ha_peer) a client that hears only the peer. Before ``connect``."""
        credentials = self.credentials()
        if credentials is not None:
            apply_client(sub, credentials)
        sub.setsockopt(zmq.HANDSHAKE_IVL, max(1, round(self.handshake_timeout * 1000)))
        self._monitor(sub, "sub")

    def watch(self) -> list[WatchItem]:
        return [(monitor, zmq.POLLIN) for _, monitor in self.monitors.values()]

    def handle(self, ready: Collection[Handle], now: float) -> None:
        """Read the monitors' events that came; log the failed handshakes."""
        for side, monitor in list(self.monitors.values()):
            if monitor not in ready:
                continue
            for _ in range(64):  # a few events per reconnect attempt; more waits a turn
                try:
                    event = recv_monitor_message(monitor, zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._note(side, int(event["event"]), int(event["value"]), now)

    def close(self) -> None:
        """Stop the monitors; before the sockets they watch close."""
        for sock, (_, monitor) in self.monitors.items():
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            monitor.close(linger=0)
        self.monitors.clear()
        self.security.policies.pop(self.domain, None)

    # -- helpers ----------------------------------------------------------------------------------

    def _monitor(self, sock: zmq.Socket[bytes], side: str) -> None:
        self.monitors[sock] = (side, sock.get_monitor_socket(_EVENTS))

    def _note(self, side: str, event: int, value: int, now: float) -> None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            if side == "sub":
                if self.failures:
                    log.warning(
                        "Binary Star peer link: connected to the peer at %s after %d failed "
                        "handshake(s)",
                        self.peer,
                        self.failures,
                    )
                self.failures = 0
            return
        found = explain(side, event, value, self.curve)
        if found is None:
            return
        level, why = found
        if side == "sub":
            self.failures += 1
            where = f"the peer at {self.peer}"
            result = "the peer's state is not heard here (it looks dead to this server)"
        else:
            where = f"a connection to {self.bind}"
            result = "this server's state does not reach that server"
        cause = f"{side}: {why}"
        said = self._said.get(cause)
        if said is not None and now - said.at < LOG_INTERVAL:
            said.quiet += 1
            return
        quiet = 0 if said is None else said.quiet
        self._said[cause] = _Said(now)
        log.log(
            level,
            "Binary Star peer link: %s: %s; %s%s",
            where,
            why,
            result,
            f" ({quiet} more since the last report)" if quiet else "",
        )
