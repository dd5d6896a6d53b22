"""Where a CHP server's three ports are, from the one endpoint a user gives (pure)."""

from __future__ import annotations


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
