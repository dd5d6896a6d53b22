"""Remote worker pools: ``zmqserver worker --connect`` against a broker with remote_workers.

A pool is the broker's supervisor without the broker: the same signals and options, workers
connecting over TCP. These tests run a broker and a pool as separate process trees on 127.0.0.1,
kill and restart the broker under the pool, scale the pool from its workers' status reports,
speak CURVE between them, and finally (as root, where ``ip netns`` works) put them in two network
namespaces joined by a veth pair and cut the link. Every wait is bounded; teardown signals only
the processes a test started, and deletes the namespaces it made, even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from tests.helpers import REPO, children_of, clean_env, cmdline, pid_alive, wait_until

from zmqserver import Client
from zmqserver.errors import DeadlineExpired, ServerError
from zmqserver.security import write_key_pair

from .netns_helpers import ip, veth_pair

pytestmark = [pytest.mark.timeout(60), pytest.mark.compiled_pass]

HEARTBEAT = ("--heartbeat-interval", "0.25")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A process tree started by a test: a pool (or a broker in a namespace), with its log."""

    def __init__(self, workdir: Path, argv: list[str], name: str) -> None:
        self.log_path = workdir / f"{name}.log"
        env = clean_env()
        env |= {"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.started_pids: set[int] = {self.pid}

    def worker_pids(self) -> list[int]:
        pids = children_of(self.pid)
        self.started_pids.update(pids)
        return sorted(pids)

    def wait_workers(self, count: int, timeout: float = 15.0) -> list[int]:
        wait_until(
            lambda: len(self.worker_pids()) == count,
            timeout,
            f"{count} workers (log:\n{self.log()})",
        )
        return self.worker_pids()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process did not exit within {timeout}s (log:\n{self.log()})")

    def stop(self) -> None:
        """TERM, bounded wait, then KILL: only the processes this test started."""
        self.worker_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in self.started_pids:
            if pid != self.pid and pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


def pool_argv(connect: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "zmqserver", "worker", "--connect", connect, *HEARTBEAT, *args]


@pytest.fixture
def start_pool(short_tmp: Path) -> Iterator[Callable[..., Proc]]:
    """Factory: ``start_pool("tcp://127.0.0.1:PORT", "upper=examples.upper:app", ...)``."""
    pools: list[Proc] = []

    def start(connect: str, *args: str, prefix: tuple[str, ...] = ()) -> Proc:
        pool = Proc(short_tmp, [*prefix, *pool_argv(connect, *args)], f"pool{len(pools)}")
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        pool.stop()


def broker_args(port: int, *args: str) -> tuple[str, ...]:
    """A broker whose only local pool is `local`; plain clients go to `upper`, a remote one."""
    return (
        "--backend",
        f"tcp://127.0.0.1:{port}",
        "--remote-workers",
        "--default-service",
        "upper",
        *args,
    )


def test_a_remote_pool_serves_the_brokers_clients(start_server, start_pool):
    port = free_port()
    broker = start_server("local=examples.echo:app", *broker_args(port), workers=1)
    pool = start_pool(
        f"tcp://127.0.0.1:{port}", "upper=tests.apps:pid", "--min-servers", "2",
        "--min-spare-servers", "0",
    )  # fmt: skip
    pids = pool.wait_workers(2)
    served: set[int] = set()

    def both_serve() -> bool:  # LRU: once both have registered, they take turns
        served.add(int(broker.request(b"x")[0]))
        return served == set(pids)

    wait_until(both_serve, 10, "both remote workers to serve")
    with Client(broker.frontend, service="local") as client:
        assert client.request(b"here") == b"here"  # the broker's own pool
    wait_until(lambda: cmdline(pool.pid).startswith("zmq pool"), 10, "the pool's title")
    assert cmdline(pool.pid) == f"zmq pool 127.0.0.1:{port}"
    assert all(cmdline(pid) == f"zmq worker {port} upper" for pid in pids)
    assert "workers connect to tcp://127.0.0.1:" in pool.log()
    # The broker's status shows the remote service and its workers, as a local pool's.
    doc = broker.status()
    services = {service["name"]: service for service in doc["services"]}
    assert services["local"]["remote"] == {"idle": 0, "busy": 0}
    upper = services["upper"]
    assert upper["remote_only"] is True
    assert upper["remote"]["idle"] + upper["remote"]["busy"] == 2
    assert upper["jobs"] >= 2


def test_the_pool_outlives_a_broker_restart_on_the_same_port(start_server, start_pool):
    port = free_port()
    args = broker_args(port)
    broker = start_server("local=examples.echo:app", *args, workers=1)
    pool = start_pool(
        f"tcp://127.0.0.1:{port}", "upper=tests.apps:pid", "--min-servers", "2",
        "--max-servers", "4", "--min-spare-servers", "1",
    )  # fmt: skip
    pids = pool.wait_workers(2)
    assert int(broker.request(b"before")[0]) in pids
    os.kill(broker.pid, signal.SIGKILL)
    broker.wait(10)
    killed_at = time.monotonic()
    # Cut off, the workers reconnect with backoff; they count as spare, so the pool does not
    # grow towards max_servers while its broker is away.
    wait_until(lambda: "no word from the broker" in pool.log(), 10, "the workers to notice")
    assert pool.worker_pids() == pids
    restarted = start_server("local=examples.echo:app", *args, workers=1)
    restarted_at = time.monotonic()
    sock = restarted.socket()
    sock.send(b"after")
    assert sock.poll(20_000), f"no reply (pool log:\n{pool.log()})"
    reply = sock.recv_multipart()
    sock.close()
    recovered = time.monotonic() - restarted_at
    assert int(reply[0]) in pool.worker_pids()
    served: set[int] = set()

    def both_serve() -> bool:  # LRU: once both are registered, they take turns
        served.add(int(restarted.request(b"x")[0]))
        return served >= set(pool.worker_pids())

    wait_until(both_serve, 10, "the whole pool to re-register")
    assert len(pool.worker_pids()) == 2
    assert pool.proc.poll() is None
    print(
        f"broker restart: down {restarted_at - killed_at:.2f}s, first remote reply "
        f"{recovered:.2f}s after the restart"
    )


def test_term_on_the_pool_finishes_running_jobs_and_leaves_no_process(
    start_server, start_pool, short_tmp
):
    port = free_port()
    broker = start_server("local=examples.echo:app", *broker_args(port), workers=1)
    pool = start_pool(
        f"tcp://127.0.0.1:{port}", "upper=tests.apps:mark_then_sleep", "--min-servers", "2",
        "--min-spare-servers", "0",
    )  # fmt: skip
    pids = pool.wait_workers(2)
    mark = short_tmp / "running"
    sock = broker.socket()
    sock.send(b"1.0 %s" % str(mark).encode())
    wait_until(mark.exists, 10, "the job to start")
    pool.signal(signal.SIGTERM)
    assert sock.poll(10_000)
    reply = sock.recv_multipart()
    sock.close()
    assert reply[0].startswith(b"1.0 ")
    assert int(reply[1]) in pids
    assert pool.wait(20) == 0
    wait_until(lambda: not any(pid_alive(pid) for pid in pids), 10, "the workers to exit")
    assert "graceful stop: 2 worker(s)" in pool.log()


def test_hup_on_the_pool_replaces_its_workers_once_the_new_ones_registered(
    start_server, start_pool, short_tmp
):
    port = free_port()
    broker = start_server("local=examples.echo:app", *broker_args(port), workers=1)
    config = short_tmp / "pool.toml"
    config.write_text(
        'min_servers = 2\nmin_spare_servers = 0\n[services.upper]\napp = "tests.apps:pid"\n'
    )
    pool = start_pool(f"tcp://127.0.0.1:{port}", "--config", str(config))
    old = set(pool.wait_workers(2))
    assert int(broker.request(b"x")[0]) in old
    config.write_text(
        'min_servers = 3\nmin_spare_servers = 0\n[services.upper]\napp = "tests.apps:pid"\n'
    )
    pool.signal(signal.SIGHUP)
    failures: list[bytes] = []

    def replaced() -> bool:
        (reply,) = broker.request(b"x")  # jobs keep flowing during the reload
        if not reply.isdigit():
            failures.append(reply)
        pids = set(pool.worker_pids())
        return len(pids) == 3 and not pids & old

    wait_until(replaced, 20, f"a new generation of 3 (log:\n{pool.log()})")
    assert failures == []
    assert "HUP: min_servers is now 3 (was 2)" in pool.log()
    assert "ready; retiring 2 old worker(s)" in pool.log()


def test_a_pool_whose_workers_die_before_reporting_stops_with_status_3(start_pool):
    # No broker needed: a worker reports on the status pipe once its app is loaded, before it
    # reaches the broker; these never get that far.
    pool = start_pool(
        f"tcp://127.0.0.1:{free_port()}", "upper=tests.segv_app:app", "--min-servers", "2",
        "--min-spare-servers", "0",
    )  # fmt: skip
    assert pool.wait(20) == 3, pool.log()
    assert (
        "service 'upper' cannot start the app 'tests.segv_app:app': 5 workers in a row died "
        "before they registered (all killed by SIGSEGV); stopping the server"
    ) in pool.log()


def test_the_pool_scales_on_its_workers_status_reports(start_server, start_pool, short_tmp):
    port = free_port()
    broker = start_server("local=examples.echo:app", *broker_args(port), workers=1)
    pool = start_pool(
        f"tcp://127.0.0.1:{port}", "upper=tests.apps:mark_then_sleep", "--min-servers", "1",
        "--max-servers", "3", "--min-spare-servers", "1", "--max-spare-servers", "1",
        "--check-for-waiting", "0.3", "--min-child-ttl", "0.3",
    )  # fmt: skip
    pool.wait_workers(1)
    mark = short_tmp / "running"
    sock = broker.socket()
    started = time.monotonic()
    sock.send(b"1.5 %s" % str(mark).encode())
    # The only worker is busy: no spare left, so the pool starts another one.
    pool.wait_workers(2)
    grown = time.monotonic() - started
    assert mark.exists()
    assert sock.poll(10_000)
    sock.recv_multipart()
    sock.close()
    idle_at = time.monotonic()
    pool.wait_workers(1)  # two idle, max_spare_servers 1: the surplus is retired
    print(f"remote pool: 1 -> 2 workers {grown:.2f}s after a job started; back to 1 in "
          f"{time.monotonic() - idle_at:.2f}s")  # fmt: skip
    assert "more than 1 idle workers" in pool.log()


def test_a_curve_pool_registers_with_its_key(start_server, start_pool, short_tmp):
    keys = short_tmp / "keys"
    _, backend_secret, _ = write_key_pair(keys, "backend")
    pool_public, pool_secret, _ = write_key_pair(keys, "pool")
    allowed = keys / "workers"
    allowed.mkdir()
    (allowed / "pool.key").write_bytes(pool_public.read_bytes())
    port = free_port()
    broker = start_server(
        "local=examples.echo:app", *broker_args(port),
        "--curve-backend-secret-key-file", str(backend_secret),
        "--curve-worker-keys-dir", str(allowed), workers=1,
    )  # fmt: skip
    pool = start_pool(
        f"tcp://127.0.0.1:{port}", "upper=examples.upper:app", "--min-servers", "1",
        "--min-spare-servers", "0", "--server-key", str(keys / "backend.key"),
        "--key-file", str(pool_secret),
    )  # fmt: skip
    pool.wait_workers(1)
    assert broker.request(b"secret") == [b"SECRET"]
    assert "with CURVE" in pool.log()


def test_a_pool_without_connect_or_with_a_bad_key_says_so(short_tmp):
    env = clean_env(keep_pure=False)
    env["PYTHONPATH"] = str(REPO)

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "zmqserver", "worker", *args],
            cwd=REPO, env=env, capture_output=True, timeout=20, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    missing = run("examples.upper:app")
    assert missing.returncode == 2
    assert b"connect: give the broker's backend endpoint" in missing.stderr
    bad_key = run("--connect", "tcp://127.0.0.1:1", "--server-key", str(short_tmp / "nope.key"))
    assert bad_key.returncode == 2
    assert b"server_key:" in bad_key.stderr
    broker_flag = run("--connect", "tcp://127.0.0.1:1", "--job-timeout", "3")
    assert broker_flag.returncode == 2


