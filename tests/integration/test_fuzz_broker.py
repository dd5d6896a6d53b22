"""Socket-level fuzzing of a live broker: 100,000+ hostile messages on both ports, then business
as usual.

The property-based fuzzing of the parser and the dispatch core is in
tests/unit/test_dispatch_random.py (hypothesis, no sockets). This file throws real multipart
messages at a real ``zmqserver serve`` (through libzmq, the compiled I/O path or, with
ZMQSERVER_PURE_PYTHON=1, the pure-Python one):

* random messages: random frame counts and sizes, from empty frames to frames past the
  ``MAXMSGSIZE`` backstop (which makes libzmq drop that connection), built from protocol tokens
  (``MDPC01``, ``MDPC02``, ``MDPW01``, ``MDPW02``, command bytes, header magic) and random bytes;
* mutations of valid messages: plain, raw, MDP/0.1 and MDP/0.2 client requests with and without
  zmqserver headers (random ids, timeouts, flags), MMI queries, and MDP/0.1 and 0.2 worker
  READY / HEARTBEAT / DISCONNECT / PARTIAL / FINAL (with or without status headers), each with
  frames dropped, duplicated, swapped, inserted, truncated, extended or flipped;
* from several sockets on each port: DEALERs with and without routing ids, some closed and
  reopened under the same id mid-run (ROUTER_HANDOVER), plus an "impostor" worker that registers
  for the default service and answers each job it gets with the job token of *another* job.

Meanwhile a normal client keeps sending jobs and checks each reply; no reply may ever be
someone else's (errors are allowed while hostile workers hold its jobs). Afterwards the broker
must be alive and a normal client must get every reply right.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable

import pytest
import zmq
from tests.helpers import ServerProcess, wait_until

from zmqserver import Client
from zmqserver.errors import QueueFull, RequestTimeout, ServerError, Status
from zmqserver.protocol import (
    COMPACT_FINAL,
    COMPACT_PARTIAL,
    COMPACT_REQUEST,
    FEATURE_COMPACT,
    HEADER_MAGIC,
    MDPC01,
    MDPC02,
    MDPW01,
    MDPW02,
    encode_credit_header,
    encode_ready,
    encode_request_header,
    encode_status_header,
    encode_worker_reply,
)

pytestmark = pytest.mark.timeout(120)

Context = zmq.Context[zmq.Socket[bytes]]
Frames = list[bytes]

N_MESSAGES = 100_000
#: Upper bound on the sending phase; the test fails if 100,000 messages did not fit in it.
SEND_BUDGET = 60.0
BACKLOG_PATIENCE = 30.0  # for the broker to admit new jobs after the attack
MAX_MESSAGE_SIZE = 65536  # the backstop (libzmq MAXMSGSIZE) is 4x this, per frame
IMPOSTOR_BODY = b"IMPOSTOR: a reply for another job"

TOKENS: list[bytes] = [
    b"",
    b"",
    MDPC01,
    MDPC02,
    MDPW01,
    MDPW02,
    *(bytes([i]) for i in range(9)),
    b"\xff",
    b"default",
    b"echo",
    b"mmi.service",
    b"mmi.services",
    b"mmi.nope",
    HEADER_MAGIC,
    HEADER_MAGIC + b"\x00",
    encode_status_header(Status.OK),
    HEADER_MAGIC + bytes(13),  # a request header's length
    HEADER_MAGIC + bytes(9),  # a reply header's length
    COMPACT_FINAL,
    COMPACT_PARTIAL,
    COMPACT_REQUEST,
    encode_credit_header(2, FEATURE_COMPACT),
    b"ERROR app_error: x",
    b"pid:1",
    b"x" * 256,
]


def server_env() -> dict[str, str]:
    """Pass ZMQSERVER_PURE_PYTHON on to the server (tests/helpers.py drops ZMQSERVER_*)."""
    pure = os.environ.get("ZMQSERVER_PURE_PYTHON")
    return {"ZMQSERVER_PURE_PYTHON": pure} if pure else {}


class Fuzzer:
    """Random and mutated-valid messages for either port, from a seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def frame(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            return rng.choice(TOKENS)
        if r < 0.85:
            return rng.randbytes(rng.randrange(0, 24))
        if r < 0.98:
            return rng.randbytes(rng.randrange(24, 1100))  # around the 1 KiB inline limit
        if r < 0.9995:
            return rng.randbytes(rng.randrange(1100, MAX_MESSAGE_SIZE + 1000))
        return bytes(4 * MAX_MESSAGE_SIZE + rng.randrange(-8, 8))  # the MAXMSGSIZE backstop

    def header(self) -> bytes:
        rng = self.rng
        return encode_request_header(
            rng.getrandbits(64),
            rng.choice([0, 1, 50, 1000, 60_000, 2**32 - 1, rng.getrandbits(32)]),
            rng.choice([0, 1, 0xFE, 0xFF, rng.getrandbits(8)]),
        )

    def body(self) -> Frames:
        return [self.frame() for _ in range(self.rng.choice([0, 1, 1, 1, 2, 3, 6]))]

    def service(self) -> bytes:
        return self.rng.choice([b"", b"default", b"default", b"echo", b"mmi.service", self.frame()])

    def client_message(self) -> Frames:
        rng = self.rng
        hdr = [self.header()] if rng.random() < 0.6 else []
        kind = rng.randrange(7)
        if kind == 0:
            frames = [b"", *self.body()]
        elif kind == 1:
            frames = self.body() or [b"raw"]
        elif kind == 2:
            frames = [b"", MDPC01, self.service(), *hdr, *self.body()]
        elif kind == 3:
            frames = [MDPC02, b"\x01", self.service(), *hdr, *self.body()]
        elif kind == 4:
            frames = [b"", MDPC02, b"\x01", self.service(), *hdr, *self.body()]
        elif kind == 5:
            frames = [MDPC02, b"\x01", rng.choice([b"mmi.service", b"mmi.services"]), b"default"]
        else:
            frames = [MDPC02, rng.choice([b"\x02", b"\x03", b"\x07"]), b"default", *self.body()]
        return self.mutate(frames)

    def worker_message(self) -> Frames:
        rng = self.rng
        # Never a real job token: real ones are a counter from 1, far below 2**63.
        token = rng.choice([bytes([0x80 | rng.getrandbits(7)]) + rng.randbytes(7), self.frame()])
        kind = rng.randrange(10)
        if kind == 0:
            frames = [MDPW02, b"\x01", self.service()]
        elif kind == 8:
            features = rng.choice([FEATURE_COMPACT, 0xFF])
            frames = [MDPW02, b"\x01", self.service(), encode_credit_header(2, features)]
        elif kind == 9:  # compact framing, asked for or not
            head = rng.choice([COMPACT_FINAL, COMPACT_PARTIAL, COMPACT_REQUEST, HEADER_MAGIC])
            status = [HEADER_MAGIC + bytes([rng.choice([0, 1, 9])])] if rng.random() < 0.3 else []
            frames = [head + token, *status, *self.body()]
        elif kind == 1:
            frames = [b"", MDPW01, b"\x01", self.service()]
        elif kind == 2:
            frames = [MDPW02, b"\x05"]
        elif kind == 3:
            frames = [MDPW02, b"\x06"]
        elif kind == 4:
            frames = [MDPW02, rng.choice([b"\x03", b"\x04"]), token, b"", *self.body()]
        elif kind == 5:
            status = rng.choice([0, 1, 2, 3, 8, 9, 255])
            frames = [MDPW02, b"\x04", token, b"", HEADER_MAGIC + bytes([status]), *self.body()]
        elif kind == 6:
            frames = [b"", MDPW01, rng.choice([b"\x03", b"\x04", b"\x05"]), token, b""]
        else:
            frames = [MDPW02, b"\x02", token, b"", *self.body()]  # REQUEST from a worker
        if rng.random() < 0.2:
            frames = [b"", *frames]
        return self.mutate(frames)

    def random_message(self) -> Frames:
        return [self.frame() for _ in range(self.rng.randrange(1, 9))]

    def mutate(self, frames: Frames) -> Frames:
        rng = self.rng
        frames = list(frames)
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            op = rng.randrange(8)
            i = rng.randrange(len(frames)) if frames else 0
            if op == 0 and len(frames) > 1:
                del frames[i]
            elif op == 1 and frames:
                frames.insert(i, frames[i])
            elif op == 2 and len(frames) > 1:
                j = rng.randrange(len(frames))
                frames[i], frames[j] = frames[j], frames[i]
            elif op == 3:
                frames.insert(i, self.frame())
            elif op == 4 and frames:
                frames[i] = self.frame()
            elif op == 5 and frames and frames[i]:
                frames[i] = frames[i][: rng.randrange(len(frames[i]))]
            elif op == 6 and frames:
                frames[i] = frames[i] + rng.randbytes(rng.randrange(1, 20))
            elif op == 7 and frames and frames[i]:
                k = rng.randrange(len(frames[i]))
                flipped = frames[i][k] ^ (1 << rng.randrange(8))
                frames[i] = frames[i][:k] + bytes([flipped]) + frames[i][k + 1 :]
        return frames or [b""]


class Sockets:
    """The fuzzing sockets of one port: some anonymous, some with fixed routing ids."""

    def __init__(self, ctx: Context, endpoint: str, names: list[bytes | None]) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.names = names
        self.socks = [self._open(name) for name in names]
        self.received = 0

    def _open(self, name: bytes | None) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        if name is not None:
            sock.setsockopt(zmq.ROUTING_ID, name)
        sock.connect(self.endpoint)
        return sock

    def reopen(self, i: int) -> None:
        """Close socket ``i`` and open a new one with the same routing id (if it has one)."""
        self.socks[i].close(linger=0)
        self.socks[i] = self._open(self.names[i])

    def send(self, i: int, frames: Frames, deadline: float) -> None:
        sock = self.socks[i]
        while True:
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
                return
            except zmq.Again:
                # The broker is behind (or this connection was dropped and is reconnecting).
                if time.monotonic() > deadline:
                    pytest.fail("the broker stopped taking messages")
                self.drain()
                sock.poll(50, zmq.POLLOUT)

    def drain(self) -> None:
        for sock in self.socks:
            while True:
                try:
                    sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.received += 1

    def close(self) -> None:
        for sock in self.socks:
            sock.close(linger=0)


class Impostor:
    """A registered worker of the default service that answers each job with another job's
    token: the broker must disconnect it, never hand its answer to anybody. ``compact``: one
    that asks for compact framing and answers in it."""

    def __init__(self, ctx: Context, endpoint: str, compact: bool = False) -> None:
        self.compact = compact
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, b"fuzz-impostor-%d" % compact)
        self.sock.connect(endpoint)
        self.sock.send_multipart(self._ready())
        self.jobs = 0
        self.disconnects = 0
        self.rng = random.Random(7)

    def _ready(self) -> list[bytes]:
        # Credit 1, compact or not: holding two jobs, its "wrong" token could be the other one's,
        # and that answer would be a valid one.
        return encode_ready(b"default", credit=1, compact=self.compact)

    def step(self) -> None:
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frames[:2] == [MDPW02, b"\x02"] and len(frames) >= 4:
                token = frames[2]
            elif frames[0].startswith(COMPACT_REQUEST):
                token = frames[0][len(COMPACT_REQUEST) :]
            elif frames == [MDPW02, b"\x06"]:
                self.disconnects += 1
                self.sock.send_multipart(self._ready())  # and back for more
                continue
            else:
                continue
            self.jobs += 1
            number = int.from_bytes(token, "big") + self.rng.choice([-2, -1, 1, 2, 5])
            wrong = max(number, 0).to_bytes(8, "big")
            if wrong == token:
                wrong = (number + 1).to_bytes(8, "big")
            reply = encode_worker_reply(wrong, [IMPOSTOR_BODY], compact=self.compact)
            self.sock.send_multipart(reply)


