"""Workers that keep dying: a crash loop stops the server, repeated deaths are spaced out.

An app that kills its process while it imports (``os._exit``, a segfault) gives no ImportError,
hence no BOOT_ERROR; before the back-off, such a server forked 400-1,000 workers in 8 s, forever.
Forks are counted from the master's debug log (``spawned worker``), one line per fork.
"""

from __future__ import annotations

import re
import signal
import time
from datetime import datetime

import pytest
import zmq
from tests.helpers import wait_until

from zmqserver.supervisor.backoff import BACKOFF_FIRST, CRASH_LOOP_LIMIT

pytestmark = pytest.mark.timeout(90)

DEBUG = ("--log-level", "debug")


def forks(log: str) -> int:
    return log.count("spawned worker")


@pytest.mark.parametrize(
    ("app", "how"),
    [
        ("tests.exit_app:app", "exited with status 7"),
        ("tests.segv_app:app", "killed by SIGSEGV"),
    ],
)
def test_an_app_that_kills_its_worker_at_import_stops_the_server_with_status_3(
    start_server, app, how
):
    started = time.monotonic()
    server = start_server(app, *DEBUG, workers=2)
    code = server.wait(20)
    elapsed = time.monotonic() - started
    log = server.log()
    assert code == 3, log[-3000:]
    assert elapsed < 15, log[-3000:]
    assert (
        f"service 'default' cannot start the app '{app}': {CRASH_LOOP_LIMIT} workers in a row "
        f"died before they registered (all {how}); stopping the server"
    ) in log
    # The limit, plus the workers already started when the last of them died (min_servers).
    assert CRASH_LOOP_LIMIT <= forks(log) <= CRASH_LOOP_LIMIT + 2, log
    assert "next start in" in log  # spaced out, not forked back to back


def test_a_crash_loop_of_a_new_generation_rolls_back_to_the_old_one(start_server, short_tmp):
    config = short_tmp / "zmqserver.toml"
    config.write_text('app = "examples.upper:app"\nmin_servers = 2\n')
    server = start_server(None, "--config", str(config), *DEBUG, workers=None)
    old = server.wait_workers(2)
    server.wait_ready()
    config.write_text('app = "tests.segv_app:app"\nmin_servers = 2\n')
    server.signal(signal.SIGHUP)
    wait_until(lambda: "keep serving" in server.log(), 20, "the rolled-back reload")
    log = server.log()
    assert (
        f"cannot start the app 'tests.segv_app:app': {CRASH_LOOP_LIMIT} workers in a row died "
        "before they registered (all killed by SIGSEGV); the 2 worker(s) of the previous "
        "generation keep serving"
    ) in log
    wait_until(lambda: server.worker_pids() == old, 10, "only the old workers")
    assert server.request(b"still") == [b"STILL"]
    assert server.proc.poll() is None
    assert forks(server.log()) <= 2 + CRASH_LOOP_LIMIT + 2


_SPAWNED = re.compile(r"^(\S+ \S+) .*spawned worker", re.MULTILINE)


def _spawn_times(log: str) -> list[float]:
    return [datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f").timestamp() for s in _SPAWNED.findall(log)]


def test_workers_that_die_on_every_job_are_replaced_with_a_growing_delay(start_server):
    server = start_server("tests.apps:crash", *DEBUG, workers=1)
    server.wait_ready()
    spawns = 7  # the first worker, and six replacements
    with server.socket(zmq.DEALER) as dealer:
        # Enough jobs that a worker always has one waiting: each kills the worker that takes it.
        for _ in range(300):
            dealer.send_multipart([b"", b"die"])
        wait_until(lambda: len(_spawn_times(server.log())) >= spawns, 40, f"{spawns} forks")
    log = server.log()
    times = _spawn_times(log)[:spawns]
    # The first death is replaced at once; then after 0.1 s, doubling: 0.1 + 0.2 + 0.4 + 0.8 +
    # 1.6 = 3.1 s from the first replacement to the sixth, at the least. Forked back to back
    # (before), a worker lived about 50 ms: all six came within half a second.
    assert times[-1] - times[1] >= 0.9 * BACKOFF_FIRST * (2 ** (spawns - 2) - 1), log
    deaths = re.findall(r"worker \d+ exited with status 9; (.*)", log)
    assert deaths[:4] == [
        "no start delay",
        "next start in 0.1 s",
        "next start in 0.2 s",
        "next start in 0.4 s",
    ]
    # Registered workers that die are no crash loop: the server keeps serving.
    assert server.proc.poll() is None
    assert "cannot start the app" not in log
