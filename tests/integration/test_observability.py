"""Status, control, metrics, health and the dashboard of a real server (issue 23).

Real servers, real workers, the real `zmqserver status`/`control` commands; every wait bounded.
promtool and chromium are Debian packages (apt-packages-test.txt, which ``make test`` installs
as root); missing, they are installed here if we may (root, apt-get), else the tests that need
them skip and say why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import zmq
from tests.helpers import wait_until, zmqserver_cli

from zmqserver import Client
from zmqserver.protocol import encode_client_request, parse_client_reply
from zmqserver.supervisor.control import BATCH as CONTROL_BATCH

pytestmark = [pytest.mark.timeout(90), pytest.mark.compiled_pass]


def _status(pid_file: str) -> dict[str, Any]:
    done = zmqserver_cli("status", "--json", "--pid-file", pid_file)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def _workers(pid_file: str) -> int:
    (service,) = _status(pid_file)["services"]
    return sum(service["workers"][s] for s in ("idle", "busy"))


def test_status_shows_services_workers_and_jobs(start_server, short_tmp):
    pid_file = str(short_tmp / "server.pid")
    server = start_server("examples.upper:app", "--pid-file", pid_file)
    server.wait_workers(2)
    server.wait_ready()
    with Client(server.frontend) as client:
        for _ in range(20):
            assert client.request(b"x") == b"X"
    doc = _status(pid_file)
    assert doc["pid"] == server.pid
    (service,) = doc["services"]
    assert service["outcomes"]["ok"] == 21  # the ping too
    assert service["queue"] == 0
    assert service["rate"]["1m"] > 0
    assert service["job_time"]["p50"] is not None
    assert sorted(w["pid"] for w in doc["workers"]) == server.worker_pids()
    assert sum(w["jobs_served"] for w in doc["workers"]) == 21
    assert all(w["rss"] > 0 and w["generation"] == 0 for w in doc["workers"])
    text = zmqserver_cli("status", "--pid-file", pid_file)
    assert text.returncode == 0, text.stderr
    assert re.search(r"^default\s+\d+\s+\d+", text.stdout, re.M), text.stdout
    assert str(server.worker_pids()[0]) in text.stdout


def test_status_says_when_no_server_runs(short_tmp):
    done = zmqserver_cli("status", "--pid-file", str(short_tmp / "none.pid"))
    assert done.returncode == 1
    assert "no server running" in done.stderr
    # A control file left by a killed server names a pid that is gone.
    (short_tmp / "dead.pid.control").write_text('{"pid": 999999999, "endpoint": "ipc:///x"}')
    done = zmqserver_cli("status", "--pid-file", str(short_tmp / "dead.pid"))
    assert done.returncode == 1
    assert "gone" in done.stderr


def test_control_scales_drains_and_logs_who_asked(start_server, short_tmp):
    pid_file = str(short_tmp / "server.pid")
    server = start_server("examples.upper:app", "--pid-file", pid_file, workers=1)
    server.wait_ready()
    done = zmqserver_cli("control", "scale", "default", "3", "--pid-file", pid_file)
    assert done.returncode == 0, done.stderr
    server.wait_workers(3)
    wait_until(lambda: _workers(pid_file) == 3, 15, "3 registered workers")
    assert re.search(r"control: scale service=default count=3 \(asked by uid \d+ \(pid \d+\)\)",
                     server.log())  # fmt: skip
    assert zmqserver_cli("control", "decr", "--pid-file", pid_file).returncode == 0
    server.wait_workers(2)
    # Drained: the running jobs finish, no worker is left, requests wait in the queue.
    assert zmqserver_cli("control", "drain", "default", "--pid-file", pid_file).returncode == 0
    server.wait_workers(0)
    sock = server.socket(zmq.DEALER)
    sock.send_multipart(encode_client_request(b"default", [b"queued"], request_id=1))
    wait_until(lambda: _status(pid_file)["services"][0]["queue"] == 1, 10, "a queued job")
    assert zmqserver_cli("control", "scale", "default", "1", "--pid-file", pid_file).returncode == 0
    assert sock.poll(15000)
    assert parse_client_reply(sock.recv_multipart()).body == [b"QUEUED"]
    sock.close()
    bad = zmqserver_cli("control", "scale", "nope", "2", "--pid-file", pid_file)
    assert bad.returncode == 1
    assert "no such service" in bad.stderr
    assert zmqserver_cli("control", "stop", "--pid-file", pid_file).returncode == 0
    assert server.wait(30) == 0


def test_mmi_queue_answers_an_mdp_client(start_server):
    server = start_server("examples.upper:app", workers=2)
    server.wait_ready()
    # Both workers registered (the first job's round trip proves one): [code, queued, workers].
    wait_until(lambda: server.status()["services"][0]["workers"]["idle"] == 2, 15, "2 idle workers")
    sock = server.socket(zmq.DEALER)
    sock.send_multipart(encode_client_request(b"mmi.queue", [b"default"]))
    assert sock.poll(10000)
    assert parse_client_reply(sock.recv_multipart()).body == [b"200", b"0", b"2"]
    sock.close()


# -- the metrics port -----------------------------------------------------------------------------


def _metrics_url(server) -> str:
    found: list[str] = []

    def logged() -> bool:
        found[:] = re.findall(r"metrics and dashboard on (http://\S+/)", server.log())
        return bool(found)

    wait_until(logged, 15, "the metrics port in the log")
    return found[0]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _debian_tool(command: str, package: str) -> str:
    """The path of ``command``, installing Debian's ``package`` if we may; else skip."""
    found = shutil.which(command)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", package],
            capture_output=True,
            timeout=600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which(command)
    if found is None:
        pytest.skip(f"{command} is not installed (Debian package {package}; needs root to add)")
    return found


