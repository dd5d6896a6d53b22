"""Clients that know both servers of a Binary Star pair move to the live one (docs/ha.md).

Real servers, kill -9 of the active one; the client's timeout is over two heartbeats, so its
first attempt at the other server finds the peer silent long enough and is served. The
failover times are printed (``pytest -s``) under ``measured:``; bench/ha.py takes more kills.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import time

import pytest

from zmqserver import AsyncClient, Client

from .ha_helpers import (
    HEARTBEAT,
    Pair,
    active_of,
    kill_and_fail_over,
    pair,
    wait_answered,
    wait_logged,
)

__all__ = ["pair"]

pytestmark = [pytest.mark.timeout(120), pytest.mark.compiled_pass]

#: Over two heartbeats: the backup takes over on the first attempt that reaches it.
TIMEOUT = 4 * HEARTBEAT


def start_pair(pair: Pair) -> None:
    pair.start("primary")
    pair.start("backup")
    wait_answered(pair.servers["primary"])
    # A backup that never saw the primary active never serves (the guide's rule): wait for it.
    wait_logged(pair.servers["backup"], "backup -> passive")


def test_client_fails_over_and_back(pair: Pair, ctx) -> None:
    start_pair(pair)
    with Client(pair.endpoints(), timeout=TIMEOUT, retries=6, context=ctx) as client:
        assert client.request(b"abc") == b"ABC"
        times = kill_and_fail_over(pair, lambda: client.request(b"x"), 2)
        assert client.request(b"def") == b"DEF"
    print(f"measured: failover {statistics.median(times):.2f}s median, {max(times):.2f}s max")
    assert active_of(pair) == "primary"  # two kills: back where it started


def test_pipelined_requests_survive_a_kill(pair: Pair, ctx) -> None:
    start_pair(pair)
    with Client(pair.endpoints(), timeout=TIMEOUT, retries=6, context=ctx) as client:
        futures = [client.submit(b"a%d" % i) for i in range(20)]
        pair.kill("primary")
        futures += [client.submit(b"b%d" % i) for i in range(20)]
        replies = [future.result() for future in futures]
    assert replies == [b"A%d" % i for i in range(20)] + [b"B%d" % i for i in range(20)]


def test_async_client_fails_over(pair: Pair, ctx) -> None:
    start_pair(pair)

    async def main() -> float:
        async with AsyncClient(pair.endpoints(), timeout=TIMEOUT, retries=6, context=ctx) as client:
            assert await client.request(b"abc") == b"ABC"
            pair.kill("primary")
            started = time.monotonic()
            replies = await asyncio.gather(*(client.request(b"x%d" % i) for i in range(8)))
            assert replies == [b"X%d" % i for i in range(8)]
            return time.monotonic() - started

    took = asyncio.run(main())
    print(f"measured: AsyncClient, 8 concurrent requests answered {took:.2f}s after the kill")


def test_a_graceful_stop_of_the_active_server_sends_its_clients_to_the_peer(
    pair: Pair, ctx
) -> None:
    """TERM: the stopping server answers no new request (no shutting_down error a client
    would take for the answer) and falls silent; the backup takes over."""
    start_pair(pair)
    with Client(pair.endpoints(), timeout=TIMEOUT, retries=6, context=ctx) as client:
        assert client.request(b"abc") == b"ABC"
        pair.servers["primary"].signal(signal.SIGTERM)
        # Once the stop has begun (a request that came before it is answered there, rightly).
        wait_logged(pair.servers["primary"], "graceful stop:")
        assert client.request(b"def") == b"DEF"
    wait_logged(pair.servers["backup"], "passive -> active")
