"""A broker with no sockets: the dispatcher, real client request states and fake workers.

As h11's ConnectionPair wires a client and a server connection back to back, :class:`Pair` wires
the three sans-IO parts of a job's journey to each other:

- clients: :class:`~zmqserver.client.RequestState`, the Lazy Pirate core the real ``Client``
  drives (attempts, deadlines, resends), under a routing id that survives resends (the broker's
  ROUTER_HANDOVER gives the real client the same);
- the :class:`~zmqserver.broker.Dispatcher`, fed their frames as its ROUTER sockets would;
- fake workers that take the jobs sent to them, run them when a test says so (counting every
  run), and heartbeat while they are alive.

One clock, :attr:`Pair.now`, moved only by :meth:`Pair.advance`. The network is
:meth:`Pair.deliver`, which carries every frame the dispatcher sends to its peer, unless a test
asked to lose it: losing a reply is how a Lazy Pirate resend is provoked without sockets.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.helpers import limits

from zmqserver.broker import Dispatcher, Port
from zmqserver.broker.events import Event
from zmqserver.client import RequestState, Response
from zmqserver.errors import Status, ZmqServerError
from zmqserver.protocol import (
    FLAG_RETRYABLE,
    Disconnect,
    JobRequest,
    encode_disconnect,
    encode_heartbeat,
    encode_ready,
    encode_worker_reply,
    parse_broker_message,
)

SERVICE = b"echo"


class FakeWorker:
    """A worker without a process: the jobs it holds, the runs it made, whether it is alive."""

    def __init__(self, identity: bytes) -> None:
        self.identity = identity
        self.jobs: list[JobRequest] = []  # sent to it, not answered yet, oldest first
        self.alive = True  # heartbeats on every tick while alive; silent (hung) if not
        self.killed = False  # the dispatcher asked for it to be killed
        self.disconnected = False  # the dispatcher sent it DISCONNECT


class FakeClient:
    """One client request: its routing id, its real RequestState, and how it ended."""

    def __init__(self, identity: bytes, state: RequestState) -> None:
        self.identity = identity
        self.state = state
        self.response: Response | None = None
        self.error: ZmqServerError | None = None
        self.lose_replies = 0  # replies the network will lose on their way to this client
        self.replies_seen = 0  # replies that reached it (its own or not)
        self.ended_at: float | None = None  # when it got its response or error

    @property
    def body(self) -> list[bytes] | None:
        return None if self.response is None else self.response.body


class Pair:
    """The dispatcher, its clients and workers, moving frames between them with no sockets."""

    def __init__(self, *, now: float = 0.0, **dispatcher: Any) -> None:
        dispatcher.setdefault("heartbeat_interval", 1.0)
        dispatcher.setdefault("heartbeat_liveness", 3)
        self.now = now
        dispatcher.setdefault("limits", limits())
        self.dispatcher = Dispatcher(SERVICE, now=now, **dispatcher)
        self.workers: dict[bytes, FakeWorker] = {}
        self.clients: dict[bytes, FakeClient] = {}
        #: Payload -> how many times a worker ran it.
        self.runs: Counter[bytes] = Counter()
        #: Everything the dispatcher reported, oldest first.
        self.events: list[Event] = []
        self._next_id = 0

    # -- the peers --------------------------------------------------------------------------------

    def add_worker(self, identity: bytes, credit: int = 1) -> FakeWorker:
        worker = self.workers[identity] = FakeWorker(identity)
        # As the master's own worker: forked by it, heartbeating while busy (liveness.py).
        self.dispatcher.forked = lambda identity: identity in self.workers
        self.dispatcher.on_worker(identity, encode_ready(SERVICE, credit=credit), self.now)
        self.deliver()
        return worker

    def request(
        self,
        identity: bytes,
        body: bytes,
        *,
        timeout: float = 1.0,
        retries: int = 3,
        retryable: bool | None = None,
    ) -> FakeClient:
        """Start a request as ``Client(timeout, retries)`` would (retryable when it may resend,
        unless told otherwise)."""
        if retryable is None:
            retryable = retries > 1
        self._next_id += 1
        state = RequestState(
            [body],
            request_id=self._next_id,
            service=SERVICE,
            timeout=timeout,
            retries=retries,
            flags=FLAG_RETRYABLE if retryable else 0,
        )
        client = self.clients[identity] = FakeClient(identity, state)
        self.dispatcher.on_client(identity, state.start(self.now), self.now)
        self.deliver()
        return client

    def run(
        self, identity: bytes, *, reply: bytes | None = None, status: Status = Status.OK
    ) -> None:
        """The worker runs its oldest job and sends the FINAL (``reply``, or the payload)."""
        worker = self.workers[identity]
        job = worker.jobs.pop(0)
        payload = bytes(job.body[0])
        self.runs[payload] += 1
        body = [payload if reply is None else reply]
        frames = encode_worker_reply(job.address, body, status=status)
        self.dispatcher.on_worker(identity, frames, self.now)
        self.deliver()

    def hang(self, identity: bytes) -> None:
        """The worker stops: no heartbeat, no reply (SIGSTOP, a deadlock in C code)."""
        self.workers[identity].alive = False

    def disconnect(self, identity: bytes) -> None:
        """The worker leaves in an orderly way (max_requests): DISCONNECT, between jobs."""
        self.workers[identity].alive = False
        self.dispatcher.on_worker(identity, encode_disconnect(), self.now)
        self.deliver()

    def die(self, identity: bytes, reason: str = "exit code 9") -> None:
        """The worker's process exited; the supervisor tells the dispatcher."""
        self.workers[identity].alive = False
        self.dispatcher.worker_gone(identity, reason)
        self.deliver()

    # -- time and the network ---------------------------------------------------------------------

    def advance(self, seconds: float, step: float = 1 / 32) -> None:
        """Let ``seconds`` pass in steps: live workers heartbeat, the dispatcher ticks, clients
        whose attempt timed out resend (or give up), as their drivers would. The step is a power
        of two, so the clock adds up exactly and deadlines fall where the test says."""
        end = self.now + seconds
        while self.now < end:
            # Lands on ``end`` exactly: a deadline there must not miss it by a rounding error.
            self.now = end if self.now + step > end - 1e-9 else self.now + step
            for worker in self.workers.values():
                if worker.alive and not worker.killed:
                    self.dispatcher.on_worker(worker.identity, encode_heartbeat(), self.now)
            self.dispatcher.on_tick(self.now)
            self.deliver()
            for client in self.clients.values():
                if client.state.expired(self.now):
                    try:
                        frames = client.state.on_timeout(self.now)
                    except ZmqServerError as exc:  # RequestTimeout: out of attempts
                        client.error = exc
                        client.ended_at = self.now
                        continue
                    self.dispatcher.on_client(client.identity, frames, self.now)
                    self.deliver()

    def deliver(self) -> None:
        """Carry what the dispatcher sent to its peers; kill the workers it asked to kill."""
        dispatcher = self.dispatcher
        while dispatcher.outbox or dispatcher.kills:
            for identity in dispatcher.take_kills():
                worker = self.workers[identity]
                worker.killed = True
                worker.alive = False
                dispatcher.worker_gone(identity, "killed")  # as the supervisor reaps it
            for port, peer, frames in dispatcher.take_outbox():
                if port is Port.FRONTEND:
                    self._to_client(peer, [bytes(f) for f in frames])
                else:
                    self._to_worker(peer, [bytes(f) for f in frames])
        self.events += dispatcher.take_events()

    def _to_client(self, identity: bytes, frames: list[bytes]) -> None:
        client = self.clients[identity]
        if client.lose_replies:
            client.lose_replies -= 1
            return
        client.replies_seen += 1
        try:
            response = client.state.on_frames(frames, self.now)
        except ZmqServerError as exc:
            client.error = exc
            client.ended_at = self.now
            return
        if response is not None:
            client.response = response
            client.ended_at = self.now

    def _to_worker(self, identity: bytes, frames: list[bytes]) -> None:
        worker = self.workers[identity]
        if worker.killed:
            return  # a dead process reads nothing
        msg = parse_broker_message(frames)
        if isinstance(msg, JobRequest):
            worker.jobs.append(msg)
        elif isinstance(msg, Disconnect):
            worker.disconnected = True

    # -- reading the outcome ----------------------------------------------------------------------

    def events_of(self, kind: type[Event]) -> list[Event]:
        return [event for event in self.events if isinstance(event, kind)]
