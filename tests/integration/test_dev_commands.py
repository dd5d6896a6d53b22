"""The commands a gunicorn or celery user reaches for: ``check``, ``serve --reload``, the ready
line, ``--version``; each run as a real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.helpers import REPO, ServerProcess, clean_env, wait_until

# The same whichever build of the broker runs: make test runs it once (pyproject's markers).
pytestmark = pytest.mark.compiled_pass

ZMQSERVER = [sys.executable, "-m", "zmqserver"]


def _run(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    clean = clean_env(keep_pure=False)
    clean["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [*ZMQSERVER, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **(env or {})},
        timeout=60,
    )


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("zmqserver ")


def test_check_shows_each_value_and_its_source(tmp_path: Path) -> None:
    config = tmp_path / "z.toml"
    config.write_text('min_servers = 4\nlog_level = "warning"\n')
    result = _run(
        "check",
        "examples.upper:app",
        "--config",
        str(config),
        "--log-level",
        "debug",
        env={"ZMQSERVER_MAX_SERVERS": "9"},
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert rows["min_servers"].endswith(f"config file {config}")
    assert rows["max_servers"].endswith("environment ZMQSERVER_MAX_SERVERS")
    assert '"debug"' in rows["log_level"]
    assert rows["log_level"].endswith("command line")
    assert rows["app"].endswith("command line")
    assert rows["job_timeout"].endswith("default")
    assert result.stdout.splitlines()[-1].startswith("zmqserver check: valid")


def test_check_takes_a_toml_file_as_its_argument_and_emits_json(tmp_path: Path) -> None:
    config = tmp_path / "z.toml"
    config.write_text('[services.up]\napp = "examples.upper:app"\nmax_servers = 8\n')
    result = _run("check", str(config), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True
    assert report["services"] == {"up": {"app": "examples.upper:app", "max_servers": 8}}
    assert report["options"]["services"]["source"] == f"config file {config}"
    assert report["options"]["port"] == {"value": [6660, 6661], "source": "default"}


def test_check_exits_2_with_the_error() -> None:
    bad = _run("check", "--min-servers", "9", "--max-servers", "3")
    assert bad.returncode == 2
    assert "max_servers (3) must be >= min_servers (9)" in bad.stderr
    missing = _run("check", "nosuch_module_xyz:app", "--json")
    assert missing.returncode == 2
    assert "cannot import module 'nosuch_module_xyz'" in json.loads(missing.stdout)["error"]
    worker = _run("check", "--worker")
    assert worker.returncode == 2
    assert "connect" in worker.stderr


def test_ready_line_once_at_start_and_after_a_hup(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("examples.upper:app", workers=3)
    wait_until(lambda: "zmqserver ready:" in server.log(), 15, "the ready line")
    line = next(li for li in server.log().splitlines() if "zmqserver ready:" in li)
    assert line.endswith(
        f"zmqserver ready: 3 workers, service default (3); frontend {server.frontend}"
    )
    server.signal(signal.SIGHUP)
    wait_until(lambda: "zmqserver reloaded:" in server.log(), 15, "the reloaded line")
    assert server.log().count("zmqserver ready:") == 1
    assert "generation 1 ready; retiring 3 old worker(s)" in server.log()


def test_reload_restarts_workers_when_the_app_changes(
    start_server: Callable[..., ServerProcess], short_tmp: Path
) -> None:
    """Start with --reload, edit the app file: the next request gets the new behaviour."""
    project = short_tmp / "proj"
    (project / "reloadme").mkdir(parents=True)
    (project / "reloadme" / "__init__.py").write_text("from .app import app\n")
    source = project / "reloadme" / "app.py"  # a module inside the package: watched too
    source.write_text("def app(payload):\n    return b'first'\n")
    server = start_server("reloadme:app", "--reload", "--chdir", str(project), workers=2)
    wait_until(lambda: "zmqserver ready:" in server.log(), 15, "the ready line")
    assert server.request(b"x") == [b"first"]
    source.write_text("def app(payload):\n    return b'second version'\n")
    wait_until(lambda: "zmqserver reloaded:" in server.log(), 15, "the reload")
    assert server.request(b"x") == [b"second version"]
    assert "--reload: watching 2 file(s) of reloadme" in server.log()
    # A broken edit keeps the old generation serving; the next good edit is taken.
    source.write_text("def app(payload) oops\n")
    wait_until(lambda: "keep serving" in server.log(), 15, "the rollback")
    assert server.request(b"x") == [b"second version"]
    source.write_text("def app(payload):\n    return b'third'\n")
    wait_until(lambda: server.request(b"x") == [b"third"], 15, "the fixed app")
