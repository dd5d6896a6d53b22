"""A Binary Star pair of real servers (docs/ha.md): failover, failback, and the split-brain guard.

The state machine's every cell is tested without sockets (tests/unit/test_ha_fsm.py); these
tests show the component applying it: the passive server answers nothing, a kill -9 of the
active one moves clients to the other after two heartbeats, and the old primary comes back
passive. Heartbeats are short (ha_helpers.HEARTBEAT) and every wait is bounded.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.request

import pytest
from tests.helpers import REPO, ServerProcess, clean_env, wait_until
from tests.integration.pubsub_helpers import free_base_port

from zmqserver import Subscriber

from .ha_helpers import HEARTBEAT, Pair, answer, pair, wait_answered, wait_logged

__all__ = ["pair"]

pytestmark = [pytest.mark.timeout(90), pytest.mark.compiled_pass]


def test_failover_then_the_old_primary_comes_back_passive(pair: Pair) -> None:
    primary = pair.start("primary")
    backup = pair.start("backup")
    wait_answered(primary)
    wait_logged(backup, "backup -> passive")
    # The passive server answers nothing (its clients time out and try the other server).
    assert answer(backup, b"x", 3 * HEARTBEAT) is None
    assert answer(primary, b"abc", 5.0) == b"ABC"

    pair.kill("primary")
    took = wait_answered(backup)
    print(f"measured: the backup answered {took:.2f}s after the primary's kill -9")
    wait_logged(backup, "passive -> active: failover")

    restarted = pair.start("primary")
    wait_logged(restarted, "primary -> passive")
    assert answer(restarted, b"x", 3 * HEARTBEAT) is None
    assert answer(backup, b"abc", 5.0) == b"ABC"
    # No flapping: some heartbeats later the backup is still the active one.
    assert answer(restarted, b"x", 4 * HEARTBEAT) is None
    assert answer(backup, b"def", 5.0) == b"DEF"
    assert "active -> passive" not in backup.log()
    assert "passive -> active" not in restarted.log()


def status(pid_file: str, *args: str) -> str:
    env = clean_env()
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "zmqserver", "status", "--pid-file", pid_file, *args],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_status_shows_the_pair(pair: Pair) -> None:
    primary = pair.start("primary", "--pid-file", str(pair.root / "p.pid"))
    backup = pair.start("backup", "--pid-file", str(pair.root / "b.pid"))
    wait_answered(primary)
    wait_logged(backup, "backup -> passive")
    assert answer(backup, b"x", 2 * HEARTBEAT) is None
    doc = json.loads(status(str(pair.root / "b.pid"), "--json"))["ha"]
    assert doc["role"] == "backup"
    assert doc["state"] == "passive"
    assert doc["peer"] == "active"
    assert doc["peer_alive"] is True
    assert doc["dropped"] >= 1
    assert (doc["takeovers"], doc["errors"]) == (0, 0)
    text = status(str(pair.root / "p.pid"))
    assert "Binary Star primary: ACTIVE" in text, text
    assert "peer passive" in text, text


def test_silence_alone_does_not_make_the_backup_active(pair: Pair) -> None:
    """The split-brain guard: the primary silent (stopped, as a cut link looks to the backup)
    and no client at the backup: the backup stays passive, and the primary serves again."""
    primary = pair.start("primary")
    backup = pair.start("backup")
    wait_answered(primary)
    wait_logged(backup, "backup -> passive")
    primary.signal(signal.SIGSTOP)
    try:
        # Four heartbeats of silence, with nobody knocking at the backup.
        assert answer(primary, b"x", 4 * HEARTBEAT) is None
    finally:
        primary.signal(signal.SIGCONT)
    # The primary serves again. A job the master hands out the moment it resumes can meet its
    # worker reconnecting (under load the worker may have heard nothing for its liveness
    # period, and started a new session): that job gets worker_lost, the next one its answer.
    wait_until(lambda: answer(primary, b"abc", 5.0) == b"ABC", 15, "the primary serving again")
    assert "-> active" not in backup.log()


def test_a_backup_alone_never_serves(pair: Pair) -> None:
    backup = pair.start("backup")
    backup.wait_workers(1)
    assert answer(backup, b"x", 8 * HEARTBEAT) is None
    assert "-> active" not in backup.log()


def test_metrics_and_events_show_the_pair(pair: Pair) -> None:
    """/metrics (checked by promtool) and the `$zmqserver/ha` event of the backup, across a
    failover."""
    base, peer = free_base_port(), free_base_port()
    primary = pair.start(
        "primary", "--pubsub-port", str(peer), "--ha-peer-pubsub", f"tcp://127.0.0.1:{base}"
    )
    backup = pair.start(
        "backup",
        "--metrics-port",
        "0",
        "--pubsub-port",
        str(base),
        "--pubsub-events",
        "--ha-peer-pubsub",
        f"tcp://127.0.0.1:{peer}",
    )
    url = metrics_url(backup)
    wait_answered(primary)
    wait_logged(backup, "backup -> passive")
    text = get(url)
    assert 'zmqserver_ha_state{role="backup",state="passive"} 1' in text, text
    assert 'zmqserver_ha_state{role="backup",state="active"} 0' in text
    assert "zmqserver_ha_peer_alive 1" in text
    assert "zmqserver_ha_peer_last_heard_seconds " in text

    # The copy of the primary's map: asked again each heartbeat until the primary, active,
    # answers (not a subscriber's 5 s), so a failover this early finds it.
    wait_logged(backup, "pub-sub: in step with the peer")
    # A passive server publishes nothing (docs/ha.md, pub-sub in a pair): its events are
    # held, and its subscribers hear them once it has taken over.
    pair.kill("primary")
    wait_answered(backup)
    with Subscriber(f"tcp://127.0.0.1:{base}", "$zmqserver/ha") as sub:

        def event() -> dict[str, object]:
            sub.recv(0.1)
            return json.loads(sub.state.get(b"$zmqserver/ha", b"{}"))

        wait_until(lambda: event().get("state") == "active", 10, "the failover event")
        took = event()
        assert (took["before"], took["takeovers"], took["error"]) == ("passive", 1, False)
        assert str(took["reason"]).startswith("failover")
    text = get(url)
    assert 'zmqserver_ha_state{role="backup",state="active"} 1' in text, text
    assert "zmqserver_ha_takeovers_total 1" in text
    assert "zmqserver_ha_transitions_total 2" in text
    promtool = shutil.which("promtool")
    if promtool:
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def metrics_url(server: ServerProcess) -> str:
    found: list[str] = []

    def logged() -> bool:
        found[:] = re.findall(r"metrics and dashboard on (http://\S+/)", server.log())
        return bool(found)

    wait_until(logged, 15, "the metrics port in the log")
    return found[0] + "metrics"


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())