def test_metrics_health_and_readiness(start_server):
    server = start_server("examples.upper:app", "--metrics-port", "0")
    url = _metrics_url(server)
    server.wait_ready()
    assert _get(url + "healthz") == (200, "ok\n")
    wait_until(lambda: _get(url + "readyz")[0] == 200, 15, "ready")
    # Both workers idle: the one that answered the start-up ping is idle once its reply is read,
    # which the ping's client can see before the broker's next turn does.
    idle = 'zmqserver_workers{service="default",state="idle"} 2'
    wait_until(lambda: idle in _get(url + "metrics")[1], 15, "two idle workers")
    status, text = _get(url + "metrics")
    assert status == 200
    assert 'zmqserver_jobs_total{service="default",outcome="ok"} 1' in text
    assert idle in text
    assert "zmqserver_job_run_seconds_bucket" in text
    assert _get(url + "nope")[0] == 404
    promtool = _debian_tool("promtool", "prometheus")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    server.signal(15)
    wait_until(lambda: server.proc.poll() is not None or _get(url + "readyz")[0] == 503, 15, "503")


def test_dashboard_shows_workers_and_updates_after_a_job(start_server):
    server = start_server("examples.upper:app", "--metrics-port", "0")
    url = _metrics_url(server)
    server.wait_ready()
    chromium = _debian_tool("chromium", "chromium")

    def dom() -> str:
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
             "--dump-dom", url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return done.stdout

    page = dom()
    assert 'data-workers="2"' in page, page[-2000:]
    assert "ok 1" in page  # the ping
    with Client(server.frontend) as client:
        client.request(b"x")
    assert "ok 2" in dom()


def test_access_log_has_a_line_per_job(start_server, short_tmp):
    path = short_tmp / "access.log"
    # unknown_service_wait 0: a request for a service nobody offers is refused at once.
    server = start_server(
        "examples.upper:app", "--access-log", str(path), "--unknown-service-wait", "0"
    )
    server.wait_ready()
    with Client(server.frontend, service="nope") as client, pytest.raises(Exception):  # noqa: B017, PT011 - any refusal
        client.request(b"x")
    server.signal(15)
    assert server.wait(30) == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 2, lines
    pattern = (
        r"^\S+Z client=[0-9a-f]+ service=default id=- job=[0-9a-f]{16} outcome=ok "
        r"wait=\d+\.\d{6} run=\d+\.\d{6} bytes=\d+$"
    )
    assert re.match(pattern, lines[0]), lines[0]
    assert "service=- " in lines[1]
    assert "outcome=unknown_service" in lines[1]


def test_a_burst_of_control_requests_is_answered_whole_and_jobs_go_on(start_server, short_tmp, ctx):
    """The control socket is waited on by its ZMQ_FD, which signals only once a read has found
    it empty: a burst larger than one turn's batch (BATCH) must not leave requests unread until
    the next one comes, and jobs meanwhile keep being served."""
    pid_file = str(short_tmp / "server.pid")
    server = start_server("examples.upper:app", "--pid-file", pid_file, workers=1)
    server.wait_ready()
    endpoint = json.loads((short_tmp / "server.pid.control").read_text())["endpoint"]
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    count = 3 * CONTROL_BATCH + 1
    for _ in range(count):
        sock.send_multipart([b"", json.dumps({"command": "stats"}).encode()])
    answers = 0
    while sock.poll(10_000):
        _, body = sock.recv_multipart()
        assert json.loads(body)["ok"] is True, body
        answers += 1
        if answers == count:
            break
    assert answers == count
    # Then silence, and one more request long after the burst: still heard.
    time.sleep(0.3)
    sock.send_multipart([b"", json.dumps({"command": "stats"}).encode()])
    assert sock.poll(10_000)
    assert json.loads(sock.recv_multipart()[1])["ok"] is True
    assert server.request(b"still") == [b"STILL"]
    sock.close()