# -- a real network partition: two namespaces, a veth pair, the link cut and restored ------------

BROKER_IP, POOL_IP = "192.0.2.1", "192.0.2.2"  # TEST-NET-1 (RFC 5737), only inside our namespaces


@pytest.fixture
def netns() -> Iterator[tuple[str, str, str]]:
    """Two namespaces joined by a veth pair: (broker ns, pool ns, the pool side's interface)."""
    with veth_pair("zs", BROKER_IP, POOL_IP) as pair:
        yield pair.left, pair.right, pair.right_if


def _pids(pool: Proc) -> set[bytes]:
    return {str(pid).encode() for pid in pool.worker_pids()}


def _in_ns(ns: str) -> tuple[str, ...]:
    return ("ip", "netns", "exec", ns)  # it execs: the pid we get is the server's own


def test_a_cut_link_costs_jobs_in_flight_an_error_and_the_pool_comes_back(
    netns: tuple[str, str, str], start_pool, short_tmp: Path, ctx: zmq.Context[zmq.Socket[bytes]]
):
    broker_ns, pool_ns, pool_if = netns
    front = f"ipc://{short_tmp}/front"  # a path: reachable from every network namespace
    broker = Proc(
        short_tmp,
        [
            *_in_ns(broker_ns), sys.executable, "-m", "zmqserver", "serve",
            "local=examples.echo:app", "--frontend", front, "--backend",
            f"tcp://{BROKER_IP}:6661", "--remote-workers", "--default-service", "upper",
            "--min-servers", "1", "--min-spare-servers", "0", *HEARTBEAT,
        ],
        "broker",
    )  # fmt: skip
    try:
        # Credit 1: the second job in flight must run on the second worker, not wait inside the
        # first behind a 1 s job. With credit, a quick first job opens the prefetch gate, and if
        # the second worker's READY is still on its way (wait_workers counts processes, not
        # registrations) the second job queues in the first worker, and its reply beats the cut.
        pool = start_pool(
            f"tcp://{BROKER_IP}:6661", "upper=tests.apps:mark_then_sleep", "--min-servers", "2",
            "--min-spare-servers", "0", "--worker-credit", "1", prefix=_in_ns(pool_ns),
        )  # fmt: skip
        pool.wait_workers(2)
        marks = [short_tmp / f"job{i}" for i in range(4)]
        # One job of over a heartbeat on each worker first: the broker sees each heartbeat while
        # busy, which makes silence mean death for it (liveness.py). A worker not yet seen to
        # (an RFC worker, which sends nothing while busy) would keep its job until the deadline.
        with Client(front, timeout=10, retries=1, context=ctx) as client:
            warm = [b"1.2 %s-%d" % (str(marks[0]).encode(), i) for i in range(2)]
            replies = client.map(warm, window=2)
            assert {reply[1] for reply in replies} == set(_pids(pool))
        # Two jobs in flight when the link goes down; the client library's deadline is 8 s.
        outcomes: list[tuple[str, float]] = []

        def in_flight(mark: Path) -> None:
            sent = time.monotonic()
            with Client(front, timeout=8, retries=1, context=ctx) as client:
                try:
                    client.request(b"1.0 %s" % str(mark).encode())
                    outcomes.append(("reply", time.monotonic() - sent))
                except ServerError as exc:
                    outcomes.append((type(exc).__name__, time.monotonic() - sent))

        threads = [threading.Thread(target=in_flight, args=(mark,)) for mark in marks[1:3]]
        for thread in threads:
            thread.start()
        wait_until(lambda: marks[1].exists() and marks[2].exists(), 10, "two jobs running")
        assert ip("-n", pool_ns, "link", "set", pool_if, "down").returncode == 0
        cut_at = time.monotonic()
        for thread in threads:
            thread.join(15)
        assert len(outcomes) == 2
        # WorkerLost is the broker's answer, so it came before the client's 8 s deadline (the
        # client giving up would be RequestTimeout, which the threads do not catch).
        assert all(kind == "WorkerLost" for kind, _ in outcomes), outcomes
        # While the link is down, a job waits for a worker and expires at its deadline.
        with Client(front, timeout=1.0, retries=1, context=ctx) as client:
            sent = time.monotonic()
            # The broker's expired answer, not the client's RequestTimeout: it came at the
            # header's deadline (0.9 s), before the client's own 1 s ran out.
            with pytest.raises(DeadlineExpired):
                client.request(b"0 %s" % str(marks[3]).encode())
            print(f"queued job expired after {time.monotonic() - sent:.2f}s")
        assert ip("-n", pool_ns, "link", "set", pool_if, "up").returncode == 0
        restored_at = time.monotonic()
        down_for = restored_at - cut_at
        with Client(front, timeout=20, retries=1, context=ctx) as client:
            reply = client.request(b"0 %s" % str(marks[0]).encode())
        recovered = time.monotonic() - restored_at
        assert reply[1] in _pids(pool)
        assert pool.proc.poll() is None
        print(
            f"partition: in-flight jobs answered {', '.join(f'{t:.2f}s' for _, t in outcomes)} "
            f"after they were sent; link down {down_for:.2f}s; jobs flow again "
            f"{recovered:.2f}s after it came back"
        )
    finally:
        broker.stop()


