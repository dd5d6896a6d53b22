"""Dispatcher unit tests with random event sequences: a hypothesis state machine, long runs.

No sockets, no clocks: every ``on_*`` call gets the frames after the peer's routing id and an
explicit ``now``; what the dispatcher wants sent is read back from ``take_outbox()``.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from tests.helpers import limits

from zmqserver.broker import Dispatcher, Port
from zmqserver.broker.state import charged_size
from zmqserver.errors import Status
from zmqserver.protocol import (
    C_REQUEST,
    MDPC01,
    MDPC02,
    MDPW02,
    W_FINAL,
    W_READY,
    Disconnect,
    Heartbeat,
    JobRequest,
    encode_disconnect,
    encode_heartbeat,
    encode_ready,
    encode_request_header,
    encode_worker_reply,
    parse_broker_message,
    parse_client_reply,
)

from .dispatch_helpers import (
    DEFAULT,
    finish,
    mdp_request,
    plain_request,
)

# -- random sequences -----------------------------------------------------------------------------

WORKER_IDS = [b"w%d" % i for i in range(5)]
SERVICES = [DEFAULT, DEFAULT, DEFAULT, b"other", b"unknown"]


def is_final(form: str, frames: list[bytes]) -> bool:
    if form in ("mdp02", "mdp02d"):
        return parse_client_reply(frames).final
    return True


class DispatcherMachine(RuleBasedStateMachine):
    """Many clients (one request each, so a reply names its job) and a few workers that behave
    well, badly, or die at random, each holding up to its credit of jobs. Whatever happens,
    every accepted job is answered exactly once unless it is still queued or held by a worker."""

    @initialize(
        cap=st.sampled_from([1, 1, 2, 4]),
        prefetch_below=st.sampled_from([0.0, 0.5]),
        # A request here is counted as 65 to 280 bytes: small bounds make queue_full common.
        max_queue_bytes=st.sampled_from([0, 300, 1000]),
        other_bytes=st.sampled_from([None, 0, 200]),
    )
    def setup(self, cap, prefetch_below, max_queue_bytes, other_bytes):
        self.now = 0.0
        policy = limits(
            worker_credit=cap, prefetch_below=prefetch_below, max_queue_bytes=max_queue_bytes
        )
        self.dispatcher = Dispatcher(
            DEFAULT,
            heartbeat_interval=1.0,
            heartbeat_liveness=3,
            limits=policy,
            services=(b"other",),
            service_limits={}
            if other_bytes is None
            else {b"other": dataclasses.replace(policy, max_queue_bytes=other_bytes)},
            now=0.0,
        )
        self.n_clients = 0
        self.clients: dict[bytes, dict] = {}  # client id -> form, accepted, finals
        self.assigned: dict[bytes, list[JobRequest]] = {}  # worker -> its jobs, oldest first
        self.bad_partial_clients: set[bytes] = set()

    # -- outbox bookkeeping --

    def drain(self):
        self.dispatcher.take_kills()
        for port, peer, frames in self.dispatcher.take_outbox():
            assert isinstance(frames, list)
            assert all(isinstance(f, bytes) for f in frames)
            if port is Port.FRONTEND:
                record = self.clients[peer]
                if is_final(record["form"], frames):
                    record["finals"] += 1
                    assert record["finals"] == 1, f"client {peer!r} answered twice"
                else:
                    assert record["accepted"]
                    assert record["finals"] == 0, "PARTIAL after the FINAL"
            else:
                assert port is Port.BACKEND
                msg = parse_broker_message(frames)
                if isinstance(msg, JobRequest):
                    held = self.assigned.setdefault(peer, [])
                    held.append(msg)
                    assert len(held) <= self.dispatcher.workers[peer].credit, "over its credit"
                elif isinstance(msg, Disconnect):
                    self.assigned.pop(peer, None)
                else:
                    assert isinstance(msg, Heartbeat)
                    assert peer in self.dispatcher.workers

    # -- clients --

    @rule(
        form=st.sampled_from(
            ["plain", "plain", "raw", "mdp01", "mdp02", "mdp02", "mdp02d", "bad", "empty"]
        ),
        service=st.sampled_from(SERVICES),
        request_id=st.none() | st.integers(0, 2**64 - 1),
        timeout_ms=st.sampled_from([0, 0, 300, 2000]),
        body=st.lists(st.binary(max_size=8), min_size=1, max_size=3),
    )
    def client_request(self, form, service, request_id, timeout_ms, body):
        self.n_clients += 1
        client = b"c%d" % self.n_clients
        header = [] if request_id is None else [encode_request_header(request_id, timeout_ms)]
        frames = {
            "plain": [b"", b"p", *body],
            "raw": [b"r", *body],
            "mdp01": [b"", MDPC01, service, *header, *body],
            "mdp02": [MDPC02, C_REQUEST, service, *header, *body],
            "mdp02d": [b"", MDPC02, C_REQUEST, service, *header, *body],
            "bad": [MDPC02, b"\x07", service, *body],
            "empty": [],
        }[form]
        before = self.dispatcher.stats.accepted
        known = self.dispatcher.services.get(service if form.startswith("mdp") else DEFAULT)
        waiting = 0 if known is None else known.waiting
        self.dispatcher.on_client(client, frames, self.now)
        accepted = self.dispatcher.stats.accepted - before
        assert accepted in (0, 1)
        if known is not None and waiting and known.waiting > waiting:
            # It queued behind others: it fit under the bound (only a requeue may pass it).
            bound = (known.limits or self.dispatcher.limits).max_queue_bytes
            assert not bound or known.queued_bytes <= bound
        if form in ("bad", "empty"):
            assert not accepted
        self.clients[client] = {"form": form, "accepted": bool(accepted), "finals": 0}
        self.drain()
        if not accepted and form != "empty":
            assert self.clients[client]["finals"] == 1, "a refused request got no error reply"

    # -- workers --

    def has_busy_worker(self) -> bool:
        return bool(getattr(self, "assigned", None))

    def has_unregistered_worker(self) -> bool:
        return hasattr(self, "dispatcher") and len(self.dispatcher.workers) < len(WORKER_IDS)

    @precondition(has_unregistered_worker)
    @rule(
        data=st.data(),
        service=st.sampled_from([DEFAULT, DEFAULT, DEFAULT, b"other", b"mmi.x"]),
        delimited=st.booleans(),
        credit=st.sampled_from([1, 1, 2, 3, 5]),
    )
    def worker_ready(self, data, service, delimited, credit):
        free = [w for w in WORKER_IDS if w not in self.dispatcher.workers]
        worker = data.draw(st.sampled_from(free))
        self.dispatcher.on_worker(worker, encode_ready(service, delimited, credit=credit), self.now)
        registered = self.dispatcher.workers.get(worker)
        if registered is not None:
            assert registered.credit == min(credit, self.dispatcher.limits.worker_credit)
        self.drain()

    @precondition(has_busy_worker)
    @rule(
        data=st.data(),
        status=st.sampled_from([Status.OK, Status.OK, Status.APP_ERROR]),
        body=st.lists(st.binary(max_size=8), max_size=2),
    )
    def worker_finishes(self, data, status, body):
        worker = data.draw(st.sampled_from(sorted(self.assigned)))
        held = self.assigned[worker]
        # Ours answer the oldest job first; a foreign worker may answer any it holds.
        job = held.pop(data.draw(st.sampled_from([0, 0, 0, len(held) - 1])))
        if not held:
            del self.assigned[worker]
        frames = encode_worker_reply(job.address, body, status=status, delimited=job.delimited)
        self.dispatcher.on_worker(worker, frames, self.now)
        self.drain()

    @precondition(has_busy_worker)
    @rule(data=st.data(), body=st.lists(st.binary(max_size=8), max_size=2))
    def worker_streams(self, data, body):
        worker = data.draw(st.sampled_from(sorted(self.assigned)))
        job = self.assigned[worker][0]
        frames = encode_worker_reply(job.address, body, final=False, delimited=job.delimited)
        self.dispatcher.on_worker(worker, frames, self.now)
        self.drain()

    @precondition(has_busy_worker)
    @rule(data=st.data(), how=st.sampled_from(["gone", "disconnect", "wrong address"]))
    def busy_worker_fails(self, data, how):
        worker = data.draw(st.sampled_from(sorted(self.assigned)))
        job = self.assigned[worker][0]
        if how == "gone":
            self.dispatcher.worker_gone(
                worker, "killed by test", undelivered=data.draw(st.booleans())
            )
        elif how == "disconnect":
            self.dispatcher.on_worker(worker, encode_disconnect(job.delimited), self.now)
        else:
            wrong = b"\xff" * 9  # no job has this token
            self.dispatcher.on_worker(worker, encode_worker_reply(wrong, [b"x"]), self.now)
        if (
            worker not in self.dispatcher.workers
        ):  # an unreachable one may be kept, holding its jobs
            del self.assigned[worker]
        self.drain()

    @rule(
        worker=st.sampled_from(WORKER_IDS),
        how=st.sampled_from(["heartbeat", "heartbeat", "disconnect", "gone"]),
    )
    def any_worker_event(self, worker, how):
        if how == "heartbeat":
            self.dispatcher.on_worker(worker, encode_heartbeat(), self.now)
        elif how == "disconnect":
            self.dispatcher.on_worker(worker, encode_disconnect(), self.now)
            self.assigned.pop(worker, None)
        else:
            self.dispatcher.worker_gone(worker, "killed by test")
            self.assigned.pop(worker, None)
        self.drain()

    @rule(
        worker=st.sampled_from(WORKER_IDS),
        how=st.sampled_from(["ready twice", "stray reply", "garbage"]),
        garbage=st.lists(
            st.sampled_from([b"", MDPW02, W_READY, W_FINAL, b"\x09", DEFAULT, b"x"]), max_size=5
        ),
    )
    def worker_misbehaves(self, worker, how, garbage):
        if how == "ready twice":
            frames = encode_ready(DEFAULT)
        elif how == "stray reply":
            frames = encode_worker_reply(b"stray", [b"x"])
        else:
            frames = garbage
        self.dispatcher.on_worker(worker, frames, self.now)
        self.drain()

    # -- time and lifecycle --

    @rule(dt=st.sampled_from([0.05, 0.2, 0.5, 1.0, 4.0]))
    def tick(self, dt):
        before = self.dispatcher.next_deadline()
        self.now += dt
        self.dispatcher.on_tick(self.now)
        after = self.dispatcher.next_deadline()
        if self.now >= before:
            assert after > self.now
        else:
            assert after == before
        self.drain()

    @precondition(lambda self: not self.dispatcher.closing)
    @rule(data=st.data())
    def shutdown(self, data):
        # Rare: most runs should exercise the open dispatcher.
        if data.draw(st.integers(0, 9)) == 0:
            self.dispatcher.shutdown()
            assert self.dispatcher.queued() == 0
            self.drain()

    # -- invariants --

    def pending_clients(self) -> list[bytes]:
        running = [job.client for job in self.dispatcher.jobs.values() if not job.done]
        queued = [
            job.client for s in self.dispatcher.services.values() for job in s.queue if not job.done
        ]
        return running + queued

    @invariant()
    def every_accepted_job_is_pending_or_answered_exactly_once(self):
        if not hasattr(self, "dispatcher"):
            return
        pending = self.pending_clients()
        assert len(pending) == len(set(pending)), "a job is both queued and running, or twice"
        pending_set = set(pending)
        accepted = 0
        for client, record in self.clients.items():
            if record["accepted"]:
                accepted += 1
                assert record["finals"] + (client in pending_set) == 1, client
            else:
                assert client not in pending_set
        assert accepted == self.dispatcher.stats.accepted

    @invariant()
    def worker_and_job_state_is_consistent(self):
        if not hasattr(self, "dispatcher"):
            return
        dispatcher = self.dispatcher
        for address, job in dispatcher.jobs.items():
            assert job.address == address
            assert job.worker is not None
            assert job in job.worker.jobs
            assert dispatcher.workers[job.worker.identity] is job.worker
        for identity, worker in dispatcher.workers.items():
            assert worker.credit <= max(1, dispatcher.limits.worker_credit)
            assert worker.credit >= 1 or not worker.reachable
            assert len(worker.jobs) <= worker.credit or not worker.reachable
            level = len(worker.jobs) if len(worker.jobs) < worker.credit else -1
            assert worker.level == level
            if level >= 0:
                assert worker.service.levels[level][identity] is worker
            held = [job.address for job in worker.jobs]
            assert held == [job.address for job in self.assigned.get(identity, [])]
        for service in dispatcher.services.values():
            assert service.levels[0] is service.idle
            for k, level in enumerate(service.levels):
                for identity, worker in level.items():
                    assert len(worker.jobs) == k
                    assert dispatcher.workers[identity] is worker
                    assert worker.service is service
            assert service.workers == sum(
                1 for w in dispatcher.workers.values() if w.service is service
            )
            assert service.placed == sum(map(len, service.levels))
            limit = (service.limits or dispatcher.limits).prefetch_below
            takeable = [  # busy workers with credit to spare, not held up by a long job
                worker
                for level in service.levels[1:]
                for worker in level.values()
                if not limit or dispatcher._now - worker.jobs[0].started < limit
            ]
            if service.idle or (service.prefetch and takeable):
                assert not service.queue, "a job waits while a worker of its service may take it"
            assert service.prefetch == (not limit or service.job_time < limit)
            assert service.waiting == sum(1 for job in service.queue if not job.done)
        assert sum(len(w.jobs) for w in dispatcher.workers.values()) == len(dispatcher.jobs)
        check_queued_bytes(dispatcher)
        # Each client's outstanding count is its live queued and running jobs (max_client_inflight).
        live = self.pending_clients()
        inflight = {c: s.inflight for c, s in dispatcher.clients.states.items() if s.inflight}
        assert inflight == {c: live.count(c) for c in set(live)}


def check_queued_bytes(dispatcher: Dispatcher) -> None:
    """Each service's queued_bytes is the size of its live queued jobs, each charged as for
    max_message_size: the counter moved with every job that came and went, and never drifted."""
    for service in dispatcher.services.values():
        live = [job for job in service.queue if not job.done]
        for job in live:
            assert job.size == charged_size(job.body)
        assert service.queued_bytes == sum(job.size for job in live), service.name
    assert all(
        job.size == charged_size(job.body) for job in dispatcher.jobs.values() if not job.done
    )


TestDispatcherMachine = DispatcherMachine.TestCase
TestDispatcherMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_long_random_run_with_echo_workers(seed):
    """A seeded soak: 3000 random events from plain and MDP/0.2 clients and from workers that
    stream, fail, die, leave and misbehave; then drain everything and check the books balance
    and that every reply went to the client whose job it answers."""
    rng = random.Random(seed)
    dispatcher = Dispatcher(
        DEFAULT,
        heartbeat_interval=1.0,
        heartbeat_liveness=3,
        limits=limits(max_queue_bytes=2000),  # about 30 jobs: some are refused
        now=0.0,
    )
    now = 0.0
    finals: dict[bytes, int] = {}
    requests: dict[bytes, tuple[bool, bytes]] = {}  # client -> (is MDP/0.2, body)
    accepted_clients = []
    assigned: dict[bytes, JobRequest] = {}

    def check_reply(client: bytes, frames: list[bytes]) -> None:
        mdp, body = requests[client]
        if mdp:
            reply = parse_client_reply(frames)
            assert reply.request_id == int(body)
            assert reply.service == DEFAULT
            if not reply.final:
                assert finals.get(client, 0) == 0
                return
            if reply.status is Status.OK:
                assert reply.body == [b"re:" + body]
        else:
            assert frames[0] == b""
            if not frames[1].startswith(b"ERROR "):
                assert frames[-1] == b"re:" + body
        finals[client] = finals.get(client, 0) + 1
        assert finals[client] == 1, f"{client!r} answered twice"

    def drain():
        for port, peer, frames in dispatcher.take_outbox():
            if port is Port.FRONTEND:
                check_reply(peer, frames)
            else:
                msg = parse_broker_message(frames)
                if isinstance(msg, JobRequest):
                    assert peer not in assigned, "a second job for a busy worker"
                    assigned[peer] = msg
                elif isinstance(msg, Disconnect):
                    assigned.pop(peer, None)

    for n in range(3000):
        event = rng.random()
        worker = rng.choice(WORKER_IDS)
        if event < 0.3:
            client = b"c%d" % n
            mdp = rng.random() < 0.5
            requests[client] = (mdp, b"%d" % n)
            before = dispatcher.stats.accepted
            if mdp:
                mdp_request(dispatcher, client, b"%d" % n, now, request_id=n)
            else:
                plain_request(dispatcher, client, b"%d" % n, now)
            if dispatcher.stats.accepted > before:
                accepted_clients.append(client)
        elif event < 0.38:
            if worker not in dispatcher.workers or rng.random() < 0.05:  # sometimes READY twice
                dispatcher.on_worker(worker, encode_ready(DEFAULT, rng.random() < 0.3), now)
        elif event < 0.7:
            job = assigned.pop(worker, None)
            if job is not None:
                status = Status.OK if rng.random() < 0.8 else Status.APP_ERROR
                finish(dispatcher, worker, job, now=now, status=status, delimited=job.delimited)
        elif event < 0.75:
            job = assigned.get(worker)
            if job is not None:
                frames = encode_worker_reply(job.address, [b"part"], final=False)
                dispatcher.on_worker(worker, frames, now)
        elif event < 0.8:
            dispatcher.worker_gone(worker, "crash")
            assigned.pop(worker, None)
        elif event < 0.84:
            dispatcher.on_worker(worker, encode_disconnect(), now)
            assigned.pop(worker, None)
        elif event < 0.86:
            dispatcher.on_worker(worker, encode_worker_reply(b"stray", [b"x"]), now)
        elif event < 0.88:
            dispatcher.on_worker(worker, [MDPW02, b"\x09"], now)
        elif event < 0.9:
            dispatcher.on_worker(worker, encode_heartbeat(), now)
        else:
            now += rng.choice([0.2, 0.5, 1.0, 4.0])
            dispatcher.on_tick(now)
        drain()
        check_queued_bytes(dispatcher)
    # Bring up fresh workers and let them finish everything.
    for i in range(3):
        dispatcher.on_worker(b"final-%d" % i, encode_ready(DEFAULT), now)
    drain()
    while assigned:
        worker, job = assigned.popitem()
        finish(dispatcher, worker, job, now=now)
        drain()
    assert dispatcher.queued() == 0
    assert dispatcher.services[DEFAULT].queued_bytes == 0
    assert dispatcher.jobs == {}
    assert sorted(finals) == sorted(requests)  # refused requests are answered too
    assert dispatcher.stats.accepted == len(accepted_clients)
    assert dispatcher.stats.replied + dispatcher.stats.errors == len(requests)
