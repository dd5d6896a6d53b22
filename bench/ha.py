"""Binary Star failover under load: kill -9 the active server, time until clients are answered.

    .venv/bin/python -m bench.ha [--kills 20] [--clients 8] [--heartbeat 1.0] [--timeout 2.5]
                                 [--remote-pool]

Two servers (echo app, one worker each) on ipc:// endpoints in a temp dir form a pair
(docs/ha.md). ``--clients`` threads each run a :class:`zmqserver.Client` given both endpoints,
sending requests back to back. ``--kills`` times: SIGKILL the active server's master, measure the
time from the kill to the next reply any client receives, restart the killed server (it comes
back passive), wait for it to say so. Printed: failover median and max, requests answered,
requests that failed (RequestTimeout after every retry: should be 0), and requests that took
longer than one client timeout (each was resent at least once: the retries failover cost).

With ``--remote-pool`` the jobs' service has no local worker on either server: a remote pool
(``zmqserver worker --connect A --connect B``, two workers, never killed) registered with both
brokers runs every job, so each failover also shows the pool serving the new active server.

Failover is about one client timeout (the attempt at the dead server) when the timeout exceeds
two heartbeats; otherwise the backup drops the first attempts that reach it until the primary
has been silent for two heartbeats.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

from bench.procs import REPO
from zmqserver import Client
from zmqserver.errors import RequestTimeout


class Server:
    def __init__(self, root: Path, role: str, heartbeat: float, remote: bool = False) -> None:
        other = "backup" if role == "primary" else "primary"
        self.role, self.root = role, root
        self.front = f"ipc://{root}/{role}-front"
        # With a remote pool: local workers only for a service no client asks for.
        app = ["local=examples.echo:app", "--default-service", "remote"] if remote else []
        argv = [
            sys.executable, "-m", "zmqserver", "serve", *app, "--frontend", self.front,
            "--backend", f"ipc://{root}/{role}-back", "--min-servers", "1",
            "--ha-role", role, "--ha-bind", f"ipc://{root}/ha-{role}",
            "--ha-peer", f"ipc://{root}/ha-{other}", "--ha-heartbeat", str(heartbeat),
        ]  # fmt: skip
        self.log_path = root / f"{role}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_logged(self, text: str, since: int, timeout: float = 30.0) -> None:
        give_up = time.monotonic() + timeout
        while text not in self.log()[since:]:
            if time.monotonic() > give_up:
                raise SystemExit(f"{self.role}: no {text!r} within {timeout}s:\n{self.log()}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its session: master and workers
        self.proc.wait(10)


class Load:
    """Client threads sending back to back; the time of the latest reply."""

    def __init__(self, endpoints: list[str], clients: int, timeout: float) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answered = self.failed = self.slow = 0
        self.last_reply = 0.0
        self.timeout = timeout
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.threads = [
            threading.Thread(target=self.run, args=(endpoints,), daemon=True)
            for _ in range(clients)
        ]
        for thread in self.threads:
            thread.start()

    def run(self, endpoints: list[str]) -> None:
        with Client(endpoints, timeout=self.timeout, retries=8, context=self.ctx) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    client.request(b"x")
                except RequestTimeout:
                    with self.lock:
                        self.failed += 1
                    continue
                now = time.monotonic()
                with self.lock:
                    self.answered += 1
                    self.slow += now - started > self.timeout
                    self.last_reply = now

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        self.ctx.destroy(linger=0)


def start_pool(root: Path, heartbeat: float) -> subprocess.Popen[bytes]:
    """A remote pool of two echo workers registered with both servers of the pair."""
    argv = [sys.executable, "-m", "zmqserver", "worker", "remote=examples.echo:app"]
    for role in ("primary", "backup"):
        argv += ["--connect", f"ipc://{root}/{role}-back"]
    argv += ["--min-servers", "2", "--max-servers", "2", "--min-spare-servers", "0"]
    argv += ["--heartbeat-interval", str(heartbeat)]
    with open(root / "pool.log", "ab") as log:
        return subprocess.Popen(
            argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=2.5, help="each client's timeout")
    parser.add_argument(
        "--remote-pool", action="store_true", help="jobs run by a remote pool of both servers"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="zs-ha-"))
    remote = args.remote_pool
    servers = {role: Server(root, role, args.heartbeat, remote) for role in ("primary", "backup")}
    pool = start_pool(root, args.heartbeat) if remote else None
    load = None
    try:
        servers["primary"].wait_logged("-> active", 0)
        servers["backup"].wait_logged("-> passive", 0)
        load = Load([s.front for s in servers.values()], args.clients, args.timeout)
        active, times = "primary", []
        for kill in range(args.kills):
            time.sleep(2 * args.heartbeat)  # load on the active server; the passive one hears it
            passive = "backup" if active == "primary" else "primary"
            since = len(servers[passive].log())
            servers[active].kill()
            killed_at = time.monotonic()
            servers[passive].wait_logged("-> active", since)
            while load.last_reply <= killed_at:
                time.sleep(0.005)
            times.append(load.last_reply - killed_at)
            print(f"kill {kill + 1}: {active} killed, answered by {passive} after {times[-1]:.2f}s")
            since = len(servers[active].log())
            servers[active] = Server(root, active, args.heartbeat, remote)
            servers[active].wait_logged("-> passive", since)
            active = passive
        load.close()
        print(
            f"failover over {len(times)} kills: median {statistics.median(times):.2f}s, "
            f"max {max(times):.2f}s (heartbeat {args.heartbeat}s, client timeout "
            f"{args.timeout}s, {args.clients} clients"
            f"{', jobs run by a remote pool of both servers' if remote else ''})"
        )
        print(
            f"requests: {load.answered} answered, {load.failed} failed, "
            f"{load.slow} took over one timeout (resent)"
        )
    finally:
        if load is not None and not load.stop.is_set():
            load.close()
        for server in servers.values():
            server.kill()
        if pool is not None:
            os.killpg(pool.pid, signal.SIGTERM)  # its session: the pool's master and workers
            try:
                pool.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(pool.pid, signal.SIGKILL)
                pool.wait(5)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