@pytest.mark.parametrize("curve", [True, False], ids=["unknown-key", "no-curve"])
def test_a_refused_pool_says_so_and_backs_off_without_crashing(
    start_server, start_pool, short_tmp, curve
):
    keys = short_tmp / "keys"
    _, backend_secret, _ = write_key_pair(keys, "backend")
    _, pool_secret, _ = write_key_pair(keys, "pool")  # never given to the broker
    allowed = keys / "workers"
    allowed.mkdir()
    port = free_port()
    start_server(
        "local=examples.echo:app", *broker_args(port),
        "--curve-backend-secret-key-file", str(backend_secret),
        "--curve-worker-keys-dir", str(allowed), workers=1,
    )  # fmt: skip
    key_args = ("--server-key", str(keys / "backend.key"), "--key-file", str(pool_secret))
    pool = start_pool(
        f"tcp://127.0.0.1:{port}", "upper=examples.upper:app", "--min-servers", "2",
        "--min-spare-servers", "0", *(key_args if curve else ()),
    )  # fmt: skip
    first = set(pool.wait_workers(2))
    hint = "did not answer the handshake: check server_key / key_file / backend_allow"
    wait_until(lambda: pool.log().count(hint) >= 4, 20, "the hint from each worker, twice")
    assert set(pool.worker_pids()) == first  # no worker died and was replaced
    assert "Traceback" not in pool.log()
    assert "zmq.error.Again" not in pool.log()
