"""Durable jobs as an operator sees them, with real processes: the counts in ``zmqserver
status``, ``/metrics`` and pub-sub events; the server-side long poll of ``titanic.reply``;
``mmi.service``; results over ``store_max_result``; ``result_ttl``; an unwritable store.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zmq
from tests.helpers import wait_until, zmqserver_cli
from tests.integration.pubsub_helpers import free_base_port
from tests.integration.test_durable import APP, Start, durable_server, mdp01

import zmqserver
from zmqserver import Subscriber

pytestmark = [pytest.mark.timeout(90), pytest.mark.compiled_pass]


def _durable_status(pid_file: str) -> dict[str, Any]:
    done = zmqserver_cli("status", "--json", "--pid-file", pid_file)
    assert done.returncode == 0, done.stderr
    section: dict[str, Any] = json.loads(done.stdout)["durable"]
    return section


def test_counts_in_status_metrics_and_pubsub_events(start_server: Start, short_tmp: Path) -> None:
    pid_file = str(short_tmp / "server.pid")
    base = free_base_port()
    server = durable_server(
        start_server,
        short_tmp,
        "--pid-file",
        pid_file,
        "--metrics-port",
        "0",
        "--pubsub-port",
        str(base),
        "--pubsub-events",
    )
    server.wait_ready()
    endpoint = f"tcp://127.0.0.1:{base}"
    with (
        Subscriber(endpoint, "$zmqserver/durable/") as sub,
        zmqserver.Client(server.frontend) as client,
    ):
        done = client.enqueue(b"fine")
        dead = client.enqueue(b"boom a")
        client.enqueue(b"later", delay=600)
        assert client.result(done, wait=10) == b"fine"
        with pytest.raises(zmqserver.JobFailed):
            client.result(dead, wait=10)
        expected = {"pending": 0, "scheduled": 1, "running": 0, "done": 1, "dead": 1}
        wait_until(lambda: _durable_status(pid_file)["jobs"] == expected, 10, "the counts")
        section = _durable_status(pid_file)
        assert section["dead_lettered"] == 1
        assert section["store"].endswith("jobs.db")
        text = zmqserver_cli("status", "--pid-file", pid_file).stdout
        assert "DURABLE JOBS 0 pending, 1 scheduled, 0 running, 1 done, 1 dead" in text

        def heard() -> bool:
            sub.recv(0.1)
            state = sub.state
            return (
                all(
                    json.loads(state.get(b"$zmqserver/durable/" + name.encode(), b"{}")).get(
                        "count"
                    )
                    == count
                    for name, count in expected.items()
                )
                and b"$zmqserver/durable/dead-lettered" in state
            )

        wait_until(heard, 10, "the durable events")
        letter = json.loads(sub.state[b"$zmqserver/durable/dead-lettered"])
        assert (letter["ticket"], letter["service"], letter["total"]) == (dead, "default", 1)
        assert "ValueError: boom" in letter["error"]

    (url,) = re.findall(r"metrics and dashboard on (http://\S+/)", server.log())
    with urllib.request.urlopen(url + "metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'zmqserver_durable_jobs{state="done"} 1' in metrics
    assert 'zmqserver_durable_jobs{state="scheduled"} 1' in metrics
    assert "zmqserver_durable_dead_lettered_total 1" in metrics
    promtool = subprocess.run(["which", "promtool"], capture_output=True, text=True).stdout.strip()
    if promtool:
        checked = subprocess.run(
            [promtool, "check", "metrics"],
            input=metrics,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_titanic_reply_long_poll(start_server: Start, short_tmp: Path) -> None:
    """``titanic.reply`` with ``wait``: held until the result is committed, ``300`` when the
    wait is over, ``400`` when the job is closed meanwhile, ``300`` when the server stops."""
    server = durable_server(start_server, short_tmp)
    server.wait_ready()
    sock = server.socket(zmq.REQ)
    status, soon = mdp01(sock, b"titanic.request", b"\x00delay=0.5", b"default", b"soon")
    assert status == b"200"
    # One request, answered once the job has run (RFC 9 would answer 300 at once).
    assert mdp01(sock, b"titanic.reply", b"\x00wait=20", soon) == [b"200", b"soon"]
    _, never = mdp01(sock, b"titanic.request", b"\x00delay=600", b"default", b"never")
    assert mdp01(sock, b"titanic.reply", b"\x00wait=0.2", never) == [b"300"]
    assert mdp01(sock, b"titanic.reply", b"\x00nope=1", never)[0] == b"400"
    # Closed while held: the held request learns the ticket is gone.
    held = server.socket(zmq.DEALER)
    held.send_multipart([b"", b"MDPC01", b"titanic.reply", b"\x00wait=20", never])
    time.sleep(0.2)  # let it be held first (an order, not a timing bound)
    assert mdp01(sock, b"titanic.close", never) == [b"200"]
    assert held.poll(10_000)
    assert held.recv_multipart()[3:] == [b"400"]
    # Held when the server stops: answered 300, not left to the client's timeout.
    _, later = mdp01(sock, b"titanic.request", b"\x00delay=600", b"default", b"later")
    held.send_multipart([b"", b"MDPC01", b"titanic.reply", b"\x00wait=50", later])
    time.sleep(0.2)
    server.signal(15)
    assert held.poll(10_000)
    assert held.recv_multipart()[3:] == [b"300"]
    assert server.wait(30) == 0
    sock.close()
    held.close()


def test_client_result_waits_on_the_server(start_server: Start, short_tmp: Path) -> None:
    """Client.result(wait=) with a wait longer than the client's own timeout: the holds are
    cut to fit inside it (no request times out), and the result comes back."""
    pid_file = str(short_tmp / "server.pid")
    server = durable_server(start_server, short_tmp, "--pid-file", pid_file)
    server.wait_ready()
    with zmqserver.Client(server.frontend, timeout=2, retries=1) as client:
        ticket = client.enqueue(b"in a second", delay=3.0)
        with pytest.raises(zmqserver.JobPending):
            client.result(ticket, wait=0.2)
        assert client.result(ticket, wait=20) == b"in a second"
        assert client.status(ticket).state == "done"


def test_mmi_service_knows_titanic_only_with_a_store(start_server: Start, short_tmp: Path) -> None:
    """The guide's Titanic clients ask ``mmi.service titanic.request`` before using it."""
    with_store = durable_server(start_server, short_tmp)
    plain = start_server("examples.upper:app")
    with_store.wait_ready()
    plain.wait_ready()
    for server, code in ((with_store, b"200"), (plain, b"404")):
        sock = server.socket(zmq.REQ)
        for name in (b"titanic.request", b"titanic.reply", b"titanic.close"):
            assert mdp01(sock, b"mmi.service", name) == [code], (server.frontend, name)
        sock.close()


