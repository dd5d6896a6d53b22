"""Pub-sub across a Binary Star failover (docs/ha.md, the guide's clonesrv6): real servers.

Both servers run with --pubsub-port (two port sets on 127.0.0.1). Keys published to the pair
are copied to the passive server; after a kill -9 of the active one, a subscriber that knows
both endpoints resyncs from the other with every key, and publishing goes on there.
The replication's decisions are tested without sockets in tests/unit/test_pubsub_replica.py.
"""

from __future__ import annotations

import json
import time

import pytest
import zmq
from tests.helpers import wait_until, zmqserver_cli

from zmqserver.pubsub.client import Publisher, Subscriber
from zmqserver.pubsub.frames import PEER_COPY_ID

from .ha_helpers import Pair, pair, wait_answered, wait_logged
from .pubsub_helpers import free_base_port

__all__ = ["pair"]

pytestmark = [pytest.mark.timeout(90), pytest.mark.compiled_pass]


def start_with_pubsub(pair: Pair, ports: dict[str, int]) -> None:
    for role in ("primary", "backup"):
        other = "backup" if role == "primary" else "primary"
        pair.start(
            role,
            "--pubsub-port",
            str(ports[role]),
            "--host",
            "127.0.0.1",
            "--ha-peer-pubsub",
            f"tcp://127.0.0.1:{ports[other]}",
        )


def drain(sub: Subscriber, until: float) -> None:
    while time.monotonic() < until and sub.recv(0.05) is not None:
        pass


def test_a_subscriber_fails_over_with_every_key(pair: Pair) -> None:
    ports = {"primary": free_base_port(), "backup": free_base_port()}
    start_with_pubsub(pair, ports)
    primary, backup = pair.servers["primary"], pair.servers["backup"]
    wait_answered(primary)
    wait_logged(backup, "backup -> passive")
    endpoints = [f"tcp://127.0.0.1:{ports[role]}" for role in ("primary", "backup")]
    keys = {f"/k/{n}".encode(): f"v{n}".encode() for n in range(200)}
    with (
        Publisher(endpoints) as pub,
        Subscriber(endpoints, "/k/", silence=1.0, sync_timeout=1.0) as sub,
    ):
        assert pub.wait_connected()
        for key, value in keys.items():
            pub.publish(key, value)
        wait_until(lambda: (drain(sub, time.monotonic() + 0.2), sub.state == keys)[1], 15, "sync")
        # The backup has them too, a heartbeat or so later (it copies the primary's updates).
        time.sleep(0.5)

        pair.kill("primary")
        killed = time.monotonic()
        wait_until(
            lambda: (drain(sub, time.monotonic() + 0.2), sub.moves > 0 and not sub.agent.syncing)[
                1
            ],
            20,
            f"the subscriber on the backup (log:\n{backup.log()})",
        )
        took = time.monotonic() - killed
        assert sub.state == keys, "keys lost in the failover"
        print(f"measured: subscriber back in step {took:.2f}s after kill -9, keys lost: 0")
        wait_logged(backup, "pub-sub: active:")
        # Copied from the primary, not taken from the publisher's copies (none pending).
        assert "0 pending updates published" in backup.log(), backup.log()
        assert sub.endpoint == endpoints[1]

        # Publishing goes on, on the new active server.
        pub.publish(b"/k/after", b"failover")
        keys[b"/k/after"] = b"failover"
        wait_until(lambda: (drain(sub, time.monotonic() + 0.2), sub.state == keys)[1], 10, "new")


def test_an_update_only_the_passive_received_is_published_on_takeover(pair: Pair) -> None:
    """The pending list: an update sent to the backup's collector alone (as when it was in
    flight to the primary when that died) is published by the backup when it takes over."""
    ports = {"primary": free_base_port(), "backup": free_base_port()}
    start_with_pubsub(pair, ports)
    primary, backup = pair.servers["primary"], pair.servers["backup"]
    wait_answered(primary)
    wait_logged(backup, "backup -> passive")
    pair.kill("primary")
    with Publisher(f"tcp://127.0.0.1:{ports['backup']}") as pub:
        assert pub.wait_connected()
        pub.publish(b"/late", b"only the backup had it")
        time.sleep(0.3)
    with Subscriber(
        [f"tcp://127.0.0.1:{ports[role]}" for role in ("backup", "primary")],
        silence=1.0,
        sync_timeout=1.0,
    ) as sub:
        wait_until(
            lambda: (
                drain(sub, time.monotonic() + 0.2),
                sub.state.get(b"/late") == b"only the backup had it",
            )[1],
            20,
            f"the pending update (log:\n{backup.log()})",
        )
    assert "1 pending updates published" in backup.log()


def test_the_peer_s_copy_is_not_a_client_s_vote(pair: Pair) -> None:
    """A snapshot request reaching a server that is not active is a subscriber's vote for a
    failover (clonesrv6), and counted as a request it dropped. The peer's own copy asks too
    while it is not active (at start-up both are not): that is neither, whatever the timing."""
    ports = {"primary": free_base_port(), "backup": free_base_port()}
    for role in ("primary", "backup"):
        other = "backup" if role == "primary" else "primary"
        pair.start(
            role,
            *("--pubsub-port", str(ports[role]), "--host", "127.0.0.1"),
            *("--ha-peer-pubsub", f"tcp://127.0.0.1:{ports[other]}"),
            *("--pid-file", str(pair.root / f"{role}.pid")),
        )
    wait_answered(pair.servers["primary"])
    wait_logged(pair.servers["backup"], "backup -> passive")

    def dropped() -> int:
        done = zmqserver_cli("status", "--pid-file", str(pair.root / "backup.pid"), "--json")
        assert done.returncode == 0, done.stderr
        return int(json.loads(done.stdout)["ha"]["dropped"])

    def ask(routing_id: bytes | None) -> bool:
        """An ICANHAZ? to the passive backup's snapshot port; whether anything came back."""
        sock = pair.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            sock.setsockopt(zmq.ROUTING_ID, routing_id)
        try:
            sock.connect(f"tcp://127.0.0.1:{ports['backup']}")
            sock.send_multipart([b"ICANHAZ?", b""])
            return bool(sock.poll(500))
        finally:
            sock.close()

    before = dropped()
    assert not ask(PEER_COPY_ID + b"test")
    assert dropped() == before  # not counted: the peer's copy
    assert not ask(None)
    assert dropped() == before + 1  # a subscriber's: counted (and its vote changed nothing)
    assert "passive -> active" not in pair.servers["backup"].log()
