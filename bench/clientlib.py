"""The client library against a raw pyzmq socket: same server, same run, alternated.

What a user touches is the library, not the broker: this measures what the library costs over
the socket it wraps. One zmqserver (2 workers, the echo app, compiled when built) serves every
run; each pair below runs in this process, one after the other, ``--repeat`` times with the order
alternating, and the table shows the median jobs/s of each side and their ratio, and the CPU
time this process spent per job on each side (user + system, all its threads): on a shared
machine the rates move with the neighbours, the CPU per job much less, and it is the part the
library controls.

| pair | raw side | library side |
|---|---|---|
| ``request`` | a REQ socket, send/recv in a loop | ``Client.request`` in a loop |
| ``map`` | a blocking DEALER keeping ``K`` plain requests in flight | ``Client.map(window=K)`` |
| ``submit`` | the same raw DEALER | ``Client.submit`` K ahead, ``result()`` in order |
| ``aio`` | a ``zmq.asyncio`` DEALER, ``K`` in flight | ``K`` tasks, each ``AsyncClient.request`` |
| ``aio-vs-blocking`` | the raw blocking DEALER (``map``'s raw side) | the ``aio`` library side |

Run: ``.venv/bin/python -m bench.clientlib`` (about a minute), or as part of ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from bench.procs import Launcher
from bench.systems import zmqserver_system
from zmqserver import AsyncClient, Client

PAYLOAD = b"x" * 64


def raw_req(endpoint: str, seconds: float) -> int:
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.connect(endpoint)
    done, end = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            sock.send(PAYLOAD)
            sock.recv()
            done += 1
    finally:
        sock.close(linger=0)
    return done


def raw_dealer(endpoint: str, seconds: float, window: int) -> int:
    """Plain requests ``['', payload]`` with ``window`` outstanding; replies counted."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.connect(endpoint)
    message = [b"", PAYLOAD]
    done, end = 0, time.monotonic() + seconds
    try:
        for _ in range(window):
            sock.send_multipart(message)
        while time.monotonic() < end:
            sock.recv_multipart()
            done += 1
            sock.send_multipart(message)
        for _ in range(window):  # drain, so the next run starts clean
            if sock.poll(3000):
                sock.recv_multipart()
    finally:
        sock.close(linger=0)
    return done


def lib_request(endpoint: str, seconds: float) -> int:
    with Client(endpoint) as client:
        done, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            client.request(PAYLOAD)
            done += 1
    return done


def lib_map(endpoint: str, seconds: float, window: int) -> int:
    with Client(endpoint) as client:
        end = time.monotonic() + seconds
        payloads = itertools.takewhile(lambda _: time.monotonic() < end, itertools.repeat(PAYLOAD))
        return len(client.map(payloads, window=window))


def lib_submit(endpoint: str, seconds: float, window: int) -> int:
    with Client(endpoint) as client:
        done, end = 0, time.monotonic() + seconds
        pending = [client.submit(PAYLOAD) for _ in range(window)]
        while time.monotonic() < end:
            pending.pop(0).result()
            done += 1
            pending.append(client.submit(PAYLOAD))
        for future in pending:
            future.result()
    return done


async def _raw_aio(endpoint: str, seconds: float, window: int) -> int:
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    message = [b"", PAYLOAD]
    done, end = 0, time.monotonic() + seconds
    try:
        for _ in range(window):
            await sock.send_multipart(message)
        while time.monotonic() < end:
            await sock.recv_multipart()
            done += 1
            await sock.send_multipart(message)
        for _ in range(window):
            if await sock.poll(3000):
                await sock.recv_multipart()
    finally:
        sock.close(linger=0)
    return done


async def _lib_aio(endpoint: str, seconds: float, window: int) -> int:
    end = time.monotonic() + seconds
    async with AsyncClient(endpoint) as client:

        async def one() -> int:
            done = 0
            while time.monotonic() < end:
                await client.request(PAYLOAD)
                done += 1
            return done

        return sum(await asyncio.gather(*(one() for _ in range(window))))


def raw_aio(endpoint: str, seconds: float, window: int) -> int:
    return asyncio.run(_raw_aio(endpoint, seconds, window))


def lib_aio(endpoint: str, seconds: float, window: int) -> int:
    return asyncio.run(_lib_aio(endpoint, seconds, window))


#: name -> (raw side, library side), each called as f(endpoint, seconds, window).
Runner = Callable[[str, float, int], int]
PAIRS: dict[str, tuple[Runner, Runner]] = {
    "request": (lambda e, s, _k: raw_req(e, s), lambda e, s, _k: lib_request(e, s)),
    "map": (raw_dealer, lib_map),
    "submit": (raw_dealer, lib_submit),
    "aio": (raw_aio, lib_aio),
    "aio-vs-blocking": (raw_dealer, lib_aio),
}


def measure(
    endpoint: str, pairs: list[str], seconds: float, window: int, repeat: int
) -> list[dict[str, Any]]:
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    for run in range(repeat):
        for name in pairs:
            raw, lib = PAIRS[name]
            sides = [("raw", raw), ("library", lib)]
            if run % 2:
                sides.reverse()  # alternate which side runs first
            for side, fn in sides:
                started = time.process_time()
                done = fn(endpoint, seconds, window)
                used = time.process_time() - started
                rates.setdefault((name, side), []).append(done / seconds)
                cpu.setdefault((name, side), []).append(used / max(done, 1) * 1e6)
    rows = []
    for name in pairs:
        raw_rate = statistics.median(rates[name, "raw"])
        lib_rate = statistics.median(rates[name, "library"])
        k = 1 if name == "request" else window
        rows.append({"pair": name, "k": k, "raw": raw_rate, "library": lib_rate,
                     "ratio": lib_rate / raw_rate,
                     "raw_cpu": statistics.median(cpu[name, "raw"]),
                     "library_cpu": statistics.median(cpu[name, "library"])})  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| pair | K | raw jobs/s | library jobs/s | ratio | client CPU/job raw | library |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['pair']} | {row['k']} | {row['raw']:,.0f} | {row['library']:,.0f} "
            f"| {row['ratio']:.2f} | {row['raw_cpu']:.1f} us | {row['library_cpu']:.1f} us |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clientlib", description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="per side per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--window", type=int, default=16, help="K: requests in flight")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zmqserver-clientlib-") as tmp:
        launcher = Launcher(Path(tmp))
        try:
            app = "examples.echo:app"
            with zmqserver_system(launcher, "clientlib", args.workers, app) as system:
                endpoint = system.endpoints[0]
                lib_request(endpoint, 0.3)  # warm up both ends
                rows = measure(endpoint, args.pairs, args.seconds, args.window, args.repeat)
        finally:
            launcher.stop_all()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