def test_result_over_store_max_result_fails_the_job(start_server: Start, short_tmp: Path) -> None:
    server = durable_server(start_server, short_tmp, "--store-max-result", "100")
    server.wait_ready()
    with zmqserver.Client(server.frontend) as client:
        small = client.enqueue(b"x" * 50)
        big = client.enqueue(b"x" * 200)  # the app echoes it: a 200-byte result
        assert client.result(small, wait=10) == b"x" * 50
        with pytest.raises(zmqserver.JobFailed, match=r"exceeds store_max_result \(100\)"):
            client.result(big, wait=10)
        status = client.status(big)
        assert status.state == "dead"
        assert "result of 204 bytes exceeds store_max_result (100)" in status.error


def test_results_expire_after_result_ttl(start_server: Start, short_tmp: Path) -> None:
    server = durable_server(start_server, short_tmp, "--result-ttl", "0.5")
    server.wait_ready()
    with zmqserver.Client(server.frontend) as client:
        ticket = client.enqueue(b"short-lived")
        assert client.result(ticket, wait=10) == b"short-lived"

        def gone() -> bool:
            try:
                client.status(ticket)
            except zmqserver.UnknownTicket:
                return True
            return False

        wait_until(gone, 10, "the result to expire")
        with pytest.raises(zmqserver.UnknownTicket):
            client.result(ticket)


def test_store_in_a_read_only_directory_is_refused(start_server: Start, short_tmp: Path) -> None:
    """Not writable by the server's user (root: an immutable directory, ``chattr +i``)."""
    locked = short_tmp / "ro"
    locked.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode:
            pytest.skip("root, and chattr +i is not available here to make a read-only dir")
    else:
        locked.chmod(0o555)
    try:
        server = start_server(APP, "--store", str(locked / "jobs.db"))
        assert server.wait(20) == 1
        assert re.search(r"cannot write the store \S+jobs\.db: directory \S+ is not writable",
                         server.log()), server.log()  # fmt: skip
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        else:
            locked.chmod(0o755)


def test_store_window_bounds_the_jobs_running(start_server: Start, short_tmp: Path) -> None:
    """``--store-window 1`` with two idle workers: one durable job at a time (each run starts
    after the previous one ended, which the app's sleep makes measurable)."""
    from tests.apps import SLEEP_ENV
    from tests.integration.test_durable import runs

    server = durable_server(start_server, short_tmp, "--store-window", "1", env={SLEEP_ENV: "0.2"})
    server.wait_ready()
    with zmqserver.Client(server.frontend) as client:
        tickets = [client.enqueue(b"w%d" % i) for i in range(4)]
        for ticket in tickets:
            client.result(ticket, wait=20)
    starts = sorted(when for when, payload in runs(short_tmp / "runs") if payload != b"ping")
    assert len(starts) == 4
    assert all(b - a >= 0.2 for a, b in zip(starts, starts[1:], strict=False)), starts
