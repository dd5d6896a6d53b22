"""A majortomo (PyPI) Worker as its users write it, run as its own process by the interop tests.

``python tests/majortomo_worker.py ENDPOINT SERVICE HEARTBEAT_S``: serves SERVICE, answering each
request with its frames upper-cased; a request ``sleep S`` first works for S seconds without
a word to the broker (majortomo's worker is single-threaded: it neither reads nor heartbeats
while it runs a job). It exits when the broker drops it (DISCONNECT), as majortomo's request
iterator does, printing ``dropped``.
"""

from __future__ import annotations

import sys
import time

from majortomo import Worker, WorkerRequestsIterator


def main() -> int:
    endpoint, service, heartbeat = sys.argv[1], sys.argv[2], float(sys.argv[3])
    worker = Worker(endpoint, service.encode(), heartbeat_interval=heartbeat)
    requests = WorkerRequestsIterator(worker)
    for request in requests:
        if request and request[0].startswith(b"sleep "):
            time.sleep(float(request[0][6:]))
        requests.send_reply_final([frame.upper() for frame in request])
    print("dropped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
