"""Process management with real servers and real signals (issue 3).

Spare-server autoscaling, TTIN/TTOU, HUP reloads under load, graceful TERM, worker recycling
(max_requests, max_worker_memory), daemon mode with a pid file, privilege drop, USR1, hooks, and
config errors. Every wait is bounded (wait_until, poll with a timeout); the only fixed delays are
the jobs' own run times, which are what the tests are about.
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq
from tests.helpers import REPO, children_of, clean_env, cmdline, pid_alive, wait_until

pytestmark = pytest.mark.timeout(60)

#: Fast scaling timers for tests (the defaults are PreFork's 10 s / 30 s / 10 s).
FAST_SCALING = ("--check-for-waiting", "0.3", "--min-child-ttl", "0.3")


def _send_all(server, payloads: list[bytes]) -> list[zmq.Socket[bytes]]:
    socks = []
    for payload in payloads:
        sock = server.socket()
        sock.send(payload)
        socks.append(sock)
    return socks


def _recv_all(socks: list[zmq.Socket[bytes]], timeout: float = 20.0) -> list[list[bytes]]:
    replies = []
    deadline = time.monotonic() + timeout
    for sock in socks:
        left = max(0.0, deadline - time.monotonic())
        assert sock.poll(left * 1000), "no reply in time"
        replies.append(sock.recv_multipart())
        sock.close()
    return replies


def _worker_titles(server) -> list[str]:
    return [cmdline(pid) for pid in server.worker_pids()]


# -- TTIN / TTOU and autoscaling ------------------------------------------------------------------


def test_ttin_ttou_change_the_worker_count_and_bound_autoscaling(start_server, short_tmp):
    server = start_server(
        "tests.apps:mark_then_sleep",
        "--max-servers",
        "4",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "2",
        "--queue-wait-threshold",
        "0",
        workers=2,
        autoscale=True,
    )
    server.wait_workers(2)
    for count in (3, 4):
        server.signal(signal.SIGTTIN)
        server.wait_workers(count)
    wait_until(
        lambda: all(t.startswith("zmq worker") for t in _worker_titles(server)), 10, "titles"
    )
    server.signal(signal.SIGTTIN)  # at max_servers: no effect
    # A signal has no answer but its log line: the one way to know it was handled.
    wait_until(lambda: "TTIN: at least 4" in server.log(), 10, "the third TTIN")
    assert len(server.worker_pids()) == 4
    # The same path through the control endpoint answers for itself: capped at 4.
    assert server.control("incr")["workers"] == 4
    assert server.status()["services"][0]["bounds"] == {"min": 4, "max": 4}
    for count in (3, 2, 1):
        server.signal(signal.SIGTTOU)
        server.wait_workers(count)
    (only,) = server.worker_pids()
    # With the ceiling at one worker, a busy worker leaves no spare, yet none is started: the
    # fork would have happened when the job was dispatched, long before its reply.
    reply = server.request(b"0.3 %s" % str(short_tmp / "job").encode())
    assert reply[1] == str(only).encode()
    assert server.worker_pids() == [only]


def test_spare_servers_grow_under_load_and_shrink_back_when_idle(start_server, short_tmp):
    server = start_server(
        "tests.apps:mark_then_sleep",
        "--max-servers",
        "4",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "1",
        "--queue-wait-threshold",
        "0",
        *FAST_SCALING,
        workers=1,
        autoscale=True,
    )
    server.wait_workers(1)
    started = time.monotonic()
    socks = _send_all(server, [b"1.5 %s" % str(short_tmp / f"j{i}").encode() for i in range(3)])
    # One busy worker leaves no spare: one more starts, and so on as each takes a job.
    server.wait_workers(4, timeout=15)
    grown = time.monotonic() - started
    replies = _recv_all(socks)
    assert len({r[1] for r in replies}) == 3
    idle_at = time.monotonic()
    server.wait_workers(1, timeout=15)
    shrunk = time.monotonic() - idle_at
    print(f"autoscale: 1 -> 4 workers in {grown:.2f}s, back to 1 in {shrunk:.2f}s after idle")

    # Retired as surplus, not lost: every job ended ok, and the one left is idle and alone.
    def settled() -> bool:
        (service,) = server.status()["services"]
        return (service["workers"]["idle"], service["workers"]["busy"]) == (1, 0)

    wait_until(settled, 10, "one idle worker in the status")
    assert server.status()["services"][0]["outcomes"] == {"ok": 3}


def test_queue_wait_starts_a_worker_per_waiting_job(start_server, short_tmp):
    server = start_server(
        "tests.apps:mark_then_sleep",
        "--max-servers",
        "5",
        "--min-spare-servers",
        "0",
        "--max-spare-servers",
        "0",
        "--queue-wait-threshold",
        "0.3",
        *FAST_SCALING,
        workers=1,
        autoscale=True,
    )
    server.wait_workers(1)
    server.wait_ready()
    started = time.monotonic()
    socks = _send_all(server, [b"1.0 %s" % str(short_tmp / f"q{i}").encode() for i in range(5)])
    server.wait_workers(5, timeout=15)
    grown = time.monotonic() - started
    replies = _recv_all(socks)
    total = time.monotonic() - started
    assert all(not r[0].startswith(b"ERROR") for r in replies)
    print(f"queue wait: 1 -> 5 workers in {grown:.2f}s; 5 one-second jobs done in {total:.2f}s")
    # In parallel: the started workers took queued jobs (one worker alone would run all five).
    assert len({r[1] for r in replies}) >= 2
    assert "jobs queued, the oldest for" in server.log()
    server.wait_workers(1, timeout=15)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_an_autoscaling_master_sleeps_when_nothing_changes(start_server):
    # Every scaling decision comes with a deadline; none may be "now" over and over.
    server = start_server(None, "--max-servers", "4", *FAST_SCALING, workers=2, autoscale=True)
    server.wait_workers(2)
    server.wait_ready()
    before = _cpu_seconds(server.pid)
    time.sleep(1.0)  # measuring an interval, not waiting for a condition
    used = _cpu_seconds(server.pid) - before
    assert used < 0.1, f"the idle master used {used:.2f}s of CPU in 1s"


# -- HUP ------------------------------------------------------------------------------------------


def test_hup_under_load_loses_no_job_and_replaces_every_worker(start_server):
    server = start_server("tests.apps:sleep_then_pid", workers=3)
    old = set(server.wait_workers(3))
    server.wait_ready()
    stop = threading.Event()
    replies: list[list[bytes]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        sock = server.socket()
        try:
            while not stop.is_set():
                sock.send(b"0.02")
                if not sock.poll(10_000):
                    errors.append("no reply within 10 s")
                    return
                reply = sock.recv_multipart()
                with lock:
                    replies.append(reply)
                if reply[0] != b"0.02":
                    errors.append(repr(reply))
        finally:
            sock.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(replies) > 20, 10, "load before the HUP")
        server.signal(signal.SIGHUP)
        low_water = [3]

        def replaced() -> bool:
            pids = set(server.worker_pids())
            low_water[0] = min(low_water[0], len(pids))
            return len(pids) == 3 and not pids & old

        wait_until(replaced, 20, "an all-new generation")
        before = len(replies)
        wait_until(lambda: len(replies) > before + 20, 10, "load after the HUP")
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
    assert errors == []
    assert low_water[0] >= 3  # processes never fell below the old count
    new = {int(r[1]) for r in replies[-10:]}
    assert not new & old
    print(f"HUP under load: {len(replies)} jobs, none failed")


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_hup_rereads_the_config_file_and_reimports_the_app(start_server, short_tmp):
    config = short_tmp / "zmqserver.toml"
    _write(
        config,
        'app = "examples.upper:app"\nmin_servers = 2\nmin_spare_servers = 0\n'
        "queue_wait_threshold = 0\n",
    )
    server = start_server(None, "--config", str(config), workers=None, autoscale=True)
    old = set(server.wait_workers(2))
    assert server.request(b"abc") == [b"ABC"]
    _write(
        config,
        'app = "tests.apps:frames"\nmin_servers = 3\nmin_spare_servers = 0\n'
        "queue_wait_threshold = 0\nheartbeat_liveness = 9\n",
    )
    server.signal(signal.SIGHUP)
    wait_until(
        lambda: len(server.worker_pids()) == 3 and not set(server.worker_pids()) & old,
        20,
        "three new workers",
    )
    assert server.request(b"abc") == [b"bytes", b"abc"]
    log = server.log()
    assert "HUP: min_servers is now 3 (was 2)" in log
    assert "heartbeat_liveness changed to 9; it takes effect after a restart" in log


def test_hup_to_an_app_that_cannot_load_keeps_the_old_workers(start_server, short_tmp):
    config = short_tmp / "zmqserver.toml"
    _write(config, 'app = "examples.upper:app"\nmin_servers = 2\n')
    server = start_server(None, "--config", str(config), workers=None)
    old = server.wait_workers(2)
    server.wait_ready()
    _write(config, 'app = "tests.broken_app:app"\nmin_servers = 2\n')
    server.signal(signal.SIGHUP)
    wait_until(lambda: "keep serving" in server.log(), 20, "the failed reload")
    wait_until(lambda: server.worker_pids() == old, 10, "only the old workers")
    assert server.request(b"still") == [b"STILL"]
    assert server.proc.poll() is None
    # The config went back too: a worker that exits now is replaced with the old app.
    os.kill(old[0], signal.SIGTERM)
    wait_until(
        lambda: len(server.worker_pids()) == 2 and old[0] not in server.worker_pids(),
        15,
        "a replacement",
    )
    assert server.request(b"again") == [b"AGAIN"]


def test_a_bad_config_file_on_hup_changes_nothing(start_server, short_tmp):
    config = short_tmp / "zmqserver.toml"
    _write(config, "min_servers = 2\n")
    server = start_server(None, "--config", str(config), workers=None)
    old = server.wait_workers(2)
    _write(config, "min_servers = 2\nmax_server = 3\n")
    server.signal(signal.SIGHUP)
    wait_until(lambda: "nothing reloaded" in server.log(), 10, "the refused reload")
    assert "unknown option 'max_server' (did you mean 'max_servers'?)" in server.log()
    assert server.worker_pids() == old
    assert server.request(b"x") == [b"x"]


# -- stopping -------------------------------------------------------------------------------------


def test_term_with_jobs_in_flight_lets_them_finish_and_exits_0(start_server, short_tmp):
    server = start_server("tests.apps:mark_then_sleep", workers=3)
    pids = server.wait_workers(3)
    marks = [short_tmp / f"run{i}" for i in range(3)]
    running = _send_all(server, [b"1.0 %s" % str(m).encode() for m in marks])
    wait_until(lambda: all(m.exists() for m in marks), 15, "three jobs running")
    queued = _send_all(server, [b"1.0 %s" % str(short_tmp / f"late{i}").encode() for i in (0, 1)])
    server.signal(signal.SIGTERM)
    for reply in _recv_all(running):
        assert reply[0].startswith(b"1.0 ")
        assert int(reply[1]) in pids
    for (reply,) in _recv_all(queued):
        assert reply.startswith(b"ERROR shutting_down")
    assert server.wait(30) == 0
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, "workers gone")


# -- recycling ------------------------------------------------------------------------------------


def test_max_requests_replaces_workers_without_failing_a_job(start_server):
    server = start_server("tests.apps:pid", "--max-requests", "4", workers=2)
    server.wait_workers(2)
    served: dict[bytes, int] = {}
    for _ in range(24):
        (pid,) = server.request(b"x")
        assert not pid.startswith(b"ERROR"), pid
        served[pid] = served.get(pid, 0) + 1
    assert max(served.values()) <= 4
    assert len(served) >= 6  # 24 jobs, at most 4 each


def test_max_worker_memory_recycles_a_worker_after_its_job(start_server):
    # 1 MiB is less than any Python process: every worker exits after its first job.
    server = start_server("tests.apps:pid", "--max-worker-memory", "1", workers=1)
    server.wait_workers(1)
    pids = [server.request(b"x")[0] for _ in range(3)]
    assert not any(p.startswith(b"ERROR") for p in pids)
    assert len(set(pids)) == 3
    assert "(max_worker_memory 1 MiB); exiting" in server.log()


# -- daemon mode, pid file, user, log file --------------------------------------------------------


def _serve(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    env = clean_env(keep_pure=False)
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "zmqserver", "serve", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_daemon_writes_the_pid_file_and_term_on_that_pid_stops_everything(short_tmp, ctx):
    pid_file, log_file = short_tmp / "zs.pid", short_tmp / "zs.log"
    front = f"ipc://{short_tmp}/front"
    args = ["examples.upper:app", "--frontend", front, "--backend", f"ipc://{short_tmp}/back"]
    args += ["--min-servers", "2", "--max-servers", "2", "--background"]
    args += ["--pid-file", str(pid_file), "--log-file", str(log_file)]
    launched = _serve(*args)
    assert launched.returncode == 0, launched.stderr
    pid = int(pid_file.read_text())
    workers: list[int] = []
    try:
        assert pid_alive(pid)
        wait_until(lambda: len(children_of(pid)) == 2, 15, "two workers of the daemon")
        workers = children_of(pid)
        # A session of its own, which it does not lead: it can never get a terminal again.
        assert os.getsid(pid) != os.getsid(0)
        assert os.getsid(pid) != pid
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(front)
        sock.send(b"daemon")
        assert sock.poll(15_000)
        assert sock.recv_multipart() == [b"DAEMON"]
        sock.close()
        os.kill(pid, signal.SIGTERM)
        wait_until(
            lambda: not pid_alive(pid) and not any(pid_alive(w) for w in workers),
            30,
            "the daemon and its workers to exit",
        )
        assert not pid_file.exists()
        assert "stopped" in log_file.read_text()
    finally:
        for p in [pid, *workers]:
            if pid_alive(p):
                os.kill(p, signal.SIGKILL)


def test_daemon_that_cannot_start_says_why(short_tmp):
    launched = _serve(
        "--frontend",
        "ipc:///nonexistent-zmqserver-dir/front",
        "--backend",
        f"ipc://{short_tmp}/back",
        "--min-servers",
        "1",
        "--background",
        "--log-file",
        str(short_tmp / "zs.log"),
    )
    assert launched.returncode == 1
    assert b"cannot bind the frontend to ipc:///nonexistent-zmqserver-dir/front" in (
        launched.stderr
    )


def test_pid_file_of_a_running_server_is_refused(start_server, short_tmp):
    pid_file = short_tmp / "zs.pid"
    server = start_server(None, "--pid-file", str(pid_file), workers=1)
    wait_until(pid_file.exists, 15, "the pid file")
    assert int(pid_file.read_text()) == server.pid
    second = _serve("--pid-file", str(pid_file), "--frontend", f"ipc://{short_tmp}/x")
    assert second.returncode == 2
    assert f"names process {server.pid}, which is running".encode() in second.stderr


def test_usr1_reopens_the_log_file(start_server, short_tmp):
    log_file = short_tmp / "zs.log"
    server = start_server(None, "--log-file", str(log_file), workers=1)
    server.wait_ready()
    wait_until(lambda: "clients on" in log_file.read_text(), 10, "the first log lines")
    log_file.rename(short_tmp / "zs.log.1")  # what logrotate does
    server.signal(signal.SIGUSR1)
    wait_until(log_file.exists, 10, "a new log file")
    wait_until(lambda: "USR1: reopened 1 log file(s)" in log_file.read_text(), 10, "log line")
    assert server.request(b"alive") == [b"alive"]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_and_group_are_taken_on_after_binding(start_server, short_tmp):
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user on this machine")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    short_tmp.chmod(0o755)  # so that 'nobody' may reach the sockets inside
    server = start_server("tests.apps:whoami", "--user", "nobody", "--group", group, workers=2)
    pids = server.wait_workers(2)
    reply = server.request(b"who")
    assert reply == [b"%d %d" % (nobody.pw_uid, nobody.pw_gid)]

    def ids(pid: int) -> tuple[set[str], set[str]]:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        fields = {line.split(":")[0]: line.split()[1:] for line in lines}
        return set(fields["Uid"]), set(fields["Gid"])

    for pid in [server.pid, *pids]:
        assert ids(pid) == ({str(nobody.pw_uid)}, {str(nobody.pw_gid)})  # real, effective, saved
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0


def test_chdir_and_umask_apply_before_any_file_is_created(start_server, short_tmp):
    home = short_tmp / "home"
    home.mkdir()
    server = start_server(
        None, "--chdir", str(home), "--umask", "077", "--pid-file", "zs.pid", workers=1
    )
    wait_until((home / "zs.pid").exists, 15, "the pid file, relative to chdir")
    assert (home / "zs.pid").stat().st_mode & 0o777 == 0o600
    assert int((home / "zs.pid").read_text()) == server.pid
    assert os.readlink(f"/proc/{server.pid}/cwd") == str(home)


def test_preload_app_imports_the_app_once_in_the_master(start_server):
    server = start_server("tests.apps:imported_by", "--preload-app", workers=2)
    importer, worker = server.request(b"x")[0].split()
    assert int(importer) == server.pid
    assert int(worker) in server.wait_workers(2)
    lazy = start_server("tests.apps:imported_by", workers=1)
    importer, worker = lazy.request(b"x")[0].split()
    assert importer == worker  # each worker imports it after the fork


def test_preload_app_that_cannot_load_fails_at_start_up():
    proc = _serve("tests.broken_app:app", "--preload-app", "--frontend", "ipc:///tmp/zs-no")
    assert proc.returncode == 3
    assert b"this module is broken on purpose" in proc.stderr
    assert b"starting" not in proc.stderr  # nothing was forked


# -- hooks and configuration ----------------------------------------------------------------------


def test_hooks_run_in_the_right_processes(start_server, short_tmp):
    record = short_tmp / "hooks"
    hooks = ["on_starting", "post_fork", "pre_request", "post_request", "worker_exit", "on_exit"]
    flags = [arg for name in hooks for arg in (f"--{name.replace('_', '-')}", f"tests.apps:{name}")]
    server = start_server(
        "examples.upper:app", *flags, workers=1, env={"ZS_TEST_HOOKS": str(record)}
    )
    (worker,) = server.wait_workers(1)
    assert server.request(b"ok") == [b"OK"]
    (vetoed,) = server.request(b"veto")
    assert vetoed == b"ERROR app_error: PermissionError: vetoed by pre_request"
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0
    lines = record.read_text().splitlines()
    assert lines[0] == f"on_starting {server.pid}"
    assert lines[1] == f"post_fork {worker}"
    assert f"post_request {worker} OK" in lines
    assert f"post_request {worker} APP_ERROR" in lines
    assert lines.count(f"pre_request {worker}") == 2
    assert lines[-2:] == [f"worker_exit {worker}", f"on_exit {server.pid}"]


def test_a_hook_that_cannot_load_stops_the_server_with_its_name(start_server):
    server = start_server(None, "--post-fork", "tests.apps:no_such_hook", workers=2)
    assert server.wait(20) == 3
    assert "has no attribute 'no_such_hook'" in server.log()
    assert "no start delay" not in server.log()  # no worker death was taken for a restart
    assert "next start in" not in server.log()


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("min_server = 3\n", {}, "unknown option 'min_server' (did you mean 'min_servers'?)"),
        ('min_servers = "3"\n', {}, "min_servers: expected an integer, got '3'"),
        ("max_spare_servers = 50\n", {}, "max_spare_servers (50) must be < max_servers (50)"),
        ("", {"ZMQSERVER_MAX_SERVERS": "many"}, "ZMQSERVER_MAX_SERVERS: expected a number"),
        ("", {"ZMQSERVER_MIN_SERVER": "3"}, "did you mean 'min_servers'?"),
    ],
)
def test_a_bad_config_is_refused_with_a_message_naming_the_key(short_tmp, toml, env, message):
    config = short_tmp / "zmqserver.toml"
    config.write_text(toml)
    full_env = clean_env(keep_pure=False)
    proc = subprocess.run(
        [sys.executable, "-m", "zmqserver", "serve", "--config", str(config)],
        cwd=REPO,
        env={**full_env, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert message in proc.stderr.decode()
