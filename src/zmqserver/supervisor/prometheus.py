"""The Prometheus text exposition format (version 0.0.4) of a server's counters.

Rule 1: a pure function of the status document (observe.py) and the broker's per-service
counters (broker/metrics.py) to text; no sockets. Written out here rather than with
prometheus-client: a dozen families need no dependency, no registry and no global state in the
master, and ``promtool check metrics`` holds the output to the format (tests/integration).

Label values come from service names, which the config restricts to printable text without
spaces; they are escaped anyway. No label comes from a client: requests for services the
server does not know are counted under ``service=""``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..broker.metrics import BOUNDS, Histogram, ServiceMetrics
from ..errors import Status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help: str) -> None:
        self.lines.append(f"# HELP {name} {help}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: Mapping[str, str], value: float) -> None:
        if labels:
            shown = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{shown}}} {_number(value)}")
        else:
            self.lines.append(f"{name} {_number(value)}")

    def histogram(self, name: str, labels: dict[str, str], hist: Histogram) -> None:
        seen = 0
        for bound, count in zip((*BOUNDS, float("inf")), hist.counts, strict=True):
            seen += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            self.sample(f"{name}_bucket", {**labels, "le": le}, seen)
        self.sample(f"{name}_sum", labels, hist.total)
        self.sample(f"{name}_count", labels, hist.count)


def render(doc: dict[str, Any], counters: Mapping[bytes, ServiceMetrics]) -> str:
    """The text of ``/metrics``."""
    out = _Out()
    names = [service["name"] for service in doc["services"]]
    per_service = {name: counters.get(name.encode()) for name in names}

    out.family("zmqserver_jobs_total", "counter", "Jobs ended, and requests refused, by outcome.")
    for name, metrics in per_service.items():
        outcomes = metrics.outcomes if metrics is not None else [0] * len(Status)
        for status in Status:
            out.sample(
                "zmqserver_jobs_total",
                {"service": name, "outcome": status.reason},
                outcomes[status],
            )
    unknown = counters.get(b"")
    if unknown is not None:
        for status in Status:
            if unknown.outcomes[status]:
                out.sample(
                    "zmqserver_jobs_total",
                    {"service": "", "outcome": status.reason},
                    unknown.outcomes[status],
                )
    for family, attr, help in (
        ("zmqserver_job_wait_seconds", "wait", "Time from a job's arrival to its start."),
        ("zmqserver_job_run_seconds", "run", "Time a worker took over a job."),
    ):
        out.family(family, "histogram", help)
        for name, metrics in per_service.items():
            out.histogram(family, {"service": name}, getattr(metrics or ServiceMetrics(), attr))

    out.family("zmqserver_queue_length", "gauge", "Jobs queued for a worker.")
    for service in doc["services"]:
        out.sample("zmqserver_queue_length", {"service": service["name"]}, service["queue"])
    out.family(
        "zmqserver_queue_oldest_wait_seconds", "gauge", "How long the oldest queued job waited."
    )
    for service in doc["services"]:
        wait = service["oldest_wait"] or 0.0
        out.sample("zmqserver_queue_oldest_wait_seconds", {"service": service["name"]}, wait)
    out.family("zmqserver_workers", "gauge", "Worker processes of the current generation.")
    for service in doc["services"]:
        for state, count in service["workers"].items():
            labels = {"service": service["name"], "state": state}
            out.sample("zmqserver_workers", labels, count)
    out.family(
        "zmqserver_remote_workers",
        "gauge",
        "Workers registered from elsewhere (remote pools, MDP workers), idle or busy.",
    )
    for service in doc["services"]:
        for state, count in (service.get("remote") or {}).items():
            labels = {"service": service["name"], "state": state}
            out.sample("zmqserver_remote_workers", labels, count)
    out.family("zmqserver_workers_rss_bytes", "gauge", "Resident memory of a service's workers.")
    rss: dict[str, int] = dict.fromkeys(names, 0)
    for worker in doc["workers"]:
        rss[worker["service"]] = rss.get(worker["service"], 0) + (worker["rss"] or 0)
    for name, total in rss.items():
        out.sample("zmqserver_workers_rss_bytes", {"service": name}, total)
    durable = doc.get("durable")
    if durable is not None:
        out.family("zmqserver_durable_jobs", "gauge", "Durable jobs in the store, by state.")
        for state, count in durable["jobs"].items():
            out.sample("zmqserver_durable_jobs", {"state": state}, count)
        out.family(
            "zmqserver_durable_dead_lettered_total",
            "counter",
            "Durable jobs dead-lettered since the master started.",
        )
        out.sample("zmqserver_durable_dead_lettered_total", {}, durable["dead_lettered"])
    ha = doc.get("ha")
    if ha is not None:
        _pair(out, ha)
    master = doc["master"]
    out.family("zmqserver_master_rss_bytes", "gauge", "Resident memory of the master (broker).")
    out.sample("zmqserver_master_rss_bytes", {}, master["rss"] or 0)
    out.family("zmqserver_master_cpu_seconds_total", "counter", "CPU time of the master (broker).")
    out.sample("zmqserver_master_cpu_seconds_total", {}, master["cpu_seconds"])
    out.family("zmqserver_uptime_seconds", "gauge", "Seconds since the master started.")
    out.sample("zmqserver_uptime_seconds", {}, doc["uptime"])
    return "\n".join(out.lines) + "\n"


#: The states of a server of a Binary Star pair (ha/fsm.py's State), as the status shows them.
HA_STATES = ("primary", "backup", "active", "passive")


def _pair(out: _Out, ha: Mapping[str, Any]) -> None:
    """A server of a Binary Star pair (docs/ha.md): one gauge per state, 1 for the current
    one (so that a query needs no label match on a value that changes), and the counters of
    the status line."""
    role = ha["role"]
    out.family(
        "zmqserver_ha_state", "gauge", "Binary Star: 1 for this server's state, 0 for the others."
    )
    for state in HA_STATES:
        out.sample("zmqserver_ha_state", {"role": role, "state": state}, state == ha["state"])
    out.family("zmqserver_ha_peer_alive", "gauge", "Binary Star: the peer heard within 2 beats.")
    out.sample("zmqserver_ha_peer_alive", {}, bool(ha["peer_alive"]))
    if ha.get("peer_heard") is not None:
        out.family(
            "zmqserver_ha_peer_last_heard_seconds",
            "gauge",
            "Binary Star: seconds since the peer last published its state.",
        )
        out.sample("zmqserver_ha_peer_last_heard_seconds", {}, ha["peer_heard"])
    for name, key, help in (
        ("transitions", "transitions", "state changes of this server"),
        ("takeovers", "takeovers", "failovers: passive to active"),
        ("requests_dropped", "dropped", "client requests dropped unanswered while not active"),
        ("pair_errors", "errors", "two actives, two passives, two primaries or two backups"),
    ):
        family = f"zmqserver_ha_{name}_total"
        out.family(family, "counter", f"Binary Star: {help}.")
        out.sample(family, {}, ha[key])
