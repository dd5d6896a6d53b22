"""Every client against a server that is down: a timeout always fires (issue 18, item 10).

The promise (docs/reliability.md, "A server that is down"): with nobody listening, every request
ends in ``RequestTimeout`` within ``timeout`` x ``retries`` of being made, however many are made,
and nothing a caller does blocks while it waits. libzmq queues at most ``SNDHWM`` (1,000) messages
for a peer that never connects; past that a blocking send would wait forever, so the clients send
without blocking and count a send that would block as a failed attempt.

The endpoints are real: a TCP port nobody listens on, and an ipc path nobody binds. Timing is
asserted only as "within the configured patience plus a generous margin": the margin is there for a
noisy 2-core machine, and the tests exist to catch a wait that never ends, which pytest-timeout
bounds.
"""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from zmqserver.client import AsyncClient, Client
from zmqserver.client.cli import EXIT_TIMEOUT, client_main
from zmqserver.errors import RequestTimeout
from zmqserver.protocol import encode_client_reply, parse_client_request

pytestmark = pytest.mark.timeout(60)

#: Slack on top of timeout x retries for a loaded 2-core machine; a hang is what is caught.
MARGIN = 4.0

#: More requests than libzmq queues for a peer that is not there (SNDHWM, 1,000 by default).
MANY = 3000


