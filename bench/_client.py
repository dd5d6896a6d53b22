"""One load-generator client process (started by bench/loadgen.py; not run by hand).

    python -m bench._launch bench._client '{"index": 0, "endpoints": [...], "k": 1, ...}'

Talks to its parent over stdin/stdout, one line each way:

1. connects, prints ``READY``;
2. reads ``GO <t0> <window start> <window end>`` (CLOCK_MONOTONIC ns, shared by all processes on
   Linux), sleeps until ``t0`` and sends until ``window end``;
3. writes its latencies to ``<out>.fast`` / ``<out>.slow`` (int64 ns, native order) and prints one
   JSON line: ``{"ok": ..., "errors": ..., "samples": [...]}``.

Every payload is unique (client index and a counter in its header) and every reply is compared
byte for byte with the request. ``k == 1``: a REQ socket, one request at a time. ``k > 1``: a
DEALER sending plain requests ``['', payload]`` with ``k`` outstanding, replies matched by the
counter in their header. A request is recorded only if it was sent and answered inside the
window; errors (a wrong, unknown or missing reply) count over the whole run.
"""

from __future__ import annotations

import json
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

import zmq

HEADER = b"~%04d c%04d n%012d "  # sleep ms (bench/apps.py), client index, counter
HEADER_SIZE = len(HEADER % (0, 0, 0))
COUNTER = slice(13, 25)
MAX_SAMPLES = 5


class Payloads:
    """Unique payloads of a fixed size; every ``slow_every``-th one asks the app to sleep longer."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.index = spec["index"]
        size = spec["size"]
        self.filler = (b"0123456789abcdef" * (size // 16 + 1))[HEADER_SIZE:size]
        self.slow_every = spec.get("slow_every", 0)
        self.fast_ms = spec.get("fast_ms", 0)
        self.slow_ms = spec.get("slow_ms", 0)
        self.offset = self.index * 3  # clients do not all go slow on the same turn

    def make(self, counter: int) -> tuple[bytes, bool]:
        slow = bool(self.slow_every) and (counter + self.offset) % self.slow_every == 0
        ms = self.slow_ms if slow else self.fast_ms
        return HEADER % (ms, self.index, counter) + self.filler, slow


class Tally:
    def __init__(self, window_start: int, window_end: int) -> None:
        self.start, self.end = window_start, window_end
        self.fast = array("q")
        self.slow = array("q")
        self.errors = 0
        self.samples: list[str] = []

    def record(self, sent: int, received: int, slow: bool) -> None:
        if sent >= self.start and received <= self.end:
            (self.slow if slow else self.fast).append(received - sent)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(what[:200])


def describe(frames: list[bytes]) -> str:
    return repr([f[:60] for f in frames][:3])


Runner = Callable[[int, Tally], None]


def req_client(ctx: zmq.Context[Any], spec: dict[str, Any]) -> Runner:
    """Connect a REQ socket now; return the loop that runs it (k == 1)."""
    timeout_ms = spec["timeout_ms"]

    def connect() -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.REQ)
        sock.linger = 0
        sock.rcvtimeo = sock.sndtimeo = timeout_ms
        for endpoint in spec["endpoints"]:  # several: REQ round-robins over them
            sock.connect(endpoint)
        return sock

    first = connect()

    def run(t0: int, tally: Tally) -> None:
        sock = first
        payloads, clock, end = Payloads(spec), time.monotonic_ns, tally.end
        _sleep_until(t0)
        counter = 0
        while True:
            counter += 1
            payload, slow = payloads.make(counter)
            sent = clock()
            if sent >= end:
                break
            try:
                sock.send(payload)
                reply = sock.recv_multipart()
            except zmq.Again:  # a REQ socket cannot go on without its reply: start afresh
                tally.error(f"no reply within {timeout_ms} ms")
                sock.close()
                sock = connect()
                continue
            received = clock()
            if len(reply) == 1 and reply[0] == payload:
                tally.record(sent, received, slow)
            else:
                tally.error(f"wrong reply {describe(reply)}")
        sock.close()

    return run


def dealer_client(ctx: zmq.Context[Any], spec: dict[str, Any]) -> Runner:
    """Connect a DEALER socket now; return the loop that keeps ``k`` requests outstanding."""
    k, timeout_ms = spec["k"], spec["timeout_ms"]
    timeout_ns = timeout_ms * 1_000_000
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.sndtimeo = timeout_ms
    for endpoint in spec["endpoints"]:
        sock.connect(endpoint)

    def run(t0: int, tally: Tally) -> None:
        payloads, clock, end = Payloads(spec), time.monotonic_ns, tally.end
        # counter -> (payload, sent, slow); insertion order is age order (oldest first).
        outstanding: dict[int, tuple[bytes, int, bool]] = {}
        given_up: set[int] = set()
        counter = 0
        _sleep_until(t0)
        while True:
            now = clock()
            sending = now < end
            if sending:
                while len(outstanding) < k:
                    counter += 1
                    payload, slow = payloads.make(counter)
                    try:
                        sock.send_multipart([b"", payload])
                    except zmq.Again:
                        tally.error(f"send blocked for {timeout_ms} ms")
                        break
                    outstanding[counter] = (payload, clock(), slow)
            elif not outstanding:
                break
            if outstanding:
                oldest = next(iter(outstanding))
                wait_ns = outstanding[oldest][1] + timeout_ns - now
                if wait_ns <= 0:
                    del outstanding[oldest]
                    given_up.add(oldest)
                    tally.error(f"no reply within {timeout_ms} ms")
                    continue
                if sending:
                    wait_ns = min(wait_ns, end - now)
            else:
                wait_ns = end - now
            if not sock.poll(max(1, wait_ns // 1_000_000)):
                continue
            while True:
                try:
                    reply = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                received = clock()
                try:
                    key = int(reply[1][COUNTER]) if len(reply) == 2 and reply[0] == b"" else -1
                except ValueError:
                    key = -1
                entry = outstanding.pop(key, None)
                if entry is None:
                    if key not in given_up:
                        tally.error(f"unexpected reply {describe(reply)}")
                elif reply[1] != entry[0]:
                    tally.error(f"wrong reply {describe(reply)}")
                else:
                    tally.record(entry[1], received, entry[2])
        sock.close()

    return run


def _sleep_until(t_ns: int) -> None:
    left = t_ns - time.monotonic_ns()
    if left > 0:
        time.sleep(left / 1e9)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    ctx: zmq.Context[Any] = zmq.Context()
    run = req_client(ctx, spec) if spec["k"] == 1 else dealer_client(ctx, spec)
    print("READY", flush=True)
    line = sys.stdin.readline().split()  # the parent writes GO within its own bounded wait
    if not line or line[0] != "GO":
        return 2
    t0, window_start, window_end = (int(x) for x in line[1:4])
    tally = Tally(window_start, window_end)
    run(t0, tally)
    ctx.destroy(linger=0)
    out = spec["out"]
    with open(out + ".fast", "wb") as f:
        tally.fast.tofile(f)
    with open(out + ".slow", "wb") as f:
        tally.slow.tofile(f)
    ok = len(tally.fast) + len(tally.slow)
    print(json.dumps({"ok": ok, "errors": tally.errors, "samples": tally.samples}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
