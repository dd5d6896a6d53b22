"""Who may talk to the broker: CURVE keys, ZAP decisions and address allow/deny lists.

One concern per module, policy apart from driver (as in pyzmq's ``zmq.auth``):

* policy.py: the pure decision, from a ZAP request's frames to its reply's (no zmq, no files);
* keys.py: CURVE key files, read and checked at start-up and on HUP, and ``zmqserver keygen``;
* sockets.py: the CURVE options a client, worker or server socket sets before it connects/binds;
* zap.py: the driver, a ZAP handler socket in the master's event loop.

The checks of the security options' combination belong to the config
(zmqserver.config.validate), which uses policy.py's parsers; nothing here imports the config.
The names below are re-exported so that ``from zmqserver.security import X`` keeps working;
the driver's only on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .keys import (
    KEY_BYTES,
    KEY_Z85,
    KeyPair,
    decode_key,
    encode_key,
    load_key_dir,
    load_public_key,
    load_secret_key,
    write_key_pair,
)
from .policy import (
    ZAP_DENIED,
    ZAP_ERROR,
    ZAP_OK,
    ZAP_VERSION,
    Address,
    AddressPolicy,
    Network,
    PortPolicy,
    ZapOutcome,
    ipc_uid,
    parse_networks,
    peer_ip,
    zap_decide,
)
from .sockets import ClientCredentials, apply_client, apply_server, client_credentials

if TYPE_CHECKING:
    from .zap import (
        DENIAL_LOG_INTERVAL,
        LOCAL_SOCKET,
        ZAP_BATCH,
        ZAP_ENDPOINT,
        SecurityOptions,
        ServerSecurity,
        remove_stale_dirs,
    )

#: The driver's names: the server's, imported on first use so that a client, which imports
#: this package for its key files and socket options, loads no ZAP handler.
_ZAP = frozenset(
    {
        "DENIAL_LOG_INTERVAL",
        "LOCAL_SOCKET",
        "ZAP_BATCH",
        "ZAP_ENDPOINT",
        "SecurityOptions",
        "ServerSecurity",
        "remove_stale_dirs",
    }
)

if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        if name not in _ZAP:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from . import zap

        return getattr(zap, name)


__all__ = [
    "DENIAL_LOG_INTERVAL",
    "KEY_BYTES",
    "KEY_Z85",
    "LOCAL_SOCKET",
    "ZAP_BATCH",
    "ZAP_DENIED",
    "ZAP_ENDPOINT",
    "ZAP_ERROR",
    "ZAP_OK",
    "ZAP_VERSION",
    "Address",
    "AddressPolicy",
    "ClientCredentials",
    "KeyPair",
    "Network",
    "PortPolicy",
    "SecurityOptions",
    "ServerSecurity",
    "ZapOutcome",
    "apply_client",
    "apply_server",
    "client_credentials",
    "decode_key",
    "encode_key",
    "ipc_uid",
    "load_key_dir",
    "load_public_key",
    "load_secret_key",
    "parse_networks",
    "peer_ip",
    "remove_stale_dirs",
    "write_key_pair",
    "zap_decide",
]
