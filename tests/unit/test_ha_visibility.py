"""A Binary Star server in its metrics and events (docs/ha.md): pure functions of the status
document and of a state change, tested without sockets (the integration tests read a real
pair's /metrics through promtool and its `$zmqserver/ha` key)."""

from __future__ import annotations

import json
from typing import Any

from zmqserver.pubsub.events import ServerEvents
from zmqserver.supervisor.ha_side import HaChange
from zmqserver.supervisor.prometheus import render


def doc(ha: dict[str, Any] | None) -> dict[str, Any]:
    base: dict[str, Any] = {
        "services": [],
        "workers": [],
        "master": {"rss": 1, "cpu_seconds": 0.5},
        "uptime": 3.0,
    }
    if ha is not None:
        base["ha"] = ha
    return base


PAIR = {
    "role": "backup",
    "state": "active",
    "since": 1.0,
    "peer": "passive",
    "peer_alive": True,
    "peer_heard": 0.25,
    "dropped": 3,
    "takeovers": 1,
    "errors": 0,
    "transitions": 2,
}


def samples(text: str) -> dict[str, str]:
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def test_a_lone_server_has_no_pair_metrics() -> None:
    assert "zmqserver_ha" not in render(doc(None), {})


def test_the_pair_state_is_one_gauge_per_state_and_the_counters_follow() -> None:
    got = samples(render(doc(PAIR), {}))
    assert got['zmqserver_ha_state{role="backup",state="active"}'] == "1"
    for state in ("primary", "backup", "passive"):
        assert got[f'zmqserver_ha_state{{role="backup",state="{state}"}}'] == "0"
    assert got["zmqserver_ha_peer_alive"] == "1"
    assert got["zmqserver_ha_peer_last_heard_seconds"] == "0.25"
    assert got["zmqserver_ha_transitions_total"] == "2"
    assert got["zmqserver_ha_takeovers_total"] == "1"
    assert got["zmqserver_ha_requests_dropped_total"] == "3"
    assert got["zmqserver_ha_pair_errors_total"] == "0"


def test_a_peer_never_heard_has_no_age() -> None:
    text = render(doc({**PAIR, "peer": None, "peer_alive": False, "peer_heard": None}), {})
    assert "zmqserver_ha_peer_last_heard_seconds" not in text
    assert samples(text)["zmqserver_ha_peer_alive"] == "0"


def test_a_state_change_is_one_event_on_one_key() -> None:
    change = HaChange(
        role="backup",
        state="active",
        before="passive",
        reason="failover: peer silent and a client asked, ready active",
        error=False,
        peer="active",
        takeovers=1,
    )
    key, value, ttl = ServerEvents().ha_changed(change)
    assert key == b"$zmqserver/ha"
    assert ttl is None  # the latest state stays: a subscriber's snapshot has it
    event = json.loads(value)
    assert {k: event[k] for k in ("role", "state", "before", "error", "takeovers")} == {
        "role": "backup",
        "state": "active",
        "before": "passive",
        "error": False,
        "takeovers": 1,
    }
    assert event["reason"].startswith("failover")
    assert isinstance(event["at"], float)
