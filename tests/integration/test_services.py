"""Several services on one server: each with its own app, pool, queue and limits (issue 5).

Real servers, real workers, every wait bounded. Services come from the command line
(``NAME=APP``), from ``[services.NAME]`` tables in a TOML file, and from ``run(apps=...)``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from tests.helpers import REPO, children_of, cmdline, wait_until

from zmqserver import Client
from zmqserver.errors import Status
from zmqserver.protocol import encode_client_request, parse_client_reply

pytestmark = pytest.mark.timeout(60)


def _titles(server) -> list[str]:
    return sorted(cmdline(pid) for pid in server.worker_pids())


def _mdp(sock: zmq.Socket[bytes], service: bytes, payload: bytes, request_id: int = 0) -> None:
    """An MDP/0.2 request whose header asks for no deadline: the service's job_timeout applies."""
    sock.send_multipart(encode_client_request(service, [payload], request_id=request_id))


def _reply(sock: zmq.Socket[bytes], timeout: float = 10.0):
    assert sock.poll(timeout * 1000), "no reply in time"
    return parse_client_reply(sock.recv_multipart())


def test_two_services_with_their_own_apps_and_pool_sizes(start_server, short_tmp):
    config = short_tmp / "zmqserver.toml"
    config.write_text(
        '[services.pids]\napp = "tests.apps:pid"\nmin_servers = 1\n\n'
        '[services.upper]\napp = "examples.upper:app"\nmin_servers = 3\n'
    )
    server = start_server(None, "--config", str(config), workers=None)
    server.wait_workers(4)
    wait_until(lambda: all(t.startswith("zmq worker") for t in _titles(server)), 10, "titles")
    titles = _titles(server)
    assert sum(t.endswith(" pids") for t in titles) == 1
    assert sum(t.endswith(" upper") for t in titles) == 3
    # MDP clients name their service; a plain REQ client reaches the first one.
    with Client(server.frontend, service="upper") as client:
        assert client.request(b"abc") == b"ABC"
    with Client(server.frontend, service="pids") as client:
        assert int(client.request(b"abc")) in server.worker_pids()
    (plain,) = server.request(b"abc")
    assert int(plain) in server.worker_pids()
    sock = server.socket(zmq.DEALER)
    sock.send_multipart(encode_client_request(b"mmi.services", []))
    assert _reply(sock).body == [b"pids", b"upper"]
    sock.close()
    assert "services 'pids', 'upper' (plain clients: 'pids')" in server.log()


def test_services_on_the_command_line_and_the_default_service(start_server):
    server = start_server(
        "pids=tests.apps:pid", "--default-service", "upper", "upper=examples.upper:app", workers=1
    )
    server.wait_workers(2)
    assert server.request(b"plain") == [b"PLAIN"]  # plain clients: the default service
    with Client(server.frontend, service="pids") as client:
        assert int(client.request(b"x")) in server.worker_pids()
    with Client(server.frontend, service="") as client:  # an empty service frame: the default
        assert client.request(b"empty") == b"EMPTY"


