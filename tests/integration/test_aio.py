"""AsyncClient against a real server: many requests in flight on one socket."""

from __future__ import annotations

import asyncio

import pytest
import zmq.asyncio

import zmqserver
from zmqserver.client.aio import AsyncClient

pytestmark = pytest.mark.timeout(60)


def run(coro):
    """Run a coroutine on a fresh loop with its own asyncio Context, terminated afterwards."""

    async def main():
        ctx = zmq.asyncio.Context()
        try:
            return await coro(ctx)
        finally:
            ctx.destroy(linger=0)

    return asyncio.run(main())


def test_many_concurrent_requests_each_get_their_own_reply(start_server):
    server = start_server("examples.upper:app", workers=3)
    server.wait_ready()

    async def go(ctx):
        async with AsyncClient(server.frontend, timeout=10, context=ctx) as client:
            return await asyncio.gather(*(client.request(b"job-%d" % i) for i in range(200)))

    assert run(go) == [b"JOB-%d" % i for i in range(200)]


def test_map_keeps_order_and_submit_returns_a_future(start_server):
    server = start_server("tests.apps:frames", workers=2)

    async def go(ctx):
        async with AsyncClient(server.frontend, timeout=10, context=ctx) as client:
            future = client.submit([b"a", b"b"])
            mapped = await client.map([b"x%d" % i for i in range(50)], window=8)
            return await future, mapped

    single, mapped = run(go)
    assert single == [b"list", b"a", b"b"]
    assert mapped == [[b"bytes", b"x%d" % i] for i in range(50)]


def test_stream_and_errors(start_server):
    streamer = start_server("tests.apps:stream", workers=1)
    failer = start_server("tests.apps:fail", workers=1)

    async def go(ctx):
        async with AsyncClient(streamer.frontend, timeout=10, context=ctx) as client:
            parts = [part async for part in client.stream(b"abc")]
        async with AsyncClient(failer.frontend, timeout=10, retries=1, context=ctx) as client:
            with pytest.raises(zmqserver.AppError, match="boom requested"):
                await client.request(b"boom")
            ok = await client.request(b"fine")
        return parts, ok

    assert run(go) == ([b"a", b"b", b"c"], b"fine")


def test_timeout_after_all_attempts(short_tmp):
    async def go(ctx):
        async with AsyncClient(
            f"ipc://{short_tmp}/nobody", timeout=0.2, retries=2, context=ctx
        ) as client:
            with pytest.raises(zmqserver.RequestTimeout, match="2 attempts"):
                await client.request(b"anyone?")
            results = await asyncio.gather(
                *(client.request(b"x") for _ in range(3)), return_exceptions=True
            )
            return results

    results = run(go)
    assert all(isinstance(r, zmqserver.RequestTimeout) for r in results)


def test_closed_client_refuses(short_tmp):
    async def go(ctx):
        client = AsyncClient(f"ipc://{short_tmp}/x", context=ctx)
        await client.close()
        with pytest.raises(zmqserver.Closed):
            await client.request(b"x")

    run(go)
