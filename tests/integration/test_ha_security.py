"""The Binary Star peer link with CURVE (docs/ha.md, "Security"): real pairs of servers.

Each server speaks CURVE on its frontend and, with it, on the peer link, where it admits only
the key ``ha_peer_key`` names and hears only a server that holds that key's secret half. A
server with another key is not heard (the other server never sees its state) and both logs say
why; so does a pair of which one server has CURVE and the other not. The explanation of each
libzmq event, the policy's allow/deny lists and the option checks are in
tests/unit/test_ha_link.py, without processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from tests.helpers import ServerProcess, wait_until

from zmqserver.security import ClientCredentials, apply_client, write_key_pair

from .ha_helpers import HEARTBEAT, Pair, pair, wait_logged

__all__ = ["pair"]

# The peer link's security is the supervisor's, whichever build of the broker runs: make test
# runs it once (pyproject's markers); test_ha.py runs the pair's failover in both passes.
pytestmark = [pytest.mark.timeout(90), pytest.mark.compiled_pass]


@dataclass
class Keys:
    root: Path
    clients: Path  # curve_client_keys_dir

    def public(self, name: str) -> Path:
        return self.root / f"{name}.key"

    def serve_args(self, own: str, peer: str) -> tuple[str, ...]:
        """A server holding ``own``'s key pair, expecting ``peer``'s key on the peer link."""
        return (
            "--curve-secret-key-file", str(self.root / f"{own}.key_secret"),
            "--curve-client-keys-dir", str(self.clients),
            "--ha-peer-key", str(self.public(peer)),
        )  # fmt: skip

    def client(self, server: str) -> ClientCredentials:
        return ClientCredentials.load(self.public(server), self.root / "client.key_secret")


@pytest.fixture
def keys(short_tmp: Path) -> Keys:
    root = short_tmp / "keys"
    for name in ("primary", "backup", "rogue", "client"):
        write_key_pair(root, name)
    clients = short_tmp / "clients"
    clients.mkdir()
    (clients / "client.key").write_bytes((root / "client.key").read_bytes())
    return Keys(root, clients)


def answer(
    server: ServerProcess, credentials: ClientCredentials, payload: bytes, timeout: float
) -> bytes | None:
    """One CURVE REQ request; the reply, or None if none came within ``timeout``."""
    sock = server.ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    apply_client(sock, credentials)
    sock.connect(server.frontend)
    try:
        sock.send(payload)
        return sock.recv() if sock.poll(timeout * 1000) else None
    finally:
        sock.close()


def wait_answered(server: ServerProcess, credentials: ClientCredentials) -> float:
    started = time.monotonic()
    wait_until(
        lambda: answer(server, credentials, b"ping", 4 * HEARTBEAT) is not None,
        15.0,
        f"an answer from {server.frontend} (log:\n{server.log()})",
    )
    return time.monotonic() - started


def test_a_curve_pair_fails_over_as_the_plain_one_does(pair: Pair, keys: Keys) -> None:
    # One key pair per server: a client of the pair knows both public keys.
    primary = pair.start("primary", *keys.serve_args("primary", "backup"))
    backup = pair.start("backup", *keys.serve_args("backup", "primary"))
    to_primary, to_backup = keys.client("primary"), keys.client("backup")
    wait_answered(primary, to_primary)
    wait_logged(backup, "backup -> passive")
    assert "heartbeat 0.25s, CURVE)" in backup.log()
    assert answer(backup, to_backup, b"x", 3 * HEARTBEAT) is None
    assert answer(primary, to_primary, b"abc", 5.0) == b"ABC"

    pair.kill("primary")
    took = wait_answered(backup, to_backup)
    print(f"measured: the CURVE backup answered {took:.2f}s after the primary's kill -9")
    wait_logged(backup, "passive -> active: failover")
    restarted = pair.start("primary", *keys.serve_args("primary", "backup"))
    wait_logged(restarted, "primary -> passive")
    assert answer(backup, to_backup, b"def", 5.0) == b"DEF"
    for server in (backup, restarted):
        assert "Binary Star peer link:" not in server.log(), server.log()
        assert "refused a connection" not in server.log(), server.log()


def test_a_peer_with_the_wrong_key_is_not_heard(pair: Pair, keys: Keys) -> None:
    """A "primary" holding another key pair than the one the backup expects: the backup's ZAP
    refuses its connection, the backup's own connection to it fails the CURVE handshake (it
    cannot prove it holds the primary's key), and the backup never sees its state."""
    backup = pair.start("backup", *keys.serve_args("backup", "primary"))
    rogue = pair.start("primary", *keys.serve_args("rogue", "backup"))
    rogue_key = keys.public("rogue").read_text().split('public-key = "')[1][:40]
    wait_logged(backup, f"unknown CURVE key {rogue_key}")
    assert "zmqserver.security: peer link: refused a connection from" in backup.log()
    wait_logged(backup, "the peer closed the CURVE handshake: this server's ha_peer_key is not")
    wait_logged(rogue, "the peer refused this server (ZAP status 400)")
    # Some heartbeats later the backup has still heard nothing: not passive, no peer.
    time.sleep(4 * HEARTBEAT)
    assert "-> passive" not in backup.log()
    assert backup.status()["ha"]["peer"] is None
    # The refusals are logged once, not at every reconnection (every heartbeat).
    assert backup.log().count("unknown CURVE key") == 1, backup.log()


def test_a_pair_half_with_curve_says_so(pair: Pair, keys: Keys) -> None:
    primary = pair.start("primary")  # no CURVE
    backup = pair.start("backup", *keys.serve_args("backup", "primary"))
    for server in (primary, backup):
        wait_logged(server, "the two servers speak different security mechanisms: one server")
    assert "-> passive" not in backup.log()


def test_a_curve_pair_copies_its_pub_sub_map_over_curve(pair: Pair, keys: Keys) -> None:
    """The passive server's copy of the active one's pub-sub map connects with its own key
    pair, admitted as ``ha_peer_key`` by the peer's pub-sub ports; no other key is needed."""
    from zmqserver.pubsub.client import Publisher, Subscriber

    from .pubsub_helpers import free_base_port

    ports = {"primary": free_base_port(), "backup": free_base_port()}
    for own, peer in (("primary", "backup"), ("backup", "primary")):
        pair.start(
            own,
            *keys.serve_args(own, peer),
            "--pubsub-port", str(ports[own]),
            "--host", "127.0.0.1",
            "--ha-peer-pubsub", f"tcp://127.0.0.1:{ports[peer]}",
        )  # fmt: skip
    primary, backup = pair.servers["primary"], pair.servers["backup"]
    wait_answered(primary, keys.client("primary"))
    wait_logged(backup, "pub-sub: in step with the peer")
    client_secret = keys.root / "client.key_secret"
    with Publisher(
        f"tcp://127.0.0.1:{ports['primary']}",
        server_key=keys.public("primary"),
        client_key_file=client_secret,
        context=primary.ctx,
    ) as pub:
        assert pub.wait_connected()
        pub.publish("/cfg/colour", "blue")
    time.sleep(4 * HEARTBEAT)  # the backup's copy hears the update
    pair.kill("primary")
    wait_answered(backup, keys.client("backup"))
    with Subscriber(
        f"tcp://127.0.0.1:{ports['backup']}",
        "/cfg/",
        server_key=keys.public("backup"),
        client_key_file=client_secret,
        context=backup.ctx,
    ) as sub:
        update = sub.recv(5.0)
    assert update is not None
    assert (update.key, update.value) == (b"/cfg/colour", b"blue")
    assert "refused a connection" not in backup.log(), backup.log()
