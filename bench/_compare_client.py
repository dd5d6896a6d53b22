"""One client process of bench/compare.py: one request at a time (K=1) to one system.

    python -m bench._compare_client SYSTEM INDEX SIZE ENDPOINT...

It connects the way that system's users do, makes one request, and prints ``ready``. Then it
reads ``T0 WARMUP DURATION`` (CLOCK_MONOTONIC seconds, the same clock in every process) on stdin,
waits for T0, sends unrecorded requests for WARMUP seconds, then records for DURATION: a request
counts if it was sent and answered inside that window. Every payload is unique (client index and
counter, padded to SIZE bytes) and every reply is compared with it. It prints one JSON line:
``{"jobs": N, "errors": E, "lat_us": [...], "error": "first error"}``.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Callable

Call = Callable[[bytes], bytes]
TIMEOUT = 10.0  # seconds a reply may take before it is an error


def zmqserver_caller(endpoints: list[str]) -> Call:
    from zmqserver import Client

    client = Client(endpoints[0], timeout=TIMEOUT, retries=1)
    return client.request  # type: ignore[return-value]


def celery_caller(endpoints: list[str]) -> Call:
    """``echo.delay(x).get()``: the task is sent through Redis, the result read back from it."""
    from bench._celery_app import TASK, make_app

    echo = make_app(endpoints[0]).signature(TASK)

    def call(payload: bytes) -> bytes:
        # JSON carries text: the payload is ASCII, so the bytes are the same either way.
        return echo.delay(payload.decode()).get(timeout=TIMEOUT).encode()  # type: ignore[no-any-return]

    return call


def zerorpc_caller(endpoints: list[str]) -> Call:
    """One zerorpc client connected to every server: its DEALER round-robins the requests."""
    import zerorpc

    client = zerorpc.Client(timeout=TIMEOUT)
    for endpoint in endpoints:
        client.connect(endpoint)
    return client.echo  # type: ignore[no-any-return]


def grpc_caller(endpoints: list[str]) -> Call:
    """A channel to each server process; requests alternate between them."""
    import grpc

    from bench._rivals_server import GRPC_METHOD

    stubs = [grpc.insecure_channel(e).unary_unary(GRPC_METHOD) for e in endpoints]
    turn = itertools.cycle(stubs)
    return lambda payload: next(turn)(payload, timeout=TIMEOUT)  # type: ignore[no-any-return]


def majortomo_caller(endpoints: list[str]) -> Call:
    from majortomo import Client

    from bench._rivals_server import SERVICE

    client = Client(endpoints[0])
    client.connect()

    def call(payload: bytes) -> bytes:
        client.send(SERVICE, payload)
        return client.recv_all_as_list(timeout=TIMEOUT)[0]  # type: ignore[no-any-return]

    return call


CALLERS: dict[str, Callable[[list[str]], Call]] = {
    "zmqserver": zmqserver_caller,
    "celery": celery_caller,
    "zerorpc": zerorpc_caller,
    "grpc": grpc_caller,
    "majortomo": majortomo_caller,
}


def main() -> int:
    system, index, size, endpoints = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    call = CALLERS[system](endpoints)
    pad = b"x" * size

    def payload(n: int) -> bytes:
        head = b"%04d-%012d-" % (index, n)
        return (head + pad)[: max(size, len(head))]

    first = payload(0)
    if call(first) != first:
        raise SystemExit(f"{system}: the first reply was not the payload")
    print("ready", flush=True)
    t0, warmup, duration = (float(v) for v in sys.stdin.readline().split())
    start, end = t0 + warmup, t0 + warmup + duration
    time.sleep(max(0.0, t0 - time.monotonic()))
    latencies: list[int] = []
    errors, error = 0, ""
    clock = time.monotonic
    for n in itertools.count(1):
        sent = clock()
        if sent >= end:
            break
        message = payload(n)
        try:
            ok = call(message) == message
            problem = "a reply that was not the payload"
        except Exception as exc:  # a timeout or a failure of that system: counted, reported
            ok, problem = False, f"{type(exc).__name__}: {exc}"
        done = clock()
        if sent >= start and done <= end:
            if ok:
                latencies.append(int((done - sent) * 1e6))
            else:
                errors += 1
                error = error or problem
    print(
        json.dumps({"jobs": len(latencies), "errors": errors, "lat_us": latencies, "error": error})
    )
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