class Checker(threading.Thread):
    """A well-behaved client running alongside the fuzz; records any reply that is not its own."""

    def __init__(self, ctx: Context, endpoint: str) -> None:
        super().__init__(name="checker", daemon=True)
        self.ctx = ctx
        self.endpoint = endpoint
        self.stop = threading.Event()
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.wrong: list[tuple[bytes, object]] = []
        self.crash: BaseException | None = None

    def run(self) -> None:
        try:
            with Client(self.endpoint, timeout=2, retries=2, context=self.ctx) as client:
                i = 0
                while not self.stop.is_set():
                    payload = b"checker-%d" % i
                    i += 1
                    try:
                        reply = client.request(payload)
                    except (ServerError, RequestTimeout) as exc:
                        # Allowed while hostile workers hold our jobs: worker_lost, expired,
                        # queue_full, or no reply in time. Never a wrong reply.
                        name = type(exc).__name__
                        self.errors[name] = self.errors.get(name, 0) + 1
                        continue
                    if reply == payload:
                        self.ok += 1
                    else:
                        self.wrong.append((payload, reply))
        except BaseException as exc:
            self.crash = exc


def wait_hostile_workers_forgotten(ctx: Context, backend: str) -> None:
    """Return once the broker has forgotten every worker that fell silent before this call.

    A sentinel registers (for a service of its own) after the hostile sockets are closed, then
    says nothing more. The broker checks every registered worker against its expiry at each
    heartbeat tick and drops all that are past it at once, sending each a DISCONNECT; the
    hostile workers' last words came before the sentinel's READY, so their expiries are no
    later than its own. Its DISCONNECT is the observable event: by then they are gone too (the
    promise, docs/reliability.md section 2: within interval x (liveness + 1), 1 s here).
    """
    sentinel = ctx.socket(zmq.DEALER)
    sentinel.setsockopt(zmq.LINGER, 0)
    sentinel.setsockopt(zmq.ROUTING_ID, b"fuzz-sentinel")
    sentinel.connect(backend)
    try:
        # Its own service: no backlog job can reach it. A foreign worker holding a job is judged
        # by the job's deadline, not by silence (liveness.py), and might never be dropped.
        sentinel.send_multipart(encode_ready(b"fuzz-sentinel"))
        deadline = time.monotonic() + 30  # a hang bound on a loaded box, not a speed claim
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sentinel.poll(left * 1000):
                pytest.fail("the broker never dropped a silent worker (no DISCONNECT)")
            # HEARTBEATs until its DISCONNECT; it stays silent.
            if sentinel.recv_multipart() == [MDPW02, b"\x06"]:
                return
    finally:
        sentinel.close(linger=0)


