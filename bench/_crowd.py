"""Many connected clients in one process (bench/scenarios.py's crowd; not run by hand).

    python -m bench._launch bench._crowd '{"endpoint": ..., "sockets": 250, "interval": 2.0, ...}'

Opens ``sockets`` DEALER sockets to ``endpoint`` and proves each is connected with one round trip
(all at once), then prints ``READY {json}``. From then on each socket sends one plain request every
``interval`` seconds (spread evenly over the process's sockets), and every reply is checked byte for
byte. A ``STOP`` line on stdin ends the sending; outstanding replies get a bounded wait, then one
JSON line reports counts, errors and latencies.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import zmq

FIRST_ROUND_TIMEOUT = 60.0
DRAIN_TIMEOUT = 3.0


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    n, interval, index = spec["sockets"], spec["interval"], spec["index"]
    ctx: zmq.Context[Any] = zmq.Context()
    ctx.setsockopt(zmq.LINGER, 0)
    socks = []
    poller = zmq.Poller()
    for _ in range(n):
        sock = ctx.socket(zmq.DEALER)
        sock.connect(spec["endpoint"])
        poller.register(sock, zmq.POLLIN)
        socks.append(sock)
    stdin = sys.stdin.fileno()
    poller.register(stdin, zmq.POLLIN)
    clock = time.monotonic_ns
    outstanding: dict[int, tuple[bytes, int]] = {}  # socket number -> (payload, sent)
    latencies: list[int] = []
    errors: list[str] = []
    counter = 0

    def send(i: int) -> None:
        nonlocal counter
        counter += 1
        payload = b"crowd %03d/%05d #%09d" % (index, i, counter)
        socks[i].send_multipart([b"", payload], zmq.NOBLOCK)
        outstanding[i] = (payload, clock())

    def receive(timeout_ms: int) -> bool:
        """Handle replies; True if stdin became readable."""
        events = dict(poller.poll(timeout_ms))
        for i, sock in enumerate(socks):
            if sock in events:
                while True:
                    try:
                        reply = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    entry = outstanding.pop(i, None)
                    if entry is None or reply != [b"", entry[0]]:
                        errors.append(repr([f[:60] for f in reply][:3]))
                    else:
                        latencies.append(clock() - entry[1])
        return stdin in events

    # Every socket proves its connection with one round trip.
    started = time.monotonic()
    for i in range(n):
        send(i)
    while outstanding and time.monotonic() - started < FIRST_ROUND_TIMEOUT:
        receive(100)
    if outstanding:
        print(f"FAILED {len(outstanding)} of {n} sockets got no first reply", flush=True)
        ctx.destroy(linger=0)
        return 1
    first_round = time.monotonic() - started
    latencies.clear()
    print("READY " + json.dumps({"first_round_s": first_round}), flush=True)

    # Steady load: one request every interval / n seconds, from each socket in turn.
    step = interval / n
    next_send = time.monotonic()
    turn = 0
    late = 0
    stopping = False
    while not stopping:
        now = time.monotonic()
        while next_send <= now:
            if turn in outstanding:
                late += 1  # still waiting for this socket's last reply: skip its turn
            else:
                send(turn)
            turn = (turn + 1) % n
            next_send += step
        if receive(max(1, int((next_send - time.monotonic()) * 1000) + 1)):
            os.read(stdin, 64)  # STOP, or end of file if the parent went away: either way stop
            stopping = True
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while outstanding and time.monotonic() < deadline:
        receive(50)
    errors += [f"no reply on socket {i}" for i in outstanding]
    ctx.destroy(linger=0)
    latencies.sort()
    print(
        json.dumps(
            {
                "jobs": len(latencies),
                "errors": len(errors),
                "samples": errors[:3],
                "skipped_turns": late,
                "p50_us": latencies[len(latencies) // 2] / 1000 if latencies else None,
                "p99_us": latencies[int(len(latencies) * 0.99)] / 1000 if latencies else None,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
