"""Worker._run_job, the per-job path, without a broker process: replies land on a ROUTER.

The fast path skips what a job does not need (unset hooks, the client-key context variable of a
keyless job); these tests pin down that skipping changes nothing the app or a hook can see.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

import zmqserver
from zmqserver._io import sender
from zmqserver.config import Config
from zmqserver.errors import Status
from zmqserver.hooks import Hooks
from zmqserver.protocol import JobRequest, encode_worker_reply
from zmqserver.worker import Worker


class Broker:
    """The broker's end of a real inproc pair: what the worker sent, in order."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock
        self.received: list[list[bytes]] = []

    @property
    def sent(self) -> list[list[bytes]]:
        while self.sock.poll(100):
            identity, *frames = self.sock.recv_multipart()
            assert identity == b"w-1"
            self.received.append(frames)
        return self.received


@pytest.fixture
def make_worker() -> Iterator[Any]:
    made: list[tuple[Worker, zmq.Socket[bytes]]] = []

    def make(app: Any, hooks: Hooks | None = None) -> tuple[Worker, Broker]:
        worker = Worker(Config(), app, b"w-1", "inproc://unused", os.getppid(), hooks=hooks)
        router = worker.ctx.socket(zmq.ROUTER)
        router.bind("inproc://broker")
        sock = worker.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, b"w-1")
        sock.connect("inproc://broker")
        worker.sock = sock
        worker._send = sender(sock)  # as run() sets it up with the socket
        made.append((worker, router))
        return worker, Broker(router)

    yield make
    for worker, router in made:
        router.close(linger=0)
        worker.close()  # closes the wake-up socketpair too


def test_the_client_key_is_seen_only_by_the_job_that_carries_it(make_worker: Any) -> None:
    seen: list[str | None] = []

    def app(payload: bytes) -> bytes:
        seen.append(zmqserver.client_key())
        return payload

    worker, sock = make_worker(app)
    worker._run_job(JobRequest(b"c1", [b"a"]))
    worker._run_job(JobRequest(b"c2", [b"b"], client_key=b"K" * 40))
    worker._run_job(JobRequest(b"c3", [b"c"]))  # keyless after keyed: no stale key
    assert seen == [None, "K" * 40, None]
    assert zmqserver.client_key() is None
    assert sock.sent == [
        encode_worker_reply(b"c1", [b"a"]),
        encode_worker_reply(b"c2", [b"b"]),
        encode_worker_reply(b"c3", [b"c"]),
    ]


def test_the_key_is_reset_when_the_app_raises(make_worker: Any) -> None:
    def app(payload: bytes) -> bytes:
        raise ValueError("no")

    worker, sock = make_worker(app)
    worker._run_job(JobRequest(b"c1", [b"a"], client_key=b"K" * 40))
    assert zmqserver.client_key() is None
    assert sock.sent == [encode_worker_reply(b"c1", [b"ValueError: no"], status=Status.APP_ERROR)]


def test_hooks_see_the_payload_and_status_and_a_pre_request_veto(make_worker: Any) -> None:
    calls: list[tuple[Any, ...]] = []

    def pre_request(payload: Any) -> None:
        calls.append(("pre", payload, zmqserver.client_key()))
        if payload == b"veto":
            raise PermissionError("vetoed")

    def post_request(payload: Any, status: Status) -> None:
        calls.append(("post", payload, status))

    hooks = Hooks({"pre_request": pre_request, "post_request": post_request})
    worker, sock = make_worker(lambda payload: payload, hooks)
    worker._run_job(JobRequest(b"c1", [b"x", b"y"], client_key=b"K" * 40))
    worker._run_job(JobRequest(b"c2", [b"veto"]))
    assert calls == [
        ("pre", [b"x", b"y"], "K" * 40),
        ("post", [b"x", b"y"], Status.OK),
        ("pre", b"veto", None),
        ("post", b"veto", Status.APP_ERROR),
    ]
    assert sock.sent[0] == encode_worker_reply(b"c1", [b"x", b"y"])
    assert sock.sent[1] == encode_worker_reply(
        b"c2", [b"PermissionError: vetoed"], status=Status.APP_ERROR
    )


def test_replies_of_every_shape(make_worker: Any) -> None:
    replies: list[Any] = [b"b", "s", bytearray(b"ba"), [b"1", "2"], (b"t",), iter([b"p", b"q"])]

    def app(payload: bytes) -> Any:
        return replies.pop(0)

    worker, sock = make_worker(app)
    for n in range(6):
        worker._run_job(JobRequest(b"c%d" % n, [b""]))
    assert sock.sent == [
        encode_worker_reply(b"c0", [b"b"]),
        encode_worker_reply(b"c1", [b"s"]),
        encode_worker_reply(b"c2", [b"ba"]),
        encode_worker_reply(b"c3", [b"1", b"2"]),
        encode_worker_reply(b"c4", [b"t"]),
        encode_worker_reply(b"c5", [b"p"], final=False),
        encode_worker_reply(b"c5", [b"q"], final=False),
        encode_worker_reply(b"c5", []),
    ]
