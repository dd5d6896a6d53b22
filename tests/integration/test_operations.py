"""Start-up failures, logging, daemon mode and the first five minutes (issue 19).

Real servers in real processes: a USR1 whose reopen fails, a daemon that must wait for its
workers or fail with the reason, start-up errors that reach the terminal with a log file, the
app's own logging, import errors told once, and the smaller things a first user meets.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.helpers import REPO, children_of, clean_env, cmdline, pid_alive, wait_until

# The same whichever build of the broker runs: make test runs it once (pyproject's markers).
pytestmark = [pytest.mark.timeout(60), pytest.mark.compiled_pass]


def _env() -> dict[str, str]:
    env = clean_env()
    env["PYTHONPATH"] = str(REPO)
    return env


def _run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmqserver", *argv],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _ipc(tmp: Path, *args: str) -> list[str]:
    return ["--frontend", f"ipc://{tmp}/front", "--backend", f"ipc://{tmp}/back", *args]


# -- 1. USR1 never stops the server ---------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_a_failed_usr1_reopen_keeps_the_old_file_and_the_server(start_server, short_tmp):
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user on this machine")
    short_tmp.chmod(0o755)
    logs = short_tmp / "logs"
    logs.mkdir()  # root's, 0755: the server, once 'nobody', cannot create files in it
    log_file = logs / "zs.log"
    server = start_server(
        "examples.upper:app", "--user", "nobody", "--log-file", str(log_file), workers=1
    )
    server.wait_ready()
    rotated = logs / "zs.log.1"
    log_file.rename(rotated)  # what logrotate does; the new file cannot be created
    server.signal(signal.SIGUSR1)
    wait_until(lambda: "USR1: could not reopen" in rotated.read_text(), 10, "the reason")
    assert "Permission denied" in rotated.read_text()
    assert server.request(b"still") == [b"STILL"]
    assert pid_alive(server.pid)
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0
    assert "I/O operation on closed file" not in rotated.read_text() + server.log()
    assert "stopped" in rotated.read_text()  # the last lines still reached the old file
    assert nobody.pw_uid != 0


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_the_pid_file_does_not_name_the_server_after_exit_with_user(start_server, short_tmp):
    short_tmp.chmod(0o755)
    pid_file = short_tmp / "zs.pid"
    server = start_server(None, "--user", "nobody", "--pid-file", str(pid_file), workers=1)
    server.wait_ready()
    assert int(pid_file.read_text()) == server.pid
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0
    # Its directory is root's: the file is emptied (what a new server takes for no server)
    # and the log says why it was not removed.
    assert not pid_file.exists() or pid_file.read_text() == ""
    assert "pid file is emptied at exit" in server.log()
    sticky = Path(f"/tmp/zs-{os.getpid()}.pid")  # a sticky directory: removed outright
    other = start_server(None, "--user", "nobody", "--pid-file", str(sticky), workers=1)
    try:
        other.wait_ready()
        other.signal(signal.SIGTERM)
        assert other.wait(30) == 0
        assert not sticky.exists()
    finally:
        sticky.unlink(missing_ok=True)


# -- 2. --background returns once the workers registered, or fails with the reason --------------


def test_background_fails_with_status_3_and_the_traceback_once(short_tmp):
    launched = _run("serve", "tests.broken_app:app", *_ipc(short_tmp, "--min-servers", "3"),
                    "--background")  # fmt: skip
    assert launched.returncode == 3, launched.stderr
    assert launched.stderr.count("Traceback (most recent call last)") == 1
    assert "RuntimeError: this module is broken on purpose" in launched.stderr
    assert "tests/broken_app.py" in launched.stderr


def test_background_returns_once_the_workers_have_registered(short_tmp):
    pid_file = short_tmp / "zs.pid"
    args = _ipc(short_tmp, "--min-servers", "3", "--max-servers", "3", "--min-spare-servers", "0")
    started = time.monotonic()
    log_file = str(short_tmp / "zs.log")
    launched = _run("serve", "tests.slow_app:app", *args, "--background",
                    "--pid-file", str(pid_file), "--log-file", log_file)  # fmt: skip
    took = time.monotonic() - started
    assert launched.returncode == 0, launched.stderr
    pid = int(pid_file.read_text())
    try:
        # Each worker imports the app for a second before it can register: "up" came after.
        assert took >= 1.0
        assert len(children_of(pid)) == 3
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), 30, "the daemon to stop")


# -- 3. with log_file, what stops the server before it is up reaches the terminal too -----------


def test_start_up_failures_reach_stderr_with_a_log_file(short_tmp):
    log_file = str(short_tmp / "zs.log")
    taken = _run("serve", "--frontend", "ipc:///nonexistent-zmqserver-dir/front",
                 "--backend", f"ipc://{short_tmp}/back", "--log-file", log_file)  # fmt: skip
    assert taken.returncode == 1
    assert "cannot bind the frontend" in taken.stderr
    broken = _run("serve", "tests.broken_app:app", *_ipc(short_tmp), "--log-file", log_file)
    assert broken.returncode == 3
    assert "this module is broken on purpose" in broken.stderr
    pid_dir = _run("serve", *_ipc(short_tmp), "--log-file", log_file,
                   "--pid-file", "/nonexistent-zmqserver-dir/zs.pid")  # fmt: skip
    assert pid_dir.returncode == 1
    assert "/nonexistent-zmqserver-dir/zs.pid" in pid_dir.stderr


def test_a_log_file_in_a_missing_directory_is_a_config_error(short_tmp):
    for background in ([], ["--background"]):
        proc = _run("serve", *_ipc(short_tmp), "--log-file", "/nonexistent-zs/zs.log", *background)
        assert proc.returncode == 2
        assert proc.stderr.strip().endswith(
            "log_file: cannot open /nonexistent-zs/zs.log: No such file or directory"
        )
        assert "Traceback" not in proc.stderr


# -- 4. the app's own logging ----------------------------------------------------------------------


def test_the_apps_logging_reaches_the_log_file_as_json(start_server, short_tmp):
    log_file = short_tmp / "zs.log"
    server = start_server("tests.apps:logs", "--log-file", str(log_file), "--log-format", "json",
                          workers=1)  # fmt: skip
    assert server.request(b"hello") == [b"hello"]
    wait_until(lambda: "app warning" in log_file.read_text(), 10, "the app's lines")
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    (info,) = [line for line in lines if line["message"] == "app info b'hello'"]
    assert info["level"] == "INFO"
    assert info["logger"] == "tests.app"
    assert info["service"] == "default"
    assert isinstance(info["request_id"], int)
    assert info["pid"] in server.worker_pids()
    assert {"time", "level", "pid", "service", "logger", "message"} <= set(lines[0])
    assert "request_id" not in lines[0]  # the master's, outside any job


def test_the_apps_info_lines_follow_log_level(start_server):
    quiet = start_server("tests.apps:logs", "--log-level", "warning", workers=1)
    assert quiet.request(b"x") == [b"x"]
    wait_until(lambda: "app warning" in quiet.log(), 10, "the app's warning")
    assert "app info" not in quiet.log()
    assert "[WARNING] tests.app: app warning" in quiet.log()  # formatted like the server's
    loud = start_server("tests.apps:logs", "--log-level", "debug", workers=1)
    assert loud.request(b"y") == [b"y"]
    wait_until(lambda: "[INFO] tests.app: app info b'y'" in loud.log(), 10, "the app's info")


def test_log_config_replaces_the_logging_set_up(start_server, short_tmp):
    out = short_tmp / "custom.log"
    config = short_tmp / "logging.toml"
    config.write_text(
        'version = 1\n[formatters.plain]\nformat = "CUSTOM %(name)s %(message)s"\n'
        f'[handlers.file]\nclass = "logging.FileHandler"\nfilename = "{out}"\n'
        'formatter = "plain"\n[root]\nlevel = "INFO"\nhandlers = ["file"]\n'
    )
    server = start_server("tests.apps:logs", "--log-config", str(config), workers=1)
    assert server.request(b"z") == [b"z"]
    wait_until(lambda: "CUSTOM tests.app app info b'z'" in out.read_text(), 10, "custom lines")
    assert "CUSTOM zmqserver " in out.read_text()
    bad = _run("serve", "--log-config", str(short_tmp / "missing.toml"))
    assert bad.returncode == 2
    assert "log_config: cannot read" in bad.stderr


# -- 5. import errors: the traceback once, naming what failed, before the summary ---------------


def test_an_import_error_is_told_once_with_its_traceback_before_the_summary(start_server):
    server = start_server("tests.broken_app:app", workers=3)
    assert server.wait(20) == 3
    log = server.log()
    assert log.count("Traceback (most recent call last)") == 1
    cause = log.index("Traceback")
    assert cause < log.index("stopping the server")
    assert "app 'tests.broken_app:app'" in log


def test_a_post_fork_module_that_is_missing_is_named_not_the_app(start_server):
    server = start_server("examples.upper:app", "--post-fork", "no_such_mod_q:hook", workers=2)
    assert server.wait(20) == 3
    log = server.log()
    assert "post_fork 'no_such_mod_q:hook': cannot import module 'no_such_mod_q'" in log
    assert "could not load the app" not in log


# -- 9. the smaller things ------------------------------------------------------------------------


def test_workers_of_a_private_backend_are_titled_local(start_server, short_tmp):
    proc = subprocess.Popen(
        [sys.executable, "-m", "zmqserver", "serve", "--frontend", f"ipc://{short_tmp}/f",
         "--min-servers", "1", "--port", "16660", "16661"],
        cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: len(children_of(proc.pid)) == 1, 15, "a worker")
        (worker,) = children_of(proc.pid)
        wait_until(lambda: cmdline(worker) == "zmq worker local", 10, "the worker's title")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_usage_errors_are_short(short_tmp):
    umask = _run("serve", "--umask", "999")
    assert umask.returncode == 2
    assert umask.stderr.splitlines() == [
        "zmqserver serve: error: argument --umask: expected an octal number such as 027, got '999'",
        "see 'zmqserver serve --help' for the usage",
    ]
    unknown = _run("serve", "--bogus")
    assert unknown.returncode == 2
    assert len(unknown.stderr.splitlines()) == 2
