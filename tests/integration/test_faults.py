"""Fault injection with real processes: kill, stop and overload workers, restart the broker.

Every test runs a real ``zmqserver serve`` (tests/helpers.py) with the ``tests.apps:faulty`` app,
which records each run of a job in a file (``<pid> <payload>`` per line), so a test can tell how
many times a job ran and on which worker, independently of what the clients saw. The guarantees
checked here are the ones docs/reliability.md promises; the numbers it quotes (detection times,
throughput under kills) are printed by these tests (``pytest -s``) under ``measured:``.

Hygiene: every wait is bounded, only processes the test started (the server and its children)
are signalled, and a process the test stops with SIGSTOP is always killed before it ends.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from tests.helpers import ServerProcess, pid_alive, wait_until

from zmqserver import Client
from zmqserver.client.state import RequestState
from zmqserver.client.wire import Wire
from zmqserver.errors import (
    AppError,
    DeadlineExpired,
    MessageTooLarge,
    QueueFull,
    RequestTimeout,
    Status,
    WorkerLost,
)
from zmqserver.protocol import (
    FLAG_RETRYABLE,
    ClientReply,
    Disconnect,
    JobRequest,
    encode_client_request,
    encode_heartbeat,
    encode_ready,
    encode_worker_reply,
    parse_broker_message,
    parse_client_reply,
)

pytestmark = pytest.mark.timeout(90)

APP = "tests.apps:faulty"
Context = zmq.Context[zmq.Socket[bytes]]
StartServer = Callable[..., ServerProcess]


# -- helpers ---------------------------------------------------------------------------------------


def server_env(**extra: str) -> dict[str, str]:
    """Environment for a test server: ``extra``, plus ZMQSERVER_PURE_PYTHON passed on (the
    helpers drop ZMQSERVER_* variables), so ``make test``'s pure-Python pass covers this file."""
    pure = os.environ.get("ZMQSERVER_PURE_PYTHON")
    return {**extra, **({"ZMQSERVER_PURE_PYTHON": pure} if pure else {})}


class Runs:
    """The runs recorded by ``tests.apps:faulty``: one ``(pid, payload)`` per run of a job."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def env(self) -> dict[str, str]:
        return server_env(ZS_TEST_RUNS=str(self.path))

    def all(self) -> list[tuple[int, bytes]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        runs = []
        for line in data.splitlines():
            pid, _, payload = line.partition(b" ")
            runs.append((int(pid), payload))
        return runs

    def of(self, payload: bytes) -> list[int]:
        """The pids that ran ``payload``, in order."""
        return [pid for pid, p in self.all() if p == payload]

    def counts(self) -> Counter[bytes]:
        return Counter(p for _, p in self.all())


@pytest.fixture
def runs(short_tmp: Path) -> Runs:
    return Runs(short_tmp / "runs")


def measured(what: str, **numbers: object) -> None:
    """Print numbers for docs/reliability.md (visible with ``pytest -s``)."""
    shown = ", ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items()
    )
    print(f"\nmeasured: {what}: {shown}")


def recv_within(sock: zmq.Socket[bytes], seconds: float, what: str = "a reply") -> list[bytes]:
    if not sock.poll(seconds * 1000):
        pytest.fail(f"no {what} within {seconds}s")
    return sock.recv_multipart()


def dealer(ctx: Context, endpoint: str, identity: bytes | None = None) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.connect(endpoint)
    return sock


def mdp_request(
    payload: bytes, request_id: int, *, timeout_ms: int = 0, flags: int = 0, service: bytes = b""
) -> list[bytes]:
    """What zmqserver.Client puts on the wire: MDP/0.2 REQUEST with the zmqserver header."""
    return encode_client_request(
        service, [payload], request_id=request_id, timeout_ms=timeout_ms, flags=flags
    )


@contextlib.contextmanager
def stopped(server: ServerProcess, pid: int) -> Iterator[None]:
    """SIGSTOP one of ``server``'s workers; whatever happens, it is SIGKILLed at the end."""
    assert pid in server.worker_pids(), "only a worker of our own server may be stopped"
    server.started_pids.add(pid)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Killer:
    """A thread that SIGKILLs a random worker of ``server`` every ``period`` seconds."""

    def __init__(self, server: ServerProcess, period: float) -> None:
        self.server = server
        self.period = period
        self.kills: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="killer", daemon=True)

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        rng = random.Random(4)
        while not self._stop.wait(self.period):
            pids = self.server.worker_pids()  # children of the server this test started
            if pids:
                pid = rng.choice(pids)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    self.kills.append(pid)