@pytest.mark.skipif(
    not os.environ.get("ZMQSERVER_PURE_PYTHON"), reason="only in the pure-Python pass of make test"
)
def test_pure_python_pass_reaches_the_servers(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(None, workers=1)  # no env=: what every other integration test does
    server.wait_ready()
    with open(f"/proc/{server.pid}/maps") as maps:
        assert "_fastio" not in maps.read()


@pytest.mark.slow
@pytest.mark.timeout(SEND_BUDGET + BACKLOG_PATIENCE + 60)
def test_broker_survives_100k_hostile_messages_and_still_serves(
    start_server: Callable[..., ServerProcess], ctx: Context
) -> None:
    server = start_server(
        None,  # echo
        "--max-message-size",
        str(MAX_MESSAGE_SIZE),
        "--max-queue",
        "2000",  # bounds the backlog the fuzz leaves behind (and exercises queue_full)
        "--log-level",
        "error",  # a warning per hostile message would be most of the broker's work
        workers=2,
        env=server_env(),
    )
    server.wait_workers(2)
    server.wait_ready()
    front = Sockets(ctx, server.frontend, [None, None, b"fuzz-client-1", b"fuzz-client-2"])
    back = Sockets(ctx, server.backend, [None, b"fuzz-worker-1", b"fuzz-worker-2", b"w"])
    impostors = [Impostor(ctx, server.backend), Impostor(ctx, server.backend, compact=True)]
    checker = Checker(ctx, server.frontend)
    fuzz = Fuzzer(seed=20261128)
    sent = {"front": 0, "back": 0}
    started = time.monotonic()
    deadline = started + SEND_BUDGET
    checker.start()
    try:
        for n in range(N_MESSAGES):
            r = fuzz.rng.random()
            if r < 0.5:
                sockets, which = front, "front"
                frames = fuzz.client_message() if r < 0.35 else fuzz.random_message()
            else:
                sockets, which = back, "back"
                frames = fuzz.worker_message() if r < 0.85 else fuzz.random_message()
            sockets.send(fuzz.rng.randrange(len(sockets.socks)), frames, deadline)
            sent[which] += 1
            if n % 256 == 0:
                front.drain()
                back.drain()
                for impostor in impostors:
                    impostor.step()
            if n % 9973 == 0:
                front.reopen(fuzz.rng.randrange(len(front.socks)))
                back.reopen(fuzz.rng.randrange(len(back.socks)))
            if n % 1000 == 0:
                assert server.proc.poll() is None, f"broker died (log:\n{server.log()[-3000:]})"
        sending = time.monotonic() - started
    finally:
        checker.stop.set()
        checker.join(30)
        front.close()
        back.close()
        for impostor in impostors:
            impostor.sock.close(linger=0)

    assert not checker.is_alive()
    assert checker.crash is None
    assert checker.wrong == []  # no reply ever reached the wrong client
    assert front.received > 0  # the broker kept answering during the attack
    assert server.proc.poll() is None, server.log()[-3000:]

    # Hostile workers that are gone are forgotten within interval x (liveness + 1) = 1 s; their
    # jobs are retried (the checker's) or answered worker_lost. Then it is business as usual,
    # once the backlog is worked off: up to max_queue of the fuzz's jobs, plus those requeued
    # from hostile workers as they were forgotten (an accepted job is never dropped, max_queue
    # or not), all for clients that are gone. Until the two echo workers are through them a
    # new job may be refused with queue_full: a clear answer, so the client waits the backlog
    # out, as a real one would, for a bounded time. (8110 queued were once seen here, with
    # the broker on one core: max_queue did not hold while a busy worker had spare credit.)
    wait_hostile_workers_forgotten(ctx, server.backend)
    refused = 0
    with Client(server.frontend, timeout=10, retries=3, context=ctx) as client:
        for i in range(200):
            payload: bytes | list[bytes] = b"after-%d" % i if i % 2 else [b"a", b"%d" % i]
            give_up = time.monotonic() + BACKLOG_PATIENCE
            while True:
                try:
                    reply = client.request(payload)
                    break
                except QueueFull:
                    refused += 1
                    assert time.monotonic() < give_up, "the backlog was never worked off"
                    time.sleep(0.05)
            assert reply == payload
    assert server.request(b"plain", b"after") == [b"plain", b"after"]
    wait_until(lambda: len(server.worker_pids()) == 2, 15, "two workers")
    assert server.proc.poll() is None
    log = server.log()
    assert "Traceback" not in log, log[-5000:]
    print(
        f"\nmeasured: fuzz: sent={sum(sent.values())} ({sent}) in {sending:.1f}s "
        f"({sum(sent.values()) / sending:.0f} msg/s), fuzz replies read={front.received}, "
        f"backend messages read={back.received}, "
        f"impostor jobs={[i.jobs for i in impostors]}, "
        f"impostor disconnects={[i.disconnects for i in impostors]}, checker ok={checker.ok}, "
        f"checker errors={checker.errors}, queue_full after the attack={refused}"
    )
