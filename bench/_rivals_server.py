"""The servers of the other systems in bench/compare.py, each as its users write it.

    python -m bench._rivals_server zerorpc ENDPOINT
    python -m bench._rivals_server grpc PORT
    python -m bench._rivals_server majortomo-broker ENDPOINT
    python -m bench._rivals_server majortomo-worker ENDPOINT

Every one runs the same job as zmqserver's ``examples.echo:app``: the payload back, unchanged.
SIGTERM stops each (the gRPC server and majortomo's broker and worker cleanly; zerorpc's gevent
loop exits on it).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from examples.echo import app as echo

SERVICE = b"echo"
GRPC_METHOD = "/bench.Echo/Echo"
#: Threads of each gRPC server process: more than the clients one process sees at C=8.
GRPC_THREADS = 8


def zerorpc_server(endpoint: str) -> None:
    """zerorpc answers each request in its own greenlet (gevent): one process, many in flight."""
    import zerorpc

    class Echo:
        def echo(self, payload: bytes) -> Any:
            return echo(payload)

    server = zerorpc.Server(Echo())
    server.bind(endpoint)
    import gevent

    gevent.signal_handler(signal.SIGTERM, server.stop)
    server.run()
    server.close()


def grpc_server(port: str) -> None:
    """A unary method with grpc's generic handlers: bytes in, bytes out, no generated code."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    def handle(request: bytes, context: Any) -> Any:
        return echo(request)

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(handle)}
    )
    server = grpc.server(ThreadPoolExecutor(max_workers=GRPC_THREADS))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()


def majortomo_broker(endpoint: str) -> None:
    from majortomo.broker import Broker

    broker = Broker(bind=endpoint)
    signal.signal(signal.SIGTERM, lambda *_: broker.stop())
    broker.run()


def majortomo_worker(endpoint: str) -> None:
    from majortomo import Worker, WorkerRequestsIterator

    worker = Worker(endpoint, SERVICE)
    requests = WorkerRequestsIterator(worker)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    for request in requests:
        requests.send_reply_final([echo(request[0])])


SERVERS = {
    "zerorpc": zerorpc_server,
    "grpc": grpc_server,
    "majortomo-broker": majortomo_broker,
    "majortomo-worker": majortomo_worker,
}

if __name__ == "__main__":
    SERVERS[sys.argv[1]](sys.argv[2])
