"""`zmqserver top` in a real terminal: tmux runs it against a real server; the test reads the
screen (capture-pane), presses keys (send-keys), and checks the server through `zmqserver
status --json`.

tmux runs on a socket of its own in the test's directory (``-S``), so the test never touches
another tmux server, and stops only the one it started.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import REPO, clean_env, wait_until

TMUX = shutil.which("tmux")
# The same whichever build of the broker runs: make test runs it once (pyproject's markers).
pytestmark = [
    pytest.mark.compiled_pass,
    pytest.mark.skipif(TMUX is None, reason="tmux is not installed (Debian: apt install tmux)"),
    pytest.mark.timeout(90),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = clean_env()
    env["PYTHONPATH"] = str(REPO)
    return env


class Tmux:
    """One tmux server on a private socket; ``run`` makes its single session."""

    def __init__(self, directory: Path) -> None:
        assert TMUX is not None
        self.base = [TMUX, "-S", str(directory / "tmux.sock")]

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=10, env=_env(), check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def run(self, command: str) -> None:
        # remain-on-exit: the pane stays after its process exits, so its exit status is read.
        self(
            "-f", "/dev/null", "start-server", ";", "set-option", "-g", "remain-on-exit", "on",
            ";", "new-session", "-d", "-x", "120", "-y", "40", "-s", "top", command,
        )  # fmt: skip

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "top")

    def dead(self) -> bool:
        """Whether the pane's process has exited. (Its exit status, #{pane_dead_status}, is
        sometimes left empty by tmux 3.3: the command writes its own to a file instead.)"""
        return self("list-panes", "-t", "top", "-F", "#{pane_dead}").strip() == "1"

    def stop(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10, check=False)


@pytest.fixture
def tmux(short_tmp: Path) -> Iterator[Tmux]:
    terminal = Tmux(short_tmp)
    yield terminal
    terminal.stop()


def _status(port: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "zmqserver", "status", "--json", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=20,
        env=_env(),
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _workers(port: int) -> int:
    (service,) = _status(port)["services"]
    return sum(service["workers"].values())


def test_top_shows_the_workers_scales_on_plus_and_quits_on_q(start_server, tmux, short_tmp):
    port = _free_port()
    server = start_server("examples.upper:app", "--frontend", f"tcp://127.0.0.1:{port}")
    server.frontend = f"tcp://127.0.0.1:{port}"
    server.wait_ready()
    # Like `zmqserver status`, top finds the server by its --port (the discovery file).
    exit_file = short_tmp / "top.status"
    tmux.run(
        f"{sys.executable} -m zmqserver top --port {port} --interval 0.3; echo $? > {exit_file}"
    )
    row = re.compile(r"^> default\s+(\d+)\s+(\d+)", re.M)

    def shown(count: int) -> bool:
        match = row.search(tmux.screen())
        return match is not None and int(match[1]) + int(match[2]) == count

    wait_until(lambda: shown(2), 15, "top to show the service's 2 workers")
    assert str(server.worker_pids()[0]) in tmux.screen()  # the worker list
    tmux("send-keys", "-t", "top", "+")
    wait_until(lambda: _workers(port) == 3, 15, "the server to scale to 3 (status --json)")
    wait_until(lambda: "incr default: 3 workers" in tmux.screen(), 10, "top's answer line")
    wait_until(lambda: shown(3), 15, "top to show 3 workers")
    tmux("send-keys", "-t", "top", "-")
    wait_until(lambda: _workers(port) == 2, 15, "the server back to 2 (status --json)")
    tmux("send-keys", "-t", "top", "q")
    wait_until(tmux.dead, 10, "top to exit on q")
    assert exit_file.read_text().strip() == "0"


def test_top_without_a_server_says_so(short_tmp):
    done = subprocess.run(
        [sys.executable, "-m", "zmqserver", "top", "--port", str(_free_port())],
        capture_output=True,
        text=True,
        timeout=20,
        env=_env(),
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 1
    assert "no server running" in done.stderr
