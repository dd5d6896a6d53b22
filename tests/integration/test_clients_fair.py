"""Per-client fairness and bounds with real processes (docs/reliability.md §6.5).

The server runs ``tests.apps:faulty``, which records each run of a job in order, so these tests
check the ORDER jobs ran in and how many ran, not timings. Every wait is bounded; the only
processes are the server the test started and its workers.
"""

from __future__ import annotations

import time

import pytest
import zmq
from tests.helpers import wait_until
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


def replies(sock: zmq.Socket[bytes], count: int, seconds: float) -> dict[int, Status]:
    """``count`` replies by request id, each id answered once; fails past ``seconds``."""
    got: dict[int, Status] = {}
    deadline = time.monotonic() + seconds
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"{len(got)} of {count} replies within {seconds}s")
        reply = parse_client_reply(recv_within(sock, left))
        assert reply.request_id is not None
        assert reply.request_id not in got, f"request {reply.request_id} answered twice"
        got[reply.request_id] = reply.status
    return got


def test_a_probes_job_runs_before_a_floods_backlog(
    start_server: StartServer,
    ctx: Context,
    runs: Runs,  # noqa: F811
) -> None:
    """One worker, one client with 40 jobs queued: another client's job runs within two jobs
    of its arrival, not after the 40 (the seed and FIFO dispatch ran it last)."""
    server = start_server(APP, "--worker-credit", "1", workers=1, env=runs.env)
    server.wait_ready()
    flood = dealer(ctx, server.frontend)
    for n in range(40):
        flood.send_multipart(mdp_request(b"sleep 0.05 flood-%d" % n, n + 1))
    wait_until(lambda: len(runs.all()) >= 2, 10, "the flood to start running")
    probe = dealer(ctx, server.frontend)
    before = len(runs.all())
    probe.send_multipart(mdp_request(b"sleep 0.05 probe", 1))
    assert parse_client_reply(recv_within(probe, 10)).status is Status.OK
    order = [payload for _, payload in runs.all()]
    position = order.index(b"sleep 0.05 probe")
    # Ran: what had run when it was sent, the flood's job running then, at most one more (the
    # flood's turn came first in the ring), then the probe.
    assert position <= before + 2, order[: position + 1]
    assert replies(flood, 40, 30) == dict.fromkeys(range(1, 41), Status.OK)
    assert order.count(b"sleep 0.05 probe") == 1
    flood.close()
    probe.close()


def test_the_queued_jobs_of_a_client_that_left_never_run(
    start_server: StartServer,
    ctx: Context,
    runs: Runs,  # noqa: F811
) -> None:
    """A client queues 30 jobs and disconnects: once the broker learns it left (the reply to
    its running job cannot be delivered), its queued jobs are dropped without running."""
    server = start_server(APP, "--worker-credit", "1", workers=1, env=runs.env)
    server.wait_ready()
    leaver = dealer(ctx, server.frontend)
    for n in range(30):
        leaver.send_multipart(mdp_request(b"sleep 0.1 gone-%d" % n, n + 1))
    wait_until(lambda: runs.all(), 10, "the first job to run")
    leaver.close(linger=0)
    time.sleep(0.5)  # its running job ends meanwhile, and maybe one more
    probe = dealer(ctx, server.frontend)
    probe.send_multipart(mdp_request(b"probe", 1))
    assert parse_client_reply(recv_within(probe, 10)).status is Status.OK
    gone = [p for _, p in runs.all() if p.startswith(b"sleep 0.1 gone-")]
    assert len(gone) <= 4, gone  # not 30: 3 s of work nobody would read
    probe.close()


@pytest.mark.parametrize("inflight", ["1000", "0"])
def test_an_async_client_that_sends_everything_first_gets_every_reply(
    start_server: StartServer, ctx: Context, inflight: str
) -> None:
    """The zguide's asynchronous client: 20,000 requests sent before a reply is read. Each one
    gets its reply (with the default bound, the ones past it get queue_full): none is dropped
    because the client's pipe was full (the broker used to drop them as for a vanished client)."""
    # No bound at all (and no max_queue either): every job runs and every reply is an answer.
    unbounded = ("--max-queue", "0") if inflight == "0" else ()
    server = start_server(APP, "--max-client-inflight", inflight, *unbounded, workers=2)
    server.wait_ready()
    sock = dealer(ctx, server.frontend)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 100)
    count = 20_000
    for n in range(1, count + 1):
        sock.send_multipart(mdp_request(b"%d" % n, n))
    time.sleep(1.0)  # the broker answers into a pipe nobody reads yet
    got = replies(sock, count, 60)
    statuses = set(got.values())
    if inflight == "0":
        assert statuses == {Status.OK}
    else:
        assert statuses <= {Status.OK, Status.QUEUE_FULL}
        assert sum(s is Status.OK for s in got.values()) >= 1000
    assert server.log().count("dropped") == 0
    sock.close()


def test_replies_for_a_slow_reader_wait_for_it_in_order(
    start_server: StartServer, ctx: Context
) -> None:
    """300 replies of 64 KiB to a client that reads nothing for a second: its pipe fills, the
    broker holds the rest and sends them as it reads, in order."""
    server = start_server(APP, "--worker-credit", "1", workers=2)
    server.wait_ready()
    sock = dealer(ctx, server.frontend)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.RCVBUF, 4096)
    filler = b"x" * 65536
    for n in range(1, 301):
        sock.send_multipart(mdp_request(b"%d " % n + filler, n))
    time.sleep(1.0)
    order = []
    for _ in range(300):
        reply = parse_client_reply(recv_within(sock, 20))
        assert reply.status is Status.OK
        assert reply.body[0].startswith(b"%d " % reply.request_id)
        order.append(reply.request_id)
    assert sorted(order) == list(range(1, 301))
    assert "dropped" not in server.log()
    sock.close()