def run_clients(
    n_clients: int, n_jobs: int, job: Callable[[int, int], None], timeout: float
) -> list[BaseException]:
    """Run ``job(client, i)`` for ``n_jobs`` jobs spread over ``n_clients`` threads."""
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            for i in range(k, n_jobs, n_clients):
                job(k, i)
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(n_clients)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        pytest.fail(f"clients still running after {timeout}s")
    return errors


# -- (a) a worker SIGKILLed every second -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_kill_a_worker_every_second_retryable_jobs_all_answered_once(
    start_server: StartServer, ctx: Context, runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 retryable jobs from 8 clients while a worker is SIGKILLed every second: each job is
    answered exactly once, with its own payload; none is lost, none is duplicated."""
    n_jobs, n_clients = 10_000, 8
    # 2 ms jobs, so that most kills land mid-job.
    server = start_server(APP, workers=4, env={**runs.env, "ZS_TEST_SLEEP": "0.002"})
    server.wait_workers(4)
    server.wait_ready()

    # Watch every reply the clients receive, below the library (RequestState is compiled where
    # the package is built, so it cannot be patched): the bodies each request id came with. A
    # broker that answered a job twice shows up as a late copy, which the library throws away.
    seen: list[ClientReply] = []
    original = Wire.recv_within

    def recv_within(self: Wire, milliseconds: int) -> list[bytes] | None:
        frames = original(self, milliseconds)
        if frames is not None:
            seen.append(parse_client_reply(frames))  # list.append: safe across the threads
        return frames

    monkeypatch.setattr(Wire, "recv_within", recv_within)
    replies: dict[bytes, list[object]] = {}
    lock = threading.Lock()
    clients = [
        Client(server.frontend, timeout=10, retries=3, context=ctx) for _ in range(n_clients)
    ]

    def job(k: int, i: int) -> None:
        payload = b"job-%05d" % i
        reply = clients[k].request(payload)
        with lock:
            replies.setdefault(payload, []).append(reply)

    started = time.monotonic()
    try:
        with Killer(server, period=1.0) as killer:
            errors = run_clients(n_clients, n_jobs, job, timeout=120)
    finally:
        for client in clients:
            client.close()
    elapsed = time.monotonic() - started

    assert errors == []
    assert len(replies) == n_jobs  # none lost
    wrong = {p: r for p, r in replies.items() if r != [p]}
    assert wrong == {}  # each answered exactly once, with its own reply
    assert killer.kills, "the killer never killed anything"
    # A late copy can only be of a reply already delivered: every request id answered carried
    # one job's payload, the one that job got, however many copies of it came.
    ok: dict[int, set[bytes]] = {}
    for reply in seen:
        assert reply.request_id is not None
        if reply.status is Status.OK:
            ok.setdefault(reply.request_id, set()).add(b"".join(reply.body))
    assert {reply.request_id for reply in seen} <= ok.keys()
    assert all(len(bodies) == 1 and bodies <= replies.keys() for bodies in ok.values())
    stale = len(seen) - len(ok)
    counts = runs.counts()
    assert all(counts[b"job-%05d" % i] >= 1 for i in range(n_jobs))
    server.wait_workers(4)  # the pool recovered
    assert server.request(b"after") == [b"after"]
    log = server.log()
    measured(
        "kill test",
        jobs=n_jobs,
        seconds=elapsed,
        jobs_per_s=n_jobs / elapsed,
        kills=len(killer.kills),
        broker_retries=log.count("retrying (attempt"),
        ran_twice=sum(1 for c in counts.values() if c > 1),
        stale_copies=stale,
    )


@pytest.mark.slow
def test_kill_a_worker_twice_a_second_non_retryable_jobs_get_reply_or_worker_lost(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    """Without the retry flag (one attempt) a job on a killed worker ends in WorkerLost: never
    silence (RequestTimeout), never another job's reply."""
    n_jobs, n_clients = 4000, 8
    server = start_server(APP, workers=4, env={**runs.env, "ZS_TEST_SLEEP": "0.002"})
    server.wait_workers(4)
    server.wait_ready()
    outcomes: dict[bytes, object] = {}
    lock = threading.Lock()
    clients = [
        Client(server.frontend, timeout=15, retries=1, context=ctx) for _ in range(n_clients)
    ]

    def job(k: int, i: int) -> None:
        payload = b"once-%05d" % i
        try:
            outcome: object = clients[k].request(payload)
        except WorkerLost as exc:
            outcome = exc
        with lock:
            assert payload not in outcomes
            outcomes[payload] = outcome

    try:
        with Killer(server, period=0.5) as killer:
            errors = run_clients(n_clients, n_jobs, job, timeout=80)
    finally:
        for client in clients:
            client.close()

    assert errors == []  # no RequestTimeout, no other error
    assert len(outcomes) == n_jobs
    lost = [p for p, o in outcomes.items() if isinstance(o, WorkerLost)]
    assert all(o == p for p, o in outcomes.items() if p not in lost)
    counts = runs.counts()
    # A lost job was given to exactly one worker, which may or may not have started it.
    assert all(counts[p] <= 1 for p in lost)
    assert all(counts[p] == 1 for p in outcomes if p not in lost)
    measured(
        "non-retryable kill test",
        jobs=n_jobs,
        kills=len(killer.kills),
        worker_lost=len(lost),
        lost_after_running=sum(counts[p] for p in lost),
    )


