"""CURVE options on sockets: what a client (or a forked worker) and a server socket set.

The clients (client/), the workers and the broker's ROUTERs all secure their sockets
through these few functions, so the order libzmq needs (options before ``connect``/``bind``) and
the key checks are written once. Nothing here decides who may connect: that is policy.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import zmq

from ..errors import ConfigError
from .keys import KEY_Z85, KeyPair, decode_key, encode_key, load_public_key, load_secret_key


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
    the ZAP handler and makes libzmq refuse pre-ZMTP-3 peers, which is how it drops a connection
    that does not speak ZeroMQ at all; ``handshake_timeout`` drops a peer that has not finished
    its handshake. Without ``zap_domain``, an HTTP request or random bytes pass for a ZMTP 1.0
    handshake that is already over, and neither option ever drops them.
    """
    if keys is not None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    if zap_domain:
        sock.setsockopt(zmq.ZAP_DOMAIN, zap_domain)
        # Without a handler bound, libzmq 4.3 would admit everyone; this makes it refuse.
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    sock.setsockopt(zmq.HANDSHAKE_IVL, max(1, round(handshake_timeout * 1000)))
