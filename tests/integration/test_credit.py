"""Credit-based flow with real processes: workers that hold several jobs at once (worker_credit).

The server runs ``tests.apps:faulty``, which records each run of a job (tests/integration/
test_faults.py), so a test can tell how often and where each job ran. Bounded waits only; the
only process killed is a worker of the server the test started.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest
import zmq
from tests.helpers import pid_alive, wait_until
from tests.integration.test_faults import (
    APP,
    Context,
    Runs,
    StartServer,
    dealer,
    mdp_request,
    recv_within,
    runs,  # noqa: F401 (a fixture)
)

from zmqserver.errors import Status
from zmqserver.protocol import parse_client_reply

pytestmark = pytest.mark.timeout(90)


def collect(sock: zmq.Socket[bytes], count: int, seconds: float) -> dict[int, tuple[Status, list]]:
    """``count`` final replies by request id; fails on a second reply to the same request."""
    replies: dict[int, tuple[Status, list]] = {}
    deadline = time.monotonic() + seconds
    while len(replies) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"{len(replies)} of {count} replies within {seconds}s")
        reply = parse_client_reply(recv_within(sock, left))
        assert reply.final
        assert reply.request_id is not None
        assert reply.request_id not in replies, f"request {reply.request_id} answered twice"
        replies[reply.request_id] = (reply.status, reply.body)
    return replies


def test_two_workers_with_credit_four_serve_pipelined_jobs_once_each(
    start_server: StartServer,
    ctx: Context,
    runs: Runs,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    server = start_server(APP, "--worker-credit", "4", workers=2, env=runs.env)
    server.wait_workers(2)
    server.wait_ready()
    sock = dealer(ctx, server.frontend)
    request.addfinalizer(sock.close)
    n, window = 600, 32
    sent = received = 0
    replies: dict[int, tuple[Status, list]] = {}
    while received < n:
        while sent < n and sent - received < window:
            sock.send_multipart(mdp_request(b"job %d" % sent, sent))
            sent += 1
        got = collect(sock, 1, 10)
        assert not got.keys() & replies.keys()
        replies.update(got)
        received += 1
    assert sorted(replies) == list(range(n))
    for i, (status, body) in replies.items():
        assert status is Status.OK
        assert body == [b"job %d" % i]
    counts = runs.counts()
    assert all(counts[b"job %d" % i] == 1 for i in range(n))
    assert len({pid for pid, _ in runs.all()}) == 2  # both workers took jobs


def test_worker_killed_holding_several_jobs_each_gets_one_outcome(
    start_server: StartServer,
    ctx: Context,
    runs: Runs,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    """One worker holds a running job and three queued behind it; it is SIGKILLed. The running
    job (not retryable) is answered worker_lost; the three never started, so they run on the
    replacement worker without counting an attempt, and succeed although not retryable."""
    # --prefetch-below 0: the worker is sent jobs up to its credit even while it runs a long
    # one (by default the gate keeps them in the broker's queue, and nothing would be held).
    server = start_server(
        APP, "--worker-credit", "4", "--prefetch-below", "0", workers=1, env=runs.env
    )
    (pid,) = server.wait_workers(1)
    server.wait_ready()
    sock = dealer(ctx, server.frontend)
    request.addfinalizer(sock.close)
    head = b"sleep 30 head"
    sock.send_multipart(mdp_request(head, 0))
    behind = [b"behind %d" % i for i in range(1, 4)]
    wait_until(lambda: runs.of(head), 10, "the first job to start")
    for i, payload in enumerate(behind, 1):
        sock.send_multipart(mdp_request(payload, i))
    # The three go to the worker at once (credit 4) and must wait there. The broker reads one
    # client's messages in order, so its answer to an MMI query sent after them means it has
    # accepted them and handed them to the worker: no window to guess.
    sock.send_multipart(mdp_request(b"default", 99, service=b"mmi.service"))
    known = parse_client_reply(recv_within(sock, 10, "the MMI answer"))
    assert known.body == [b"200"]
    assert runs.of(head) == [pid]
    assert not any(runs.of(p) for p in behind), "a job ran while the head one was running"
    os.kill(pid, signal.SIGKILL)
    replies = collect(sock, 4, 30)
    assert replies[0][0] is Status.WORKER_LOST
    for i, payload in enumerate(behind, 1):
        assert replies[i] == (Status.OK, [payload])
    counts = runs.counts()
    assert counts[head] == 1
    assert Counter(counts[p] for p in behind) == Counter({1: 3})
    (new,) = server.wait_workers(1)
    assert new != pid
    # Each ran on the replacement only: none ran on the killed worker while it ran the head.
    assert all(runs.of(p) == [new] for p in behind)
    wait_until(lambda: not pid_alive(pid), 10, "the killed worker to be reaped")


def test_graceful_exit_after_max_requests_hands_back_held_jobs(
    start_server: StartServer,
    ctx: Context,
    runs: Runs,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    """A worker recycled by max_requests while holding more jobs must not run them after its
    DISCONNECT: the broker requeues them, and every job runs exactly once."""
    server = start_server(
        APP, "--worker-credit", "4", "--max-requests", "3", workers=2, env=runs.env
    )
    server.wait_workers(2)
    server.wait_ready()
    sock = dealer(ctx, server.frontend)
    request.addfinalizer(sock.close)
    n = 40
    for i in range(n):
        sock.send_multipart(mdp_request(b"r %d" % i, i))
    replies = collect(sock, n, 60)
    wrong = {i: r for i, r in replies.items() if r != (Status.OK, [b"r %d" % i])}
    assert not wrong, f"{wrong}\n{server.log()}"
    counts = runs.counts()
    assert all(counts[b"r %d" % i] == 1 for i in range(n))
    assert len({pid for pid, _ in runs.all()}) >= n // 3  # recycled every 3 jobs


def test_with_default_credit_short_jobs_do_not_wait_behind_a_long_one(
    start_server: StartServer,
    ctx: Context,
    runs: Runs,  # noqa: F811
) -> None:
    """The prefetch gate, with real processes and the default credit (16): once a job has run
    longer than prefetch_below, its worker gets nothing more, so a burst of short jobs all go
    to the other worker and are answered while the long job still runs."""
    server = start_server(APP, workers=2, env=runs.env)
    server.wait_workers(2)
    server.wait_ready()
    short = dealer(ctx, server.frontend)
    pids: set[bytes] = set()

    def burst_served_by_both() -> bool:
        """Short jobs, a burst: both workers serve some, and the gate opens. A worker that has
        not registered yet serves none of a burst (wait_ready saw one worker): burst again."""
        for _ in range(20):
            short.send_multipart([b"", b"sleep 0 short"])
        pids.update(recv_within(short, 10)[2] for _ in range(20))
        return len(pids) == 2

    wait_until(burst_served_by_both, 20, "both workers to serve a burst of short jobs")
    long = dealer(ctx, server.frontend)
    long.send_multipart([b"", b"sleep 3 long"])
    wait_until(lambda: runs.of(b"sleep 3 long"), 10, "the long job to start")
    # The gate's condition is a duration: the running job must have outlasted prefetch_below
    # (1 ms). The job has started (above); this makes sure it has run ten times that long.
    time.sleep(0.01)
    for _ in range(30):
        short.send_multipart([b"", b"sleep 0 short"])
    served_by = Counter(recv_within(short, 10)[2] for _ in range(30))
    assert not long.poll(0), "short jobs waited behind the long one"
    (long_pid,) = pids - set(served_by)
    assert recv_within(long, 10)[1:] == [b"sleep 3 long", long_pid]
    assert runs.of(b"sleep 3 long") == [int(long_pid)]
    short.close()
    long.close()
