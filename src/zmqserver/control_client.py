"""`zmqserver status` and `zmqserver control`: find a running server's control endpoint, ask,
print (supervisor/control.py is the other end; docs/operations.md the protocol).

Rule 1: a client only; it loads no server code. Which server: ``--control-endpoint`` as given,
else the discovery file next to ``--pid-file`` (``PIDFILE.control``), else the one in the
per-user runtime directory keyed by the frontend endpoint (from ``--config``, ``--port`` or
``--frontend``; default port 6660). A discovery file whose pid is gone, or no file, is "no
server running": exit status 1 with a sentence saying where it looked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import zmq

from ._discovery import runtime_file

#: How long to wait for the master's answer: it answers within one turn of its loop.
TIMEOUT = 5.0


class NoServer(Exception):
    """No server answers where we looked; the message says where."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_endpoint(
    *, endpoint: str | None, pid_file: str | None, frontend: str
) -> tuple[str, int | None]:
    """The control endpoint to ask, and the server's pid if a discovery file named it."""
    if endpoint is not None:
        return endpoint, None
    path = Path(pid_file + ".control") if pid_file is not None else runtime_file(frontend)
    try:
        found = json.loads(path.read_text())
        pid, where = int(found["pid"]), str(found["endpoint"])
    except FileNotFoundError:
        raise NoServer(f"no server running (no control file {path})") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NoServer(f"cannot read the control file {path}: {exc}") from None
    if not _pid_alive(pid):
        raise NoServer(f"no server running (the control file {path} names pid {pid}, gone)")
    return where, pid


def ask(
    endpoint: str,
    request: dict[str, Any],
    *,
    timeout: float = TIMEOUT,
    curve: tuple[bytes, bytes, bytes] | None = None,
) -> dict[str, Any]:
    """Send one request to ``endpoint``; the decoded reply. ``curve``: (server public key,
    our public key, our secret key), Z85, for a tcp:// endpoint."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve
        sock.connect(endpoint)
        sock.send_multipart([b"", json.dumps(request).encode()])
        if not sock.poll(int(timeout * 1000)):
            raise NoServer(f"no answer from the control endpoint {endpoint} in {timeout:.0f}s")
        reply: dict[str, Any] = json.loads(sock.recv_multipart()[-1])
        sock.close(0)
        return reply
    finally:
        ctx.term()


def format_status(doc: dict[str, Any]) -> str:
    """The status document as text, for a terminal."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f}ms"

    def mb(value: int | None) -> str:
        return "-" if not value else f"{value / 1048576:.1f}M"

    lines = [
        f"zmqserver pid {doc['pid']}, up {doc['uptime']:.0f}s, "
        f"master RSS {mb(doc['master']['rss'])}, "
        f"CPU {doc['master']['cpu_seconds']:.1f}s" + (", STOPPING" if doc["stopping"] else ""),
        *_pair_line(doc.get("ha")),
        "",
        f"{'SERVICE':<16} {'IDLE':>4} {'BUSY':>4} {'START':>5} {'REMOTE':>6} {'QUEUE':>5} "
        f"{'OLDEST':>8} {'JOBS/S 1m':>9} {'5m':>7} {'15m':>7} {'P50':>8} {'P99':>8}  OUTCOMES",
    ]
    for s in doc["services"]:
        w, r = s["workers"], s["rate"]
        outcomes = ", ".join(f"{k} {v}" for k, v in s["outcomes"].items()) or "-"
        remote = s.get("remote") or {}
        away = f"{remote.get('idle', 0) + remote.get('busy', 0)}"
        lines.append(
            f"{s['name']:<16} {w['idle']:>4} {w['busy']:>4} {w['starting']:>5} {away:>6} "
            f"{s['queue']:>5} "
            f"{ms(s['oldest_wait']):>8} {r['1m']:>9.2f} {r['5m']:>7.2f} {r['15m']:>7.2f} "
            f"{ms(s['job_time']['p50']):>8} {ms(s['job_time']['p99']):>8}  {outcomes}"
        )
    durable = doc.get("durable")
    if durable is not None:
        jobs = ", ".join(f"{n} {state}" for state, n in durable["jobs"].items())
        lines += ["", f"DURABLE JOBS {jobs} (store {durable['store']})"]
    header = f"{'PID':>8} {'SERVICE':<16} {'STATE':<9} {'GEN':>3} {'JOBS':>7} {'JOB AGE':>9}"
    lines += ["", f"{header} {'RSS':>8}"]
    for w in doc["workers"]:
        lines.append(
            f"{w['pid']:>8} {w['service']:<16} {w['state']:<9} {w['generation']:>3} "
            f"{w['jobs_served']:>7} {ms(w['job_age']):>9} {mb(w['rss']):>8}"
        )
    return "\n".join(lines)


def _pair_line(ha: dict[str, Any] | None) -> list[str]:
    """One line for a server of a Binary Star pair (docs/ha.md); none for a lone server."""
    if ha is None:
        return []
    peer = ha["peer"] or "not heard from"
    alive = "" if ha["peer_alive"] else " (silent)"
    return [
        f"Binary Star {ha['role']}: {ha['state'].upper()} for {ha['since']:.0f}s, peer {peer}"
        f"{alive}; {ha['takeovers']} takeovers, {ha['dropped']} requests dropped while not "
        f"active, {ha['errors']} pair errors"
    ]
