"""Cut only the Binary Star peer link, and show that the pair makes no split brain (docs/ha.md).

As root where ``ip netns`` works (it skips elsewhere): the primary and the backup run in two
network namespaces joined by a veth pair that carries nothing but the peer link (TCP), while
their frontends are ipc:// paths, reachable by this test's clients from any namespace. Taking
the veth down cuts the link and nothing else, which is what a broken network between the two
servers is, and not what a stopped server is (test_ha.py stops the primary).

What the test shows, in one run of a few seconds:

1. Link cut, clients at the primary only: the backup stays passive (the peer is silent, but no
   client asks it), and the primary answers every request.
2. Link restored: nothing changes.
3. Link cut again and a client at the backup: the backup takes over while the primary is still
   active. Two active servers: the known limit of Binary Star, which docs/ha.md states.
4. Link restored: the backup steps down within a few heartbeats, and then nothing changes
   (states sampled over eight heartbeats: no flapping).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from tests.helpers import ServerProcess, wait_until

from .ha_helpers import HEARTBEAT, answer, wait_answered, wait_logged
from .netns_helpers import ip, veth_pair

pytestmark = [pytest.mark.timeout(90), pytest.mark.compiled_pass]

PRIMARY_IP, BACKUP_IP = "192.0.2.11", "192.0.2.12"  # TEST-NET-1, only inside our namespaces
LINK_PORT = 6670
#: State changes and pair errors in the log (ha_side.py logs one line for each).
CHANGE = re.compile(r"Binary Star: (\w+ -> \w+|both servers)")


@dataclass
class Link:
    """Two namespaces and the veth pair between them (the peer link's only path)."""

    primary_ns: str
    backup_ns: str
    backup_if: str

    def cut(self) -> None:
        assert ip("-n", self.backup_ns, "link", "set", self.backup_if, "down").returncode == 0

    def restore(self) -> None:
        assert ip("-n", self.backup_ns, "link", "set", self.backup_if, "up").returncode == 0


@pytest.fixture
def link() -> Iterator[Link]:
    """The primary's namespace and the backup's, joined by the peer link's only path."""
    with veth_pair("zh", PRIMARY_IP, BACKUP_IP) as pair:
        yield Link(pair.left, pair.right, pair.right_if)


def _start(root: Path, ctx: zmq.Context[zmq.Socket[bytes]], link: Link, role: str) -> ServerProcess:
    ns, mine, other = (
        (link.primary_ns, PRIMARY_IP, BACKUP_IP)
        if role == "primary"
        else (link.backup_ns, BACKUP_IP, PRIMARY_IP)
    )
    workdir = root / role
    workdir.mkdir()
    return ServerProcess(
        workdir, "examples.upper:app",
        "--ha-role", role,
        "--ha-bind", f"tcp://{mine}:{LINK_PORT}",
        "--ha-peer", f"tcp://{other}:{LINK_PORT}",
        "--ha-heartbeat", str(HEARTBEAT),
        workers=1, ctx=ctx, prefix=("ip", "netns", "exec", ns),
    )  # fmt: skip


def _changes(server: ServerProcess) -> int:
    return len(CHANGE.findall(server.log()))


def _ha(server: ServerProcess) -> dict[str, object]:
    ha = server.status()["ha"]
    assert isinstance(ha, dict)
    return ha


def test_cutting_only_the_peer_link_makes_no_split_brain(
    link: Link, short_tmp: Path, ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    primary = _start(short_tmp, ctx, link, "primary")
    backup = _start(short_tmp, ctx, link, "backup")
    try:
        wait_answered(primary)
        wait_logged(backup, "backup -> passive")
        settled = (_changes(primary), _changes(backup))

        # 1. The link cut, clients at the primary only, for eight heartbeats.
        link.cut()
        cut_at = time.monotonic()
        served = 0
        while time.monotonic() - cut_at < 8 * HEARTBEAT:
            assert answer(primary, b"abc", 5.0) == b"ABC"
            served += 1
        ha = _ha(backup)
        assert (ha["state"], ha["peer_alive"], ha["dropped"]) == ("passive", False, 0), ha
        assert _ha(primary)["state"] == "active"

        # 2. The link restored: the backup hears the primary again, and nothing changes.
        link.restore()
        wait_until(lambda: _ha(backup)["peer_alive"], 15, "the backup to hear the primary")
        assert (_changes(primary), _changes(backup)) == settled
        assert answer(primary, b"def", 5.0) == b"DEF"

        # 3. The link cut again, and a client at the backup while the primary is alive: the
        # backup takes over (the peer is silent and a client asked). Both are active.
        link.cut()
        took = wait_answered(backup)
        wait_logged(backup, "passive -> active: failover")
        assert answer(primary, b"ghi", 5.0) == b"GHI"
        assert (_ha(primary)["state"], _ha(backup)["state"]) == ("active", "active")

        # 4. The link restored: the backup steps down, the primary stays active, and eight
        # heartbeats later that is still so.
        link.restore()
        restored_at = time.monotonic()
        wait_until(
            lambda: _ha(backup)["state"] == "passive",
            15,
            f"the backup to step down:\n{backup.log()}",
        )
        settle = time.monotonic() - restored_at
        assert "both servers active (split brain): backup steps down" in backup.log()
        changes = (_changes(primary), _changes(backup))
        for _ in range(8):
            time.sleep(HEARTBEAT)
            assert (_ha(primary)["state"], _ha(backup)["state"]) == ("active", "passive")
        assert (_changes(primary), _changes(backup)) == changes
        assert answer(primary, b"jkl", 5.0) == b"JKL"
        assert answer(backup, b"x", 3 * HEARTBEAT) is None
        print(
            f"measured: {served} requests answered by the primary while the link was cut; a "
            f"client at the backup served after {took:.2f}s; one active again {settle:.2f}s "
            "after the link came back"
        )
    finally:
        primary.stop()
        backup.stop()
