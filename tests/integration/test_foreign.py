"""Foreign peers written from the RFCs alone (raw pyzmq frames, none of zmqserver's code).

These are what a C or Go programmer would write from docs/protocol.md and ZeroMQ RFCs 7 and 18:
they prove the broker speaks the published protocols, not just to its own worker and client.
"""

from __future__ import annotations

import threading
import time

import pytest
import zmq

pytestmark = pytest.mark.timeout(60)


class RawWorker(threading.Thread):
    """An MDP worker from the RFC: READY, then answer each REQUEST with FINAL/REPLY, upper-cased.

    ``version`` 2 is RFC 18 (DEALER, no empty frame, FINAL = 0x04, HEARTBEAT = 0x05); version 1 is
    RFC 7 (an empty frame first, REPLY = 0x03, HEARTBEAT = 0x04).
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, service: bytes, version: int) -> None:
        super().__init__(daemon=True)
        self.ctx, self.endpoint, self.service, self.version = ctx, endpoint, service, version
        self.stop = threading.Event()
        self.served = 0

    def run(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        if self.version == 2:
            prefix, ready, request, reply, heartbeat = [b"MDPW02"], 1, 2, 4, 5
        else:
            prefix, ready, request, reply, heartbeat = [b"", b"MDPW01"], 1, 2, 3, 4
        sock.send_multipart([*prefix, bytes([ready]), self.service])
        try:
            while not self.stop.is_set():
                if not sock.poll(100):
                    sock.send_multipart([*prefix, bytes([heartbeat])])
                    continue
                frames = sock.recv_multipart()[len(prefix) :]
                if frames[0] == bytes([request]):
                    address, empty, *body = frames[1:]
                    assert empty == b""
                    answer = [frame.upper() for frame in body]
                    # Counted before the reply goes: a test that has the reply must see the count
                    # (counted after, the client could read both before this thread got there).
                    self.served += 1
                    sock.send_multipart([*prefix, bytes([reply]), address, b"", *answer])
        finally:
            sock.close(linger=0)


@pytest.fixture
def raw_worker(ctx):
    workers: list[RawWorker] = []

    def start(endpoint: str, service: bytes, version: int) -> RawWorker:
        worker = RawWorker(ctx, endpoint, service, version)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop.set()
        worker.join(10)
        assert not worker.is_alive()


def mdp02_request(sock: zmq.Socket, service: bytes, *body: bytes) -> list[bytes]:
    sock.send_multipart([b"MDPC02", b"\x01", service, *body])
    assert sock.poll(10_000), "no reply"
    return sock.recv_multipart()


@pytest.mark.parametrize("version", [1, 2])
def test_foreign_worker_serves_mdp_clients(start_server, raw_worker, version):
    server = start_server("examples.echo:app", workers=1)
    server.wait_ready()
    worker = raw_worker(server.backend, b"shout", version)
    client = server.socket(zmq.DEALER)
    # The service appears once the worker's READY arrives; MMI says when.
    for _ in range(100):
        if mdp02_request(client, b"mmi.service", b"shout")[3:] == [b"200"]:
            break
    reply = mdp02_request(client, b"shout", b"hello", b"world")
    assert reply == [b"MDPC02", b"\x03", b"shout", b"HELLO", b"WORLD"]
    assert worker.served == 1
    client.close()


def test_mdp01_client_and_delimited_mdp02_client(start_server):
    server = start_server("examples.upper:app", workers=1)
    server.wait_ready()
    req = server.socket(zmq.REQ)
    req.send_multipart([b"MDPC01", b"default", b"one"])
    assert req.poll(10_000)
    assert req.recv_multipart() == [b"MDPC01", b"default", b"ONE"]
    req.close()
    dealer = server.socket(zmq.DEALER)
    dealer.send_multipart([b"", b"MDPC02", b"\x01", b"default", b"two"])
    assert dealer.poll(10_000)
    assert dealer.recv_multipart() == [b"", b"MDPC02", b"\x03", b"default", b"TWO"]
    dealer.close()


def test_mmi_over_the_wire(start_server):
    server = start_server("examples.upper:app", workers=1)
    server.wait_ready()
    sock = server.socket(zmq.DEALER)
    assert mdp02_request(sock, b"mmi.service", b"default")[3:] == [b"200"]
    assert mdp02_request(sock, b"mmi.service", b"nope")[3:] == [b"404"]
    assert mdp02_request(sock, b"mmi.services")[3:] == [b"default"]
    assert mdp02_request(sock, b"mmi.whatever")[3:] == [b"501"]
    sock.close()


def test_foreign_worker_for_reserved_service_is_refused(start_server, ctx):
    server = start_server("examples.echo:app", workers=1)
    server.wait_ready()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.backend)
    sock.send_multipart([b"MDPW02", b"\x01", b"mmi.service"])
    assert sock.poll(10_000)
    assert sock.recv_multipart() == [b"MDPW02", b"\x06"]
    sock.close()


def test_foreign_worker_in_compact_framing(start_server, ctx):
    """protocol.md §6.1a from the text alone: a worker asks for compact framing in READY's credit
    header, then gets each job as one frame (magic, REQUEST, token) before the body, and answers
    likewise (a PARTIAL, an error FINAL); MDP clients see nothing of it."""
    magic = b"\x00ZQ\x01"
    server = start_server("examples.echo:app", workers=1)
    server.wait_ready()
    worker = ctx.socket(zmq.DEALER)
    worker.setsockopt(zmq.LINGER, 0)
    worker.connect(server.backend)
    worker.send_multipart([b"MDPW02", b"\x01", b"tight", magic + b"\x00\x02\x01"])  # credit 2
    first, second = server.socket(zmq.DEALER), server.socket(zmq.DEALER)
    for _ in range(100):
        if mdp02_request(first, b"mmi.service", b"tight")[3:] == [b"200"]:
            break
    first.send_multipart([b"MDPC02", b"\x01", b"tight", b"one"])
    second.send_multipart([b"MDPC02", b"\x01", b"tight", b"two", b"parts"])
    bodies = []
    deadline = time.monotonic() + 10
    while len(bodies) < 2:  # (a service's first jobs go one at a time: the prefetch gate)
        assert time.monotonic() < deadline, "no jobs"
        if not worker.poll(100):
            worker.send_multipart([b"MDPW02", b"\x05"])  # heartbeats stay MDP
            continue
        head, *body = worker.recv_multipart()
        if [head, *body] == [b"MDPW02", b"\x05"]:
            continue
        assert head[:5] == magic + b"\x02"
        assert len(head) == 5 + 8  # today's tokens are 8 bytes
        token = head[5:]
        bodies.append(body)
        if body == [b"one"]:
            worker.send_multipart([magic + b"\x04" + token, b"ONE"])
        else:
            worker.send_multipart([magic + b"\x03" + token, b"TWO"])  # PARTIAL
            worker.send_multipart([magic + b"\x04" + token, magic + b"\x01", b"ValueError: no"])
    assert sorted(bodies) == [[b"one"], [b"two", b"parts"]]
    assert first.poll(10_000)
    assert first.recv_multipart() == [b"MDPC02", b"\x03", b"tight", b"ONE"]
    assert second.poll(10_000)
    assert second.recv_multipart() == [b"MDPC02", b"\x02", b"tight", b"TWO"]
    assert second.poll(10_000)
    final = second.recv_multipart()
    assert final[:4] == [b"MDPC02", b"\x03", b"tight", magic + b"\x01"]  # app_error
    assert b"ValueError: no" in b"".join(final[4:])
    for sock in (worker, first, second):
        sock.close(linger=0)


def test_plain_errors_drop_sends_a_plain_client_nothing_for_an_error(start_server):
    """--plain-errors drop: a REQ client whose job fails hears nothing (it would retry, as with
    a dead server); its next job is answered; an MDP client still gets the error."""
    server = start_server("tests.apps:fail", "--plain-errors", "drop", workers=1)
    server.wait_ready()
    req = server.socket(zmq.REQ)
    req.send(b"boom")
    assert not req.poll(1500)
    req.close()
    assert server.request(b"fine") == [b"fine"]
    sock = server.socket(zmq.DEALER)
    reply = mdp02_request(sock, b"default", b"boom")
    assert reply[3] == b"\x00ZQ\x01\x01"  # app_error
    sock.close()


def test_a_request_for_a_service_waits_for_its_worker(start_server, raw_worker):
    """RFC 7/18: the broker SHOULD queue a request for a service no worker has registered yet.
    MMI says 404 until the worker comes (RFC 8); the request is answered once it does."""
    server = start_server("examples.echo:app", workers=1)
    server.wait_ready()
    client, mmi = server.socket(zmq.DEALER), server.socket(zmq.DEALER)
    client.send_multipart([b"MDPC02", b"\x01", b"late", b"hello"])
    assert mdp02_request(mmi, b"mmi.service", b"late")[3:] == [b"404"]
    assert not client.poll(500)
    raw_worker(server.backend, b"late", 2)
    assert client.poll(10_000)
    assert client.recv_multipart() == [b"MDPC02", b"\x03", b"late", b"HELLO"]
    assert mdp02_request(mmi, b"mmi.service", b"late")[3:] == [b"200"]
    client.close()
    mmi.close()
