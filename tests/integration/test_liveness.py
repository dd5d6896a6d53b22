"""Heartbeat silence that is not death: a paused master, a job that holds the GIL (issue 18).

A worker is dropped when the broker hears nothing from it for heartbeat_interval x liveness. Two
kinds of silence are not the worker's fault and must not get it killed: the master itself did
not run (SIGSTOP, a swapped-out host), so the heartbeats wait unread in its socket; and a local
worker whose app holds the GIL in a long C call, so its heartbeat thread cannot run although the
process is alive (the job's deadline governs that case). docs/reliability.md §2.

Hygiene as in test_faults.py: every wait is bounded, only processes the test started are
signalled, and a master the test stops is always continued before the test ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from tests.helpers import ServerProcess, wait_until
from tests.integration.test_faults import Runs, dealer, mdp_request, measured, recv_within

from zmqserver import Client
from zmqserver.errors import Status
from zmqserver.protocol import FLAG_RETRYABLE, parse_client_reply

pytestmark = pytest.mark.timeout(90)

APP = "tests.apps:faulty"
Context = zmq.Context[zmq.Socket[bytes]]
StartServer = Callable[..., ServerProcess]


@pytest.fixture
def runs(short_tmp: Path) -> Runs:
    return Runs(short_tmp / "runs")


@contextlib.contextmanager
def paused(server: ServerProcess) -> Iterator[None]:
    """SIGSTOP the master of ``server``; whatever happens, SIGCONT it at the end."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGCONT)


def test_paused_master_kills_no_worker_and_every_job_gets_one_reply(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    """The default heartbeat (1 s x 3) and a 4 s pause: the jobs that were running finish during
    the pause, their replies and heartbeats wait in the master's socket, and the jobs queued
    behind them run after it. Nobody may be judged dead before what waits has been read."""
    server = start_server(APP, "--heartbeat-interval", "1", workers=2, env=runs.env)
    pids = server.wait_workers(2)
    server.wait_ready()
    jobs = [b"sleep 2 paused-%d" % i for i in range(4)]
    socks = [dealer(ctx, server.frontend) for _ in jobs]
    try:
        for i, (sock, job) in enumerate(zip(socks, jobs, strict=True)):
            # Not retryable: a worker killed under a job shows as worker_lost, not as a rerun.
            sock.send_multipart(mdp_request(job, i + 1))
        wait_until(lambda: sum(runs.counts()[j] for j in jobs) == 2, 10, "two jobs to run")
        with paused(server):
            time.sleep(4)  # the fault itself: how long the master does not run
        replies = [parse_client_reply(recv_within(sock, 20)) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    lost = [r for r in replies if r.status is not Status.OK]
    counts = runs.counts()
    now_pids = server.worker_pids()
    measured(
        "paused master (4 s, interval 1 s, liveness 3)",
        workers_killed=len(set(pids) - set(now_pids)),
        jobs_lost=len(lost),
        jobs_run_twice=sum(1 for job in jobs if counts[job] > 1),
    )
    assert not lost, [(r.status, b"".join(r.body)) for r in lost]
    for job, reply in zip(jobs, replies, strict=True):
        assert reply.body[0] == job
        assert int(reply.body[1]) in pids
    assert all(counts[job] == 1 for job in jobs), counts
    assert now_pids == pids, server.log()[-4000:]  # who replaced a worker, and why
    assert "missed" not in server.log()


def test_job_holding_the_gil_is_not_killed_as_hung(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    """A 6 s C call that keeps the GIL: the worker's heartbeat thread cannot run for 24 x the
    heartbeat interval, but the process is alive and running, and job_timeout is 60 s."""
    server = start_server(APP, "--job-timeout", "60", workers=2, env=runs.env)  # 0.25 s x 3
    pids = server.wait_workers(2)
    server.wait_ready()
    job = b"gil 6 held"
    started = time.monotonic()
    with Client(server.frontend, timeout=30, retries=3, context=ctx) as client:
        try:
            reply: list[bytes] | None = client.request(job)
        except Exception:
            reply = None
    elapsed = time.monotonic() - started
    now_pids = server.worker_pids()
    measured(
        "GIL held 6 s (interval 0.25 s, liveness 3, job_timeout 60 s)",
        workers_killed=len(set(pids) - set(now_pids)),
        runs=len(runs.of(job)),
        replied=reply is not None,
        elapsed_s=elapsed,
    )
    assert reply is not None, server.log()
    assert reply[0] == job
    assert runs.of(job) == [int(reply[1])]
    assert now_pids == pids
    assert "missed" not in server.log()


def test_busy_worker_stopped_by_sigstop_is_still_killed_as_hung(
    start_server: StartServer, ctx: Context, runs: Runs
) -> None:
    """The other side of the rule above: a local worker whose process is stopped is not running,
    so heartbeat silence still gets it killed and its job retried, in about a second."""
    server = start_server(APP, workers=2, env=runs.env)
    server.wait_workers(2)
    server.wait_ready()
    job = b"sleep 2 stopped"
    sock = dealer(ctx, server.frontend)
    try:
        sock.send_multipart(mdp_request(job, 1, flags=FLAG_RETRYABLE))
        wait_until(lambda: runs.of(job), 10, "the job to start")
        (hung,) = runs.of(job)
        server.started_pids.add(hung)
        os.kill(hung, signal.SIGSTOP)
        try:
            reply = parse_client_reply(recv_within(sock, 15))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(hung, signal.SIGKILL)
    finally:
        sock.close()
    assert reply.status is Status.OK
    assert int(reply.body[1]) != hung
    assert "missed 3 heartbeats" in server.log()
