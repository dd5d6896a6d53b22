"""A client's arguments, checked once, and its socket, set up once, for both drivers.

Why a module: ``Client`` and ``AsyncClient`` used to check their arguments and set up their
DEALER sockets in two copies of the same constructor, and the copies drifted (``AsyncClient``
accepted ``timeout=-1``, which ``Client`` refused, and failed only at the first request). Both now
build a :class:`ClientOptions` and let it prepare every socket they open, so a rule added here
holds for both, and tests/unit/test_client_options.py holds them to the same errors.

The policy part of the checks (timeout, retries, service name) is the sans-IO core's
(state.py); CURVE credentials are security's (:func:`~zmqserver.security.client_credentials`);
this module only applies them in one order. It makes no socket itself: each driver makes its own
kind (blocking, or ``zmq.asyncio``) from its own context and hands it to
:meth:`ClientOptions.setup`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import zmq

from ..protocol import FLAG_RETRYABLE
from ..security.sockets import ClientCredentials, apply_client, client_credentials
from .failover import Endpoints, split_endpoints
from .pipeline import Pipeline
from .state import RequestIds, check_policy, encode_service

__all__ = ["ClientOptions", "new_identity"]

_Socket = TypeVar("_Socket", bound="zmq.Socket[Any]")


def new_identity() -> bytes:
    """A routing id for one client's whole life, kept across Lazy Pirate reconnects.

    Kept, so the broker can tell a resend from a new request and answer it from its reply cache
    instead of running the job twice. Random, so it is not guessable; never starting with a zero
    byte, which ZeroMQ reserves for the ids it makes up itself.
    """
    return b"zq" + secrets.token_bytes(14)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Everything a client driver was given, checked, plus the identity it will use."""

    endpoint: str
    #: Every endpoint the client may use, ``endpoint`` first (a Binary Star pair: failover.py).
    endpoints: tuple[str, ...] = ()
    #: The service frame (``b""``: the server's default service).
    service: bytes = b""
    timeout: float = 5.0
    retries: int = 3
    curve: ClientCredentials | None = None
    identity: bytes = field(default_factory=new_identity)

    @classmethod
    def from_arguments(
        cls,
        endpoint: str | Sequence[str],
        *,
        service: str | bytes = b"",
        timeout: float = 5.0,
        retries: int = 3,
        server_key: str | bytes | os.PathLike[str] | None = None,
        client_key_file: str | os.PathLike[str] | None = None,
    ) -> ClientOptions:
        """Check a client constructor's keyword arguments; the drivers take exactly these.

        Raises ``ValueError`` for a timeout, retry count or service name no request could be made
        with, and :class:`~zmqserver.errors.ConfigError` for unusable CURVE keys. The endpoint is
        checked by :meth:`setup`, by libzmq, which is the only judge of what it can connect to.
        """
        check_policy(timeout, retries)
        endpoints = split_endpoints(endpoint)
        curve = client_credentials(server_key, client_key_file)
        return cls(
            endpoint=endpoints[0],
            endpoints=endpoints,
            service=encode_service(service),
            timeout=timeout,
            retries=retries,
            curve=curve,
        )

    @property
    def flags(self) -> int:
        """The request flags: ``FLAG_RETRYABLE`` when the client would resend anyway.

        A client that resends a timed-out request tells the broker so, which lets the broker rerun
        the job when its worker dies instead of leaving us to wait out our timeout; with
        ``retries=1`` nothing is resent and the flag is not set.
        """
        return FLAG_RETRYABLE if self.retries > 1 else 0

    @property
    def peer(self) -> str:
        """The other end, as error messages name it: the endpoint, and the service if not the
        default one."""
        where = " or ".join(self.endpoints) if len(self.endpoints) > 1 else self.endpoint
        if not self.service:
            return where
        return f"{where} (service {self.service.decode('utf-8', 'backslashreplace')!r})"

    def check_endpoints(self, make: Callable[[], _Socket]) -> None:
        """Connect a throwaway socket from ``make`` to each endpoint after the first (the
        driver connects to that one itself), so that a malformed one fails where the client is
        made, not at its first failover."""
        for endpoint in self.endpoints[1:]:
            self.setup(make(), endpoint).close(linger=0)

    def failover(self) -> Endpoints:
        """Which endpoint to use, and when to move to the next (failover.py)."""
        return Endpoints(self.endpoints or (self.endpoint,))

    def pipeline(self, ids: RequestIds | None = None) -> Pipeline:
        """A pipeline for the requests one socket of this client has in flight."""
        return Pipeline(
            service=self.service,
            timeout=self.timeout,
            retries=self.retries,
            flags=self.flags,
            peer=self.peer,
            ids=ids,
        )

    def setup(self, socket: _Socket, endpoint: str | None = None) -> _Socket:
        """Set ``socket``'s options and connect it to ``endpoint`` (default: the first); on
        failure close it and raise ``ValueError``.

        Options first: libzmq copies them when the connection is made, so CURVE keys set after
        ``connect`` would not apply to it.
        """
        # Linger 0: closing must never block on, or later deliver, a request we gave up on.
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.ROUTING_ID, self.identity)
        if self.curve is not None:
            apply_client(socket, self.curve)
        endpoint = self.endpoint if endpoint is None else endpoint
        try:
            socket.connect(endpoint)
        except zmq.ZMQError as exc:
            socket.close(linger=0)
            raise ValueError(f"cannot connect to {endpoint!r}: {exc}") from exc
        return socket
