"""A subscriber process for the Suicidal Snail test: a small receive queue, stopped by the test.

Usage: python -m tests.integration.pubsub_snail ENDPOINT PREFIX OUTFILE. Prints ``ready`` once
its snapshot is in, then follows updates until ``<PREFIX>done`` is set, and writes its state and
counters as JSON to OUTFILE.
"""

from __future__ import annotations

import json
import sys
import time

from zmqserver import Subscriber


def main() -> None:
    endpoint, prefix, outfile = sys.argv[1:4]
    done = (prefix + "done").encode()
    with Subscriber(endpoint, prefix, rcvhwm=20) as sub:
        deadline = time.monotonic() + 120
        ready = False
        while time.monotonic() < deadline:
            sub.recv(0.2)
            if not ready and sub.snapshots:
                print("ready", flush=True)
                ready = True
            if sub.state.get(done):
                break
        result = {
            "state": {k.decode(): v.decode() for k, v in sub.state.items()},
            "gaps": sub.gaps,
            "snapshots": sub.snapshots,
        }
    with open(outfile, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