# -- (b) a hung worker ---------------------------------------------------------------------------


def test_sigstopped_worker_is_detected_killed_and_its_job_retried_elsewhere(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    server = start_server(APP, workers=2, env=runs.env)
    server.wait_workers(2)
    server.wait_ready()
    result: list[object] = []
    job = b"sleep 1.5 hung"

    def request() -> None:
        with Client(server.frontend, timeout=20, retries=2, context=ctx) as client:
            result.append(client.request(job))

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    wait_until(lambda: runs.of(job), 10, "the job to start")
    (hung,) = runs.of(job)
    with stopped(server, hung):
        t_stop = time.monotonic()
        wait_until(lambda: len(runs.of(job)) == 2, 10, "the job to be retried")
        t_retry = time.monotonic()
        wait_until(lambda: not pid_alive(hung), 10, "the hung worker to be killed")
        t_dead = time.monotonic()
    thread.join(20)
    assert not thread.is_alive()
    (reply,) = result
    assert isinstance(reply, list)
    assert reply[0] == job
    assert int(reply[1]) != hung
    assert runs.of(job)[1] == int(reply[1])
    assert "missed 3 heartbeats" in server.log()
    server.wait_workers(2)  # replaced
    measured(
        "SIGSTOP detection (interval 0.25 s, liveness 3)",
        retried_after_s=t_retry - t_stop,
        killed_after_s=t_dead - t_stop,
    )


def test_job_of_a_hung_worker_without_retry_says_why(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    server = start_server(APP, workers=2, env=runs.env)
    server.wait_workers(2)
    server.wait_ready()
    job = b"sleep 1.5 hung-once"
    sock = dealer(ctx, server.frontend)
    sock.send_multipart(mdp_request(job, 1))  # no FLAG_RETRYABLE, no --retry-jobs
    wait_until(lambda: runs.of(job), 10, "the job to start")
    (hung,) = runs.of(job)
    with stopped(server, hung):
        reply = parse_client_reply(recv_within(sock, 10))
    sock.close()
    assert reply.status is Status.WORKER_LOST
    assert runs.of(job) == [hung]
    message = b"".join(reply.body).decode()
    assert "heartbeat" in message, message


def test_slow_job_is_not_mistaken_for_a_dead_worker(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    """A job four times longer than interval x liveness: the worker heartbeats from a thread."""
    server = start_server(APP, workers=1, env=runs.env)  # interval 0.25 s, liveness 3
    (worker,) = server.wait_workers(1)
    server.wait_ready()
    with Client(server.frontend, timeout=20, retries=1, context=ctx) as client:
        assert client.request(b"sleep 3 slow") == [b"sleep 3 slow", str(worker).encode()]
    assert runs.of(b"sleep 3 slow") == [worker]
    assert server.worker_pids() == [worker]
    # Never dropped: the broker still counts both jobs (the ping and this one) to the same
    # registration (a worker dropped and back would count from 0), and no job was lost.
    status = server.status()
    assert [(w["pid"], w["jobs_served"]) for w in status["workers"]] == [(worker, 2)]
    assert status["services"][0]["outcomes"] == {"ok": 2}


def test_silent_foreign_worker_is_dropped_and_its_job_retried(
    start_server: StartServer, ctx: Context
) -> None:
    """A worker that is not our child (nothing to reap, nothing to kill), heartbeats while busy
    and then stops talking while it holds a job is dropped after interval x liveness; the job
    goes to the next worker. (An RFC worker that never heartbeats while busy is left to its
    job's deadline instead: test_majortomo.py.)"""
    server = start_server(APP, workers=1, env=server_env())
    server.wait_ready()
    first = dealer(ctx, server.backend, b"ext-1")
    first.send_multipart(encode_ready(b"ext"))
    recv_within(first, 10, "a heartbeat")  # the broker heartbeats registered idle workers
    result: list[object] = []

    def request() -> None:
        with Client(server.frontend, service="ext", timeout=20, retries=3, context=ctx) as c:
            result.append(c.request(b"ext job"))

    thread = threading.Thread(target=request, daemon=True)
    first.send_multipart(encode_heartbeat())
    last_word = time.monotonic()
    thread.start()
    while True:  # a well-behaved idle worker until the job comes
        msg = parse_broker_message(recv_within(first, 10, "the job"))
        if isinstance(msg, JobRequest):
            break
        first.send_multipart(encode_heartbeat())
        last_word = time.monotonic()
    time.sleep(0.3)  # over half the interval (0.25 s) into the job: a busy heartbeat
    first.send_multipart(encode_heartbeat())
    last_word = time.monotonic()
    while True:  # now silent: wait for the broker to give up on us
        msg = parse_broker_message(recv_within(first, 10, "DISCONNECT"))
        if isinstance(msg, Disconnect):
            break
    dropped_after = time.monotonic() - last_word
    second = dealer(ctx, server.backend, b"ext-2")
    second.send_multipart(encode_ready(b"ext"))
    while True:
        job = parse_broker_message(recv_within(second, 10, "the retried job"))
        if isinstance(job, JobRequest):
            break
    assert job.body == [b"ext job"]
    second.send_multipart(encode_worker_reply(job.address, [b"done by ext-2"]))
    thread.join(20)
    assert result == [b"done by ext-2"]
    for sock in (first, second):
        sock.close()
    measured("silent busy foreign worker dropped", after_s=dropped_after)


# -- (c) deadlines -------------------------------------------------------------------------------


def test_running_job_past_deadline_gets_worker_killed_and_client_expired(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    server = start_server(APP, "--job-timeout", "1", "--kill-grace", "0.5", workers=2, env=runs.env)
    before = set(server.wait_workers(2))
    server.wait_ready()

    # A client with the header: deadline = its timeout_ms (1 s).
    state = RequestState([b"sleep 60 overrun"], request_id=77, timeout=1.0, retries=1)
    sock = dealer(ctx, server.frontend)
    sent = time.monotonic()
    sock.send_multipart(state.start(sent))
    frames = recv_within(sock, 15, "the expired error")  # waits past the client's own timeout
    answered_after = time.monotonic() - sent
    with pytest.raises(DeadlineExpired, match="while it was running"):
        state.on_frames(frames, time.monotonic())
    sock.close()
    (overrun,) = runs.of(b"sleep 60 overrun")
    wait_until(lambda: not pid_alive(overrun), 10, "the overrunning worker to be killed")

    # A plain client: the server's job_timeout applies.
    (reply,) = server.request(b"sleep 60 plain", timeout=15)
    assert reply.startswith(b"ERROR expired: ")
    (plain,) = runs.of(b"sleep 60 plain")
    wait_until(lambda: not pid_alive(plain), 10, "the second overrunning worker to be killed")

    after = set(server.wait_workers(2))
    assert not after & {overrun, plain}
    assert before & {overrun, plain}
    assert server.request(b"fine") == [b"fine"]
    assert server.log().count("past its deadline") == 2
    measured("running job past deadline (1 s + grace 0.5 s)", answered_after_s=answered_after)


def test_queued_job_past_deadline_expires_without_running(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    server = start_server(APP, workers=1, env=runs.env)
    server.wait_ready()
    blocker = server.socket()
    blocker.send(b"sleep 2 blocker")
    wait_until(lambda: runs.of(b"sleep 2 blocker"), 10, "the blocker to start")

    state = RequestState([b"late"], request_id=5, timeout=0.5, retries=1)
    sock = dealer(ctx, server.frontend)
    sent = time.monotonic()
    sock.send_multipart(state.start(sent))
    frames = recv_within(sock, 10, "the expired error")
    answered_after = time.monotonic() - sent
    with pytest.raises(DeadlineExpired, match="while it was queued"):
        state.on_frames(frames, time.monotonic())

    assert recv_within(blocker, 10)[0] == b"sleep 2 blocker"
    assert server.request(b"next") == [b"next"]  # the worker is free and took the next job
    assert runs.of(b"late") == []  # the expired job never ran
    for s in (sock, blocker):
        s.close()
    measured("queued job past deadline (0.5 s)", answered_after_s=answered_after)


def test_client_library_gets_deadline_expired_for_an_overrunning_job(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    server = start_server(APP, "--kill-grace", "0.5", workers=1, env=runs.env)
    server.wait_ready()
    with (
        Client(server.frontend, timeout=1, retries=1, context=ctx) as client,
        pytest.raises(DeadlineExpired),
    ):
        client.request(b"sleep 60 library")


def test_client_library_keeps_a_queued_job_for_all_its_attempts(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    """A Client(timeout=0.5, retries=4) promises to wait 4 x 0.5 s. Its job is queued behind a
    4 s job: it should stay queued for those 2 s, then end with DeadlineExpired (the broker knows
    the job never ran). Today it ends either early with DeadlineExpired (whichever attempt's
    deadline fires before the resend arrives) or with RequestTimeout (the broker's answer to the
    last attempt comes after the client gave up)."""
    server = start_server(APP, workers=1, env=runs.env)
    server.wait_ready()
    blocker = server.socket()
    blocker.send(b"sleep 4 blocker")
    wait_until(lambda: runs.of(b"sleep 4 blocker"), 10, "the blocker to start")
    with Client(server.frontend, timeout=0.5, retries=4, context=ctx) as client:
        sent = time.monotonic()
        with pytest.raises(DeadlineExpired):
            client.request(b"patient")
        assert time.monotonic() - sent >= 1.75  # it kept its promise of 4 attempts
    assert recv_within(blocker, 10)[0] == b"sleep 4 blocker"
    blocker.close()
    assert server.request(b"marker") == [b"marker"]
    assert runs.of(b"patient") == []


# -- (d) broker restart ---------------------------------------------------------------------------


def test_broker_restart_mid_load_clients_carry_on(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    """kill -9 the master under load, start a new one on the same endpoints: clients with
    retries get every reply; jobs in flight at the kill are answered by the client's resend."""
    env = {**runs.env, "ZS_TEST_SLEEP": "0.005"}
    old = start_server(APP, workers=2, env=env)
    old_workers = old.wait_workers(2)
    old.wait_ready()
    timeout, retries, n_clients = 1.0, 20, 4
    stop = threading.Event()
    lock = threading.Lock()
    done: list[tuple[bytes, object, float, float]] = []  # payload, reply, sent, answered
    errors: list[BaseException] = []

    def client(k: int) -> None:
        with Client(old.frontend, timeout=timeout, retries=retries, context=ctx) as c:
            i = 0
            while not stop.is_set():
                payload = b"r%d-%05d" % (k, i)
                i += 1
                sent = time.monotonic()
                try:
                    reply = c.request(payload)
                except BaseException as exc:
                    errors.append(exc)
                    return
                with lock:
                    done.append((payload, reply, sent, time.monotonic()))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(n_clients)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(done) >= 200, 20, "load before the restart")
        os.kill(old.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        before_kill = len(done)
        old.wait(10)
        wait_until(lambda: not any(pid_alive(p) for p in old_workers), 10, "old workers to exit")
        workers_gone = time.monotonic() - killed_at
        new = start_server(
            APP, "--frontend", old.frontend, "--backend", old.backend, workers=2, env=env
        )
        wait_until(lambda: len(done) >= before_kill + 200, 30, "load after the restart")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert all(reply == payload for payload, reply, _, _ in done)
    assert len({payload for payload, _, _, _ in done}) == len(done)
    in_flight = [(p, s, a) for p, _, s, a in done if s < killed_at < a]
    assert in_flight  # every client had a request out when the master died
    counts = runs.counts()
    assert new.proc.poll() is None
    measured(
        "broker restart",
        workers_exit_s=workers_gone,
        in_flight=len(in_flight),
        in_flight_latency_min_s=min(a - s for _, s, a in in_flight),
        in_flight_latency_max_s=max(a - s for _, s, a in in_flight),
        in_flight_ran_twice=sum(1 for p, _, _ in in_flight if counts[p] > 1),
        jobs=len(done),
    )


# -- (e) a poison job ---------------------------------------------------------------------------


def test_job_that_kills_every_worker_is_quarantined_and_the_pool_survives(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    server = start_server(APP, "--max-attempts", "3", workers=2, env=runs.env)
    server.wait_workers(2)
    server.wait_ready()
    with Client(server.frontend, timeout=30, retries=2, context=ctx) as client:
        with pytest.raises(WorkerLost, match="lost with 3 workers in a row"):
            client.request(b"die poison")
        assert len(set(runs.of(b"die poison"))) == 3  # three different workers, then no more
        server.wait_workers(2)
        assert client.request(b"alive") == b"alive"
    with (
        Client(server.frontend, timeout=30, retries=1, context=ctx) as client,
        pytest.raises(WorkerLost, match="ended with exit code 9"),
    ):
        client.request(b"die once")  # not retryable: one worker lost, no retry
    assert len(runs.of(b"die once")) == 1
    server.wait_workers(2)
    assert server.request(b"still alive") == [b"still alive"]
    assert len(runs.of(b"die poison")) == 3


def test_retry_jobs_option_retries_plain_clients(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    server = start_server(APP, "--retry-jobs", "--max-attempts", "2", workers=2, env=runs.env)
    server.wait_ready()
    (reply,) = server.request(b"die plain", timeout=30)
    assert reply.startswith(b"ERROR worker_lost: the job was lost with 2 workers in a row")
    assert len(runs.of(b"die plain")) == 2
    server.wait_workers(2)
    assert server.request(b"ok") == [b"ok"]


# -- (f) bounds -----------------------------------------------------------------------------------


@pytest.mark.parametrize("credit", ["1", "16"])
def test_queue_full_reaches_the_client_library(
    start_server: StartServer, ctx: Context, runs: Runs, credit: str
) -> None:
    """Strict LRU, and the default credit (16): wait_ready's echo job opens the prefetch gate,
    but the worker busy with a long job is sent nothing more, so the fills queue and count."""
    server = start_server(
        APP, "--max-queue", "2", "--worker-credit", credit, workers=1, env=runs.env
    )
    server.wait_ready()
    blocker = server.socket()
    blocker.send(b"sleep 3 blocker")
    wait_until(lambda: runs.of(b"sleep 3 blocker"), 10, "the blocker to start")
    filler = dealer(ctx, server.frontend)  # plain form: '' + payload, answered in order
    for i in range(4):
        filler.send_multipart([b"", b"fill %d" % i])
    refused = [recv_within(filler, 10), recv_within(filler, 10)]
    assert [f[1].split(b":")[0] for f in refused] == [b"ERROR queue_full"] * 2
    with (
        Client(server.frontend, timeout=10, retries=1, context=ctx) as client,
        pytest.raises(QueueFull),
    ):
        client.request(b"probe")
    assert recv_within(blocker, 10)[0] == b"sleep 3 blocker"
    assert sorted(recv_within(filler, 10)[1] for _ in range(2)) == [b"fill 0", b"fill 1"]
    assert runs.of(b"probe") == []
    for sock in (blocker, filler):
        sock.close()


def test_too_large_reaches_the_client_library(start_server: StartServer, ctx: Context) -> None:
    server = start_server(APP, "--max-message-size", "1000", workers=1, env=server_env())
    server.wait_ready()
    with Client(server.frontend, timeout=10, retries=1, context=ctx) as client:
        # The limit itself is allowed: 936 bytes and the 64 each frame is charged.
        assert client.request(b"x" * 936) == b"x" * 936
        with pytest.raises(MessageTooLarge, match="937 bytes in 1 frames"):
            client.request(b"x" * 937)
        with pytest.raises(MessageTooLarge):
            client.request([b"x" * 600, b"y" * 600])  # the limit is on all frames together
    (reply,) = server.request(b"z" * 2000)
    assert reply.startswith(b"ERROR too_large: ")
    # Above 4 x the limit in one frame, libzmq's MAXMSGSIZE drops the connection instead: the
    # client hears nothing (a documented limit), and nobody else is affected.
    with (
        Client(server.frontend, timeout=1, retries=1, context=ctx) as client,
        pytest.raises(RequestTimeout),
    ):
        client.request(b"x" * 5000)
    assert server.request(b"small") == [b"small"]


# -- (g) the reply cache ----------------------------------------------------------------------


def test_resend_of_a_finished_request_gets_the_cached_reply_and_runs_once(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    server = start_server(APP, workers=2, env=runs.env)
    server.wait_ready()
    identity = b"zq-cache-test-1"
    ok = mdp_request(b"once 1", 42, timeout_ms=5000, flags=FLAG_RETRYABLE)
    boom = mdp_request(b"boom 2", 43, timeout_ms=5000, flags=FLAG_RETRYABLE)
    sock = dealer(ctx, server.frontend, identity)
    sock.send_multipart(ok)
    first_ok = recv_within(sock, 10)
    sock.send_multipart(boom)
    first_boom = recv_within(sock, 10)
    sock.close()
    assert parse_client_reply(first_ok).body == [b"once 1"]
    assert parse_client_reply(first_boom).status is Status.APP_ERROR

    # Lazy Pirate: a new socket with the same routing id resends both requests.
    sock = dealer(ctx, server.frontend, identity)
    sock.send_multipart(ok)
    assert recv_within(sock, 10) == first_ok
    sock.send_multipart(boom)
    assert recv_within(sock, 10) == first_boom
    assert server.request(b"marker") == [b"marker"]  # anything resent would have run by now
    assert len(runs.of(b"once 1")) == 1
    assert len(runs.of(b"boom 2")) == 1
    sock.close()

    # The key is (routing id, request id): another client's request 42 is its own job.
    other = dealer(ctx, server.frontend, b"zq-cache-test-2")
    other.send_multipart(ok)
    assert parse_client_reply(recv_within(other, 10)).body == [b"once 1"]
    assert len(runs.of(b"once 1")) == 2
    other.close()

    # A plain REQ client has no request id: its resend is a new job (a documented limit).
    server.request(b"plain 3")
    server.request(b"plain 3")
    assert len(runs.of(b"plain 3")) == 2


def test_resend_of_a_running_request_is_merged(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    server = start_server(APP, workers=2, env=runs.env)
    server.wait_ready()
    identity = b"zq-merge-test"
    request = mdp_request(b"sleep 1 merged", 7, timeout_ms=5000, flags=FLAG_RETRYABLE)
    sock = dealer(ctx, server.frontend, identity)
    sock.send_multipart(request)
    wait_until(lambda: runs.of(b"sleep 1 merged"), 10, "the job to start")
    sock.close()  # the client gave up on this socket...
    sock = dealer(ctx, server.frontend, identity)
    sock.send_multipart(request)  # ...and resends on a new one while the job runs
    reply = parse_client_reply(recv_within(sock, 10))
    assert reply.status is Status.OK
    assert reply.request_id == 7
    assert reply.body[0] == b"sleep 1 merged"
    assert not sock.poll(1500)  # one job, one reply
    assert len(runs.of(b"sleep 1 merged")) == 1
    sock.close()

    # The same through the library: attempts time out while the job runs; one run, one reply.
    with Client(server.frontend, timeout=0.4, retries=12, context=ctx) as client:
        reply_body = client.request(b"sleep 1.5 lazy")
    assert isinstance(reply_body, list)
    assert reply_body[0] == b"sleep 1.5 lazy"
    assert len(runs.of(b"sleep 1.5 lazy")) == 1


def test_app_error_is_not_retried_by_the_client(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    server = start_server(APP, workers=1, env=runs.env)
    server.wait_ready()
    with (
        Client(server.frontend, timeout=5, retries=3, context=ctx) as client,
        pytest.raises(AppError, match="boom requested"),
    ):
        client.request(b"boom x")
    assert len(runs.of(b"boom x")) == 1