def test_max_queue_and_job_timeout_are_per_service(start_server, short_tmp):
    config = short_tmp / "zmqserver.toml"
    config.write_text(
        # Strict LRU: hasty's warm-up job below opens the prefetch gate, and jobs sent ahead to
        # a busy worker would not count toward max_queue.
        "min_servers = 1\nmax_servers = 1\nworker_credit = 1\n\n"
        '[services.patient]\napp = "tests.apps:sleep_then_pid"\n\n'
        '[services.hasty]\napp = "tests.apps:sleep_then_pid"\n'
        "max_queue = 1\njob_timeout = 0.75\nkill_grace = 0.25\n"
    )
    server = start_server(None, "--config", str(config), workers=None)
    server.wait_workers(2)
    server.wait_ready()
    hasty, patient = server.socket(zmq.DEALER), server.socket(zmq.DEALER)
    # wait_ready proves the default service ('patient') has a worker; hasty's may still be
    # booting, and its requests below would then all queue. A round trip proves it is there.
    _mdp(hasty, b"hasty", b"0", request_id=99)
    assert _reply(hasty).request_id == 99
    [hung] = server.workers_by_state("hasty")["idle"]  # its one worker, about to hang
    started = time.monotonic()
    # One socket, so the broker reads them in this order.
    _mdp(hasty, b"hasty", b"3", request_id=1)  # runs, past its deadline
    _mdp(hasty, b"hasty", b"0.1", request_id=2)  # queued: the one place in hasty's queue
    _mdp(hasty, b"hasty", b"0.1", request_id=3)  # refused at once: queue_full
    _mdp(patient, b"patient", b"1.25", request_id=4)  # the default 60 s deadline: it finishes
    full = _reply(hasty)
    # Refused at once: the first reply, before 1 and 2 reach their 0.75 s deadline.
    assert (full.request_id, full.status) == (3, Status.QUEUE_FULL)
    expired = {reply.request_id: reply.status for reply in (_reply(hasty), _reply(hasty))}
    assert expired == {1: Status.EXPIRED, 2: Status.EXPIRED}  # running and queued alike
    expired_after = time.monotonic() - started
    # hasty's own job_timeout (0.75 s), not the default 60 s: the upper bound tells them apart.
    assert 0.7 <= expired_after < 10.0
    done = _reply(patient)
    assert (done.status, done.body[0]) == (Status.OK, b"1.25")

    # The hung hasty worker is killed after its grace and replaced; the service serves again.
    def replaced() -> bool:
        states = server.workers_by_state("hasty")
        return hung not in sum(states.values(), []) and len(states.get("idle", [])) == 1

    wait_until(replaced, 10, "the overrunning worker's replacement (status)")
    _mdp(hasty, b"hasty", b"0", request_id=5)
    assert _reply(hasty).status is Status.OK
    hasty.close()
    patient.close()
    print(f"per-service limits: hasty's jobs expired after {expired_after:.2f}s")


def test_ttin_and_ttou_act_on_every_pool_and_hup_reloads_each(start_server, short_tmp):
    config = short_tmp / "zmqserver.toml"
    service_tables = (
        '[services.a]\napp = "examples.echo:app"\nmin_servers = 1\n\n'
        '[services.b]\napp = "examples.upper:app"\nmin_servers = {b}\n'
    )
    config.write_text("max_servers = 4\n" + service_tables.format(b=1))
    server = start_server(None, "--config", str(config), workers=None)
    server.wait_workers(2)
    server.signal(signal.SIGTTIN)
    server.wait_workers(4)
    log = server.log()
    assert "TTIN: at least 2 worker(s) now for service 'a'" in log
    assert "TTIN: at least 2 worker(s) now for service 'b'" in server.log()
    server.signal(signal.SIGTTOU)
    server.wait_workers(2)
    # HUP: a service's own options reload; every pool starts a new generation.
    old = set(server.worker_pids())
    config.write_text("max_servers = 4\n" + service_tables.format(b=2))
    server.signal(signal.SIGHUP)
    wait_until(
        lambda: len(server.worker_pids()) == 3 and not set(server.worker_pids()) & old,
        20,
        "a new generation of both pools",
    )
    assert "HUP: services.b.min_servers is now 2 (was 1)" in server.log()
    assert server.request(b"still") == [b"still"]


def test_a_service_whose_app_cannot_load_stops_the_server_naming_it(start_server):
    server = start_server("ok=examples.echo:app", "--min-servers", "1", workers=None)
    server.wait_workers(1)
    server.stop()
    broken = start_server(
        "ok=examples.echo:app", "bad=tests.broken_app:app", "--min-servers", "1", workers=None
    )
    assert broken.wait(20) == 3
    assert "for service 'bad' could not start (app 'tests.broken_app:app'" in broken.log()
    assert "stopping the server" in broken.log()
    assert "no start delay" not in broken.log()
    assert "next start in" not in broken.log()


def test_run_with_apps_from_python(short_tmp: Path):
    front = f"ipc://{short_tmp}/f"
    script = (
        "import zmqserver\n"
        f"zmqserver.run(frontend={front!r}, backend='ipc://{short_tmp}/b', min_servers=1,"
        " min_spare_servers=0,\n"
        "    apps={'rev': lambda payload: payload[::-1],\n"
        "          'upper': {'app': 'examples.upper:app', 'min_servers': 2}})\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with Client(front, service="upper", timeout=10, retries=1) as client:
            assert client.request(b"abc") == b"ABC"
        with Client(front, service="rev", timeout=10, retries=1) as client:
            assert client.request(b"abc") == b"cba"
        with Client(front, timeout=10, retries=1) as client:
            assert client.request(b"xy") == b"yx"  # the first service is the default
        wait_until(lambda: len(children_of(proc.pid)) == 3, 10, "1 + 2 workers")
    finally:
        proc.terminate()
        try:
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            assert proc.stderr is not None
            proc.stderr.close()
