"""`zmqserver top`'s screen and keys, without a terminal: :func:`render` and :func:`act` on
status documents (the terminal itself: tests/integration/test_top.py, in tmux)."""

from __future__ import annotations

import curses
from typing import Any

from zmqserver import control_client as cc
from zmqserver.top import View, act, render


def _service(name: str, idle: int, busy: int, jobs: int) -> dict[str, Any]:
    return {
        "name": name,
        "workers": {"idle": idle, "busy": busy, "starting": 0},
        "queue": 3,
        "oldest_wait": 0.25,
        "rate": {"1m": 1.5, "5m": 0.3, "15m": 0.1},
        "jobs": jobs,
        "job_time": {"p50": 0.001, "p99": 0.0125},
    }


def _worker(pid: int, state: str, jobs: int, age: float | None) -> dict[str, Any]:
    return {
        "pid": pid, "service": "a", "state": state, "generation": 0, "jobs_served": jobs,
        "job_age": age, "rss": 20 * 1048576,
    }  # fmt: skip


def _doc(jobs: int = 10) -> dict[str, Any]:
    return {
        "pid": 42,
        "uptime": 12.3,
        "stopping": False,
        "master": {"rss": 30 * 1048576, "cpu_seconds": 0.5},
        "services": [_service("a", 1, 1, jobs), _service("b", 2, 0, 0)],
        "workers": [
            _worker(1, "idle", 5, None),
            _worker(2, "busy", 1, 0.5),
            _worker(3, "idle", 9, None),
            _worker(4, "busy", 2, 2.0),
        ],
    }


def test_render_marks_the_selected_service_and_sorts_workers_busiest_first():
    view = View()
    lines = render(_doc(), view)
    assert lines[0].startswith("zmqserver top - pid 42, up 12s, master RSS 30.0M")
    rows = [line for line in lines if line[2:3] in "ab" and line[3:4] == " "]
    assert rows[0].startswith("> a ")
    assert rows[1].startswith("  b ")
    assert "250.0ms" in rows[0]
    assert "12.5ms" in rows[0]
    pids = [int(line.split()[0]) for line in lines[lines.index(rows[1]) + 3 :]]
    assert pids == [4, 2, 3, 1]  # busy by job age, then idle by jobs served
    assert all(len(line) <= 120 for line in lines)
    assert all(len(line) <= 40 for line in render(_doc(), view, width=40))


def test_jobs_per_second_from_two_looks():
    view = View()
    view.took(_doc(jobs=10), 100.0)
    view.took(_doc(jobs=30), 102.0)
    assert view.rates == {"a": 10.0, "b": 0.0}
    assert "    10.0" in render(_doc(30), view)[3]


def test_keys_select_scale_and_quit():
    asked: list[dict[str, Any]] = []

    def ask(request: dict[str, Any]) -> dict[str, Any]:
        asked.append(request)
        return {"ok": True, "service": request["service"], "workers": 3}

    view, doc = View(), _doc()
    assert act(curses.KEY_DOWN, doc, view, ask)
    assert view.selected == 1
    assert act(ord("\t"), doc, view, ask)
    assert view.selected == 0
    assert act(curses.KEY_UP, doc, view, ask)
    assert view.selected == 1
    assert act(ord("+"), doc, view, ask)
    assert act(ord("-"), doc, view, ask)
    assert asked == [{"command": "incr", "service": "b"}, {"command": "decr", "service": "b"}]
    assert view.message == "decr b: 3 workers"
    assert not act(ord("q"), doc, view, ask)


def test_a_refused_or_unanswered_action_is_shown():
    view, doc = View(), _doc()
    act(ord("+"), doc, view, lambda request: {"ok": False, "error": "no such service"})
    assert view.message == "incr a: no such service"

    def gone(request: dict[str, Any]) -> dict[str, Any]:
        raise cc.NoServer("no answer from the control endpoint ipc:///x in 5s")

    act(ord("+"), doc, view, gone)
    assert view.message.startswith("no answer")
    assert act(ord("+"), {}, View(), gone)  # nothing to select: nothing asked
