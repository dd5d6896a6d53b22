"""A remote pool of a Binary Star pair (docs/ha.md): its workers serve whichever broker is active.

Two servers on one host (two port sets on ipc://, as test_ha.py), each with a local pool of its
own service, and a remote pool given both backends. A client that knows both frontends keeps
being answered by the remote pool's workers across a kill -9 of the active server; the old
primary restarted comes back passive, and the pool neither flaps nor loses a registration.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from tests.helpers import wait_until

from zmqserver import Client

from .ha_helpers import HEARTBEAT, Pair, answer, wait_answered, wait_logged
from .test_remote_pool import Proc

pytestmark = [pytest.mark.timeout(90), pytest.mark.compiled_pass]


@pytest.fixture
def pair(short_tmp: Path, ctx: zmq.Context[zmq.Socket[bytes]]) -> Iterator[Pair]:
    """Each server runs `local` itself; plain clients go to `remote`, the pool's service."""
    pair = Pair(short_tmp, ctx, "local=examples.echo:app")
    yield pair
    pair.stop()


def start_pool(pair: Pair, *args: str) -> Proc:
    backends = [f"ipc://{pair.root / role}/back" for role in ("primary", "backup")]
    argv = [sys.executable, "-m", "zmqserver", "worker", "remote=tests.apps:pid"]
    for backend in backends:
        argv += ["--connect", backend]
    argv += ["--heartbeat-interval", str(HEARTBEAT), "--min-servers", "2"]
    argv += ["--min-spare-servers", "0", *args]
    return Proc(pair.root, argv, "pool")


def test_the_remote_pool_follows_the_active_server(pair: Pair) -> None:
    args = ("--default-service", "remote")
    primary = pair.start("primary", *args)
    backup = pair.start("backup", *args)
    pool = start_pool(pair)
    try:
        pids = set(pool.wait_workers(2))
        wait_answered(primary)
        wait_logged(backup, "backup -> passive")
        with Client(pair.endpoints(), service="remote", timeout=1.0, retries=8) as client:
            served = {int(client.request(b"x")) for _ in range(20)}
            assert served <= pids, (served, pids)
            # The passive server holds the same workers, registered but given nothing.
            assert answer(backup, b"x", 2 * HEARTBEAT) is None

            pair.kill("primary")
            killed = time.monotonic()
            after = {int(client.request(b"y")) for _ in range(20)}
            took = time.monotonic() - killed
            print(f"measured: 20 requests through the remote pool {took:.2f}s after the kill")
            assert after <= pids, (after, pids)
            wait_logged(backup, "passive -> active: failover")

            restarted = pair.start("primary", *args)
            wait_logged(restarted, "primary -> passive")
            # The pool registers with the restarted server too (it sent DISCONNECT to the
            # workers it did not know, or they reconnected after its silence).
            wait_until(
                lambda: "registering again" in pool.log() or "answers again" in pool.log(),
                10,
                f"the pool to re-register (log:\n{pool.log()})",
            )
            # No flapping: some heartbeats on, the backup still serves, with the same workers.
            assert answer(restarted, b"x", 4 * HEARTBEAT) is None
            late = {int(client.request(b"z")) for _ in range(20)}
            assert late <= pids, (late, pids)
            assert client.endpoint == pair.endpoints()[1]
        assert set(pool.worker_pids()) == pids  # no worker was replaced
        assert "active -> passive" not in backup.log()
        assert "passive -> active" not in restarted.log()
        assert pool.proc.poll() is None
        # And the pair fails back onto the same workers when the backup dies in turn.
        pair.kill("backup")
        with Client(pair.endpoints()[:1], service="remote", timeout=1.0, retries=8) as client:
            assert int(client.request(b"w")) in pids
    finally:
        pool.stop()


def test_a_pool_of_a_pair_starts_with_one_broker_down(pair: Pair) -> None:
    """The backup not started yet: the workers serve the primary meanwhile, then register
    with the backup when it comes, without a restart."""
    primary = pair.start("primary", "--default-service", "remote")
    pool = start_pool(pair)
    try:
        pids = set(pool.wait_workers(2))
        reply = wait_until_answered(primary)
        assert int(reply) in pids
        backup = pair.start("backup", "--default-service", "remote")
        wait_logged(backup, "backup -> passive")
        pair.kill("primary")
        with Client(pair.endpoints(), service="remote", timeout=1.0, retries=8) as client:
            assert int(client.request(b"x")) in pids
        assert set(pool.worker_pids()) == pids
    finally:
        pool.stop()


def wait_until_answered(server: object) -> bytes:
    replies: list[bytes] = []

    def answered() -> bool:
        reply = answer(server, b"ping", 4 * HEARTBEAT)  # type: ignore[arg-type]
        if reply is not None:
            replies.append(reply)
        return reply is not None

    wait_until(answered, 15, "an answer from the primary")
    return replies[0]
