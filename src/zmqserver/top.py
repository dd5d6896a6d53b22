"""`zmqserver top`: a live terminal view of a running server, from its control endpoint.

Once a second (``--interval``) it asks for the status document (control_client.py, the same
request as ``zmqserver status``) and redraws: per service the workers idle/busy/starting, the
queue and its oldest wait, jobs/s now (from the change in finished jobs since the last look) and
over a minute, job time p50/p99, and the workers, busiest first. Keys: up/down (or tab) select a
service, ``+``/``-`` ask for one worker more or fewer (control ``incr``/``decr``), ``q`` quits.

Rule 1: a client only, like control_client.py; no server code. The drawing is split in two:
:func:`render` turns documents into lines (pure, unit-tested), :func:`run` owns the terminal
(curses, from the standard library: no dependency) and the socket.
"""

from __future__ import annotations

import curses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import control_client as cc

Ask = Callable[[dict[str, Any]], dict[str, Any]]

#: Keys that move the selection, as curses reports them.
_UP = (curses.KEY_UP, ord("k"), curses.KEY_BTAB)
_DOWN = (curses.KEY_DOWN, ord("j"), ord("\t"))


@dataclass
class View:
    """What the screen shows besides the server's state: the selection, the last action's
    result, and the previous document (for jobs/s now)."""

    selected: int = 0
    message: str = "q quit  +/- scale the selected service  up/down/tab select"
    previous: dict[str, Any] | None = None
    previous_at: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)

    def service_names(self, doc: dict[str, Any]) -> list[str]:
        return [s["name"] for s in doc.get("services", [])]

    def selected_name(self, doc: dict[str, Any]) -> str | None:
        names = self.service_names(doc)
        if not names:
            return None
        self.selected = min(self.selected, len(names) - 1)
        return names[self.selected]

    def move(self, doc: dict[str, Any], step: int) -> None:
        count = len(self.service_names(doc))
        if count:
            self.selected = (self.selected + step) % count

    def took(self, doc: dict[str, Any], now: float) -> None:
        """A new document came at ``now``: jobs/s since the last one, per service."""
        if self.previous is not None and now > self.previous_at:
            before = {s["name"]: s.get("jobs", 0) for s in self.previous.get("services", [])}
            elapsed = now - self.previous_at
            self.rates = {
                s["name"]: max(0, s.get("jobs", 0) - before.get(s["name"], 0)) / elapsed
                for s in doc.get("services", [])
            }
        self.previous, self.previous_at = doc, now


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}ms"


def _mb(value: int | None) -> str:
    return "-" if not value else f"{value / 1048576:.1f}M"


def _busiest(worker: dict[str, Any]) -> tuple[int, float, int]:
    """Sort key, busiest first: busy ones by their job's age, then by jobs served."""
    return (worker["state"] != "busy", -(worker.get("job_age") or 0.0), -worker["jobs_served"])


def render(doc: dict[str, Any], view: View, width: int = 120) -> list[str]:
    """The screen's lines for status document ``doc`` (each at most ``width`` characters)."""
    master = doc.get("master", {})
    lines = [
        f"zmqserver top - pid {doc.get('pid')}, up {doc.get('uptime', 0):.0f}s, "
        f"master RSS {_mb(master.get('rss'))}, CPU {master.get('cpu_seconds', 0):.1f}s"
        + (", STOPPING" if doc.get("stopping") else ""),
        "",
        f"  {'SERVICE':<16} {'IDLE':>4} {'BUSY':>4} {'START':>5} {'QUEUE':>5} {'OLDEST':>8} "
        f"{'JOBS/S':>8} {'1m':>8} {'P50':>8} {'P99':>8} {'JOBS':>8}",
    ]
    selected = view.selected_name(doc)
    for s in doc.get("services", []):
        w = s["workers"]
        mark = ">" if s["name"] == selected else " "
        lines.append(
            f"{mark} {s['name']:<16} {w.get('idle', 0):>4} {w.get('busy', 0):>4} "
            f"{w.get('starting', 0):>5} {s['queue']:>5} {_ms(s.get('oldest_wait')):>8} "
            f"{view.rates.get(s['name'], 0.0):>8.1f} {s['rate']['1m']:>8.2f} "
            f"{_ms(s['job_time']['p50']):>8} {_ms(s['job_time']['p99']):>8} "
            f"{s.get('jobs', 0):>8}"
        )
    workers = sorted(doc.get("workers", []), key=_busiest)
    lines += [
        "",
        f"  {'PID':>8} {'SERVICE':<16} {'STATE':<9} {'GEN':>3} {'JOBS':>8} {'JOB AGE':>9} "
        f"{'RSS':>8}",
    ]
    for w in workers:
        lines.append(
            f"  {w['pid']:>8} {w['service']:<16} {w['state']:<9} {w['generation']:>3} "
            f"{w['jobs_served']:>8} {_ms(w.get('job_age')):>9} {_mb(w.get('rss')):>8}"
        )
    return [line[:width] for line in lines]


def act(key: int, doc: dict[str, Any], view: View, ask: Ask) -> bool:
    """Handle one key; False to quit. ``+``/``-`` send incr/decr for the selected service."""
    if key in (ord("q"), ord("Q")):
        return False
    if key in _UP:
        view.move(doc, -1)
    elif key in _DOWN:
        view.move(doc, 1)
    elif key in (ord("+"), ord("="), ord("-")):
        name = view.selected_name(doc)
        if name is None:
            return True
        command = "decr" if key == ord("-") else "incr"
        try:
            reply = ask({"command": command, "service": name})
        except cc.NoServer as exc:
            view.message = str(exc)
            return True
        if reply.get("ok"):
            view.message = f"{command} {name}: {reply.get('workers')} workers"
        else:
            view.message = f"{command} {name}: {reply.get('error')}"
    return True


def run(ask: Ask, interval: float = 1.0) -> int:
    """Show the view until ``q``; ``ask`` sends one control request (raises cc.NoServer)."""
    return int(curses.wrapper(_loop, ask, interval))


def _loop(screen: Any, ask: Ask, interval: float) -> int:
    curses.curs_set(0)
    screen.timeout(100)  # getch waits at most this long: keys stay responsive between looks
    view = View()
    doc: dict[str, Any] = {}
    due = 0.0
    while True:
        now = time.monotonic()
        if now >= due:
            due = now + interval
            try:
                reply = ask({"command": "stats"})
            except cc.NoServer as exc:
                view.message = f"{exc} (retrying; q quits)"
            else:
                if reply.pop("ok", False):
                    doc = reply
                    view.took(doc, now)
            _draw(screen, doc, view)
        key = screen.getch()
        if key == curses.KEY_RESIZE:
            _draw(screen, doc, view)
        elif key != -1:
            if not act(key, doc, view, ask):
                return 0
            _draw(screen, doc, view)


def _draw(screen: Any, doc: dict[str, Any], view: View) -> None:
    height, width = screen.getmaxyx()
    screen.erase()
    lines = render(doc, view, width - 1) if doc else ["waiting for the server..."]
    for row, line in enumerate(lines[: height - 2]):
        screen.addstr(row, 0, line)
    screen.addstr(height - 1, 0, view.message[: width - 1], curses.A_REVERSE)
    screen.refresh()
