"""The routing core's cost per job without sockets: ``python -m bench.dispatcher``.

What the broker's own code costs a job, apart from libzmq and the kernel, where a machine's noise
does not reach: the :class:`~zmqserver.broker.Dispatcher` fed C clients' plain requests (K each
a round), its jobs answered by two workers that asked for credit and compact framing (as ours
do), every outcome sent. The worker side's parse and encode are in the figure (a few hundred ns,
the same in every version). Each figure is the best of ``--repeat`` runs, in ns a job. It says
whether a change to the per-job path costs or saves, which end-to-end runs on a shared box
cannot tell apart below about 10%; BENCHMARKS.md quotes it.
"""

from __future__ import annotations

import argparse
import sys
import time

import zmqserver._compiled as compiled
from zmqserver.broker import Dispatcher, Port
from zmqserver.broker.state import Limits
from zmqserver.config import Config
from zmqserver.protocol import encode_ready, encode_worker_reply, parse_broker_message

#: (clients, requests each a round): the end-to-end suite's two small-job configurations.
CONFIGS = ((8, 1), (4, 16))


def run(clients: int, k: int, jobs: int) -> float:
    """ns a job over about ``jobs`` jobs."""
    dispatcher = Dispatcher(b"default", limits=Limits.from_config(Config()))
    now = 1.0
    for worker in (b"w1", b"w2"):
        dispatcher.on_worker(worker, encode_ready(b"default", credit=16, compact=True), now)
    dispatcher.outbox.clear()
    names = [b"client-%d" % i for i in range(clients)]
    payload = [b"", b"x" * 64]
    done = 0
    start = time.perf_counter()
    while done < jobs:
        for name in names:
            for _ in range(k):
                dispatcher.on_client(name, list(payload), now)
        while dispatcher.outbox:  # jobs to workers (replies to clients are only counted)
            out, dispatcher.outbox = dispatcher.outbox, []
            for port, identity, frames in out:
                if port is Port.BACKEND:
                    job = parse_broker_message(frames)
                    reply = encode_worker_reply(job.address, job.body, compact=True)
                    dispatcher.on_worker(identity, reply, now)
                    done += 1
        now += 0.0001
        dispatcher.on_tick(now)
        dispatcher.outbox.clear()
    return (time.perf_counter() - start) / done * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatcher", description=__doc__)
    parser.add_argument("--jobs", type=int, default=200_000, help="jobs a run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is reported")
    args = parser.parse_args(argv)
    built = compiled.compiled().get("broker.dispatch", False)
    print(f"routing core: {'compiled' if built else 'from source'}")
    for clients, k in CONFIGS:
        best = min(run(clients, k, args.jobs) for _ in range(args.repeat))
        print(f"C={clients} K={k}: {best:,.0f} ns a job (best of {args.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
