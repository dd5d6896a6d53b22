"""Where a CHP server's three ports are, from the one endpoint a user gives (pure)."""

from __future__ import annotations

from collections.abc import Sequence


def chp_endpoints(endpoint: str) -> tuple[str, str, str]:
    """``tcp://host:P`` -> its snapshot (P), publisher (P+1) and collector (P+2) endpoints.

    RFC 12 numbers the ports from one base, so a user names the base only. Anything else
    (``ipc://``, a port that is not a number) raises ValueError: pass the three explicitly.
    """
    scheme, sep, rest = endpoint.partition("://")
    host, colon, port = rest.rpartition(":")
    if not sep or not colon or not port.isdigit() or scheme not in ("tcp", "ws"):
        raise ValueError(f"{endpoint!r}: expected tcp://HOST:PORT, the snapshot port (P)")
    base = int(port)
    return tuple(f"{scheme}://{host}:{base + offset}" for offset in range(3))  # type: ignore[return-value]


def text(data: str | bytes) -> bytes:
    """A key or value as bytes (str: UTF-8)."""
    return data.encode() if isinstance(data, str) else bytes(data)


def broker_collector(connect: str, pubsub_port: int) -> str:
    """A remote pool's collector: its broker's host (from ``connect``), port P+2."""
    scheme, _, rest = connect.partition("://")
    host = rest.rpartition(":")[0] or rest
    return f"{scheme}://{host}:{pubsub_port + 2}"


def servers(endpoint: str | Sequence[str], updates: str | None = None) -> list[tuple[str, str]]:
    """Each server's (snapshot, updates) endpoints: ``endpoint`` is one pub-sub port
    ``tcp://host:P``, several (a list, or one string separated by commas: a Binary Star pair,
    docs/ha.md), or, with ``updates`` (the live endpoint), one snapshot endpoint of any kind."""
    if isinstance(endpoint, str):
        parts = [part.strip() for part in endpoint.split(",")]
    else:
        parts = list(endpoint)
        if not all(isinstance(part, str) for part in parts):
            raise TypeError(f"endpoints must be strings, got {endpoint!r}")
    if not parts or not all(parts):
        raise ValueError(f"expected one or more endpoints, got {endpoint!r}")
    if updates is not None:
        if len(parts) != 1:
            raise ValueError("updates= names one server's live endpoint: give one endpoint")
        return [(parts[0], updates)]
    return [chp_endpoints(part)[:2] for part in parts]


def peer_pubsub(ha_peer: str, pubsub_port: int, explicit: str | None = None) -> str:
    """The pub-sub port of a Binary Star peer, ``tcp://host:P``: ``explicit``
    (``ha_peer_pubsub``), else ``ha_peer``'s host with our own ``pubsub_port`` (two hosts with
    the same options). ValueError if ``ha_peer`` is not tcp:// and nothing is explicit."""
    if explicit is not None:
        chp_endpoints(explicit)  # raises ValueError if it is not tcp://HOST:P
        return explicit
    scheme, sep, rest = ha_peer.partition("://")
    host = rest.rpartition(":")[0]
    if scheme != "tcp" or not sep or not host or host == "*":
        raise ValueError(
            f"ha_peer is {ha_peer!r}: set ha_peer_pubsub to the peer's pub-sub port (tcp://HOST:P)"
        )
    return f"tcp://{host}:{pubsub_port}"