def free_tcp_port() -> int:
    """A 127.0.0.1 port nobody listens on (bound and released by a plain socket, not zmq)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(params=["tcp", "ipc"])
def down_endpoint(request: pytest.FixtureRequest, short_tmp: Path) -> str:
    if request.param == "tcp":
        return f"tcp://127.0.0.1:{free_tcp_port()}"
    return f"ipc://{short_tmp}/nobody"


def run_async(make: Callable[[zmq.asyncio.Context], object]) -> object:
    """Run ``make(ctx)`` (a coroutine) on a fresh loop with its own asyncio Context."""

    async def main() -> object:
        ctx = zmq.asyncio.Context()
        try:
            return await make(ctx)  # type: ignore[misc]
        finally:
            ctx.destroy(linger=0)

    return asyncio.run(main())


# -- the blocking client --------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_request_times_out_after_timeout_times_retries(
    down_endpoint: str, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    with Client(down_endpoint, timeout=0.2, retries=3, context=ctx) as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeout, match="3 attempts"):
            client.request(b"anyone?")
        elapsed = time.monotonic() - started
    # Promise: each of the `retries` attempts waits its whole `timeout`, and no longer.
    assert 0.6 <= elapsed < 0.6 + MARGIN


def test_thousands_of_submits_never_block_and_all_time_out(
    down_endpoint: str, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    timeout, retries = 0.5, 2
    with Client(down_endpoint, timeout=timeout, retries=retries, context=ctx) as client:
        started = time.monotonic()
        futures = []
        slowest = 0.0
        for _ in range(MANY):
            before = time.monotonic()
            futures.append(client.submit(b"x"))
            slowest = max(slowest, time.monotonic() - before)
        submitted = time.monotonic()
        # Promise: submit() never waits for the server, so never longer than a request's timeout.
        assert slowest < timeout
        errors = [future.exception() for future in futures]
        finished = time.monotonic()
    assert all(isinstance(error, RequestTimeout) for error in errors)
    # Promise: each future fails within timeout x retries of its submit.
    assert finished - started < (submitted - started) + timeout * retries + MARGIN


@pytest.mark.parametrize(("count", "window"), [(1500, 2000), (1200, 64)])
def test_map_fails_with_request_timeout_whatever_the_window(
    down_endpoint: str, ctx: zmq.Context[zmq.Socket[bytes]], count: int, window: int
) -> None:
    # A window below SNDHWM does not bound the queue: every attempt's copy stays queued for the
    # server that never connects, so 64 requests x 3 attempts fill it after about 333 requests.
    timeout, retries = 0.05, 3
    with Client(down_endpoint, timeout=timeout, retries=retries, context=ctx) as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            client.map([b"x"] * count, window=window)
        elapsed = time.monotonic() - started
        # map() raises the first error; the requests after it may still be waiting, and they end
        # the same way.
        rest = list(client._futures.values())
        assert all(isinstance(future.exception(), RequestTimeout) for future in rest)
    # Promise: each window's worth of requests ends within timeout x retries.
    batches = math.ceil(count / window)
    assert elapsed < 2 * batches * timeout * retries + MARGIN


@pytest.mark.timeout(30)
def test_cli_against_a_down_server_exits_with_the_timeout_status(
    down_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert client_main(["-e", down_endpoint, "-t", "0.2", "-r", "2", "x"]) == EXIT_TIMEOUT
    assert time.monotonic() - started < 0.4 + MARGIN
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"zmq-client: timeout: no reply from {down_endpoint}")


# -- the asyncio client ---------------------------------------------------------------------------


@pytest.mark.parametrize("count", [400, 2000])
def test_async_concurrent_requests_all_time_out(down_endpoint: str, count: int) -> None:
    timeout, retries = 1.0, 3

    async def go(ctx: zmq.asyncio.Context) -> tuple[list[object], float]:
        async with AsyncClient(
            down_endpoint, timeout=timeout, retries=retries, context=ctx
        ) as client:
            started = time.monotonic()
            results = await asyncio.gather(
                *(client.request(b"x") for _ in range(count)), return_exceptions=True
            )
            return results, time.monotonic() - started

    results, elapsed = run_async(go)  # type: ignore[misc]
    assert all(isinstance(result, RequestTimeout) for result in results)
    # Promise: every request ends within timeout x retries (the issue saw none end in 12 s).
    assert timeout * retries <= elapsed < timeout * retries + MARGIN


# -- a server that comes back ---------------------------------------------------------------------


class EchoServer:
    """A ROUTER bound to ``endpoint`` in its own thread, echoing each request's body."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self._stop = threading.Event()
        self._bound = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(context, endpoint), daemon=True)
        self._thread.start()
        assert self._bound.wait(10), "echo server did not bind"

    def _run(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        try:
            router.bind(endpoint)
            self._bound.set()
            while not self._stop.is_set():
                # A short poll only so that stop() is noticed; this is test scaffolding.
                if not router.poll(50, zmq.POLLIN):
                    continue
                peer, *frames = router.recv_multipart()
                request = parse_client_request(frames)
                reply = encode_client_reply(
                    request.form, request.service, request.body, request_id=request.request_id
                )
                router.send_multipart([peer, *reply])
        except BaseException as exc:
            self.error = exc
        finally:
            self._bound.set()
            router.close(linger=0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "echo server thread did not stop"
        if self.error is not None:
            raise self.error


def test_submitted_requests_waiting_for_a_late_server_all_get_their_reply(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    # More requests than the send queue holds: the first 1,000 wait in libzmq's queue, the rest
    # could not be sent and wait for their next attempt. None may be lost when the server starts.
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    with Client(endpoint, timeout=0.5, retries=8, context=ctx) as client:
        futures = [client.submit(str(i)) for i in range(1500)]
        server = EchoServer(ctx, endpoint)
        try:
            replies = [future.result() for future in futures]
        finally:
            server.stop()
    assert replies == [str(i).encode() for i in range(1500)]


def test_async_requests_waiting_for_a_late_server_all_get_their_reply(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"

    async def go(actx: zmq.asyncio.Context) -> list[object]:
        async with AsyncClient(endpoint, timeout=0.5, retries=8, context=actx) as client:
            tasks = [client.submit(str(i)) for i in range(1500)]
            # Every request is made, and its first attempt sent or refused, while nobody listens.
            while len(client._pipeline) < len(tasks):
                await asyncio.sleep(0)
            server = EchoServer(ctx, endpoint)
            try:
                return list(await asyncio.gather(*tasks))
            finally:
                server.stop()

    assert run_async(go) == [str(i).encode() for i in range(1500)]
