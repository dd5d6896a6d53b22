"""End-to-end: a real broker, real forked workers, real ZeroMQ clients."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import zmq
from tests.helpers import REPO, cmdline, pid_alive, wait_until

pytestmark = pytest.mark.timeout(60)


def test_req_round_trip_without_identity(start_server):
    server = start_server("examples.upper:app")
    assert server.request(b"hello") == [b"HELLO"]


def test_dealer_client_with_delimiter_and_raw(start_server, ctx):
    server = start_server("examples.upper:app")
    server.wait_ready()
    sock = server.socket(zmq.DEALER)
    sock.send_multipart([b"", b"dealer"])
    assert sock.poll(10_000)
    assert sock.recv_multipart() == [b"", b"DEALER"]
    # A DEALER that sends no delimiter is answered without one.
    sock.send_multipart([b"raw", b"two"])
    assert sock.poll(10_000)
    assert sock.recv_multipart() == [b"RAW", b"TWO"]
    sock.close()


def test_multi_frame_payload_reaches_app_whole(start_server):
    server = start_server("tests.apps:frames")
    assert server.request(b"a", b"b", b"c") == [b"list", b"a", b"b", b"c"]
    assert server.request(b"one") == [b"bytes", b"one"]
    assert server.request(b"") == [b"bytes", b""]


def test_str_reply_is_utf8(start_server):
    server = start_server("tests.apps:text")
    assert server.request(b"x") == ["héllo".encode()]


def test_no_app_echoes(start_server):
    server = start_server(None)
    assert server.request(b"same", b"frames") == [b"same", b"frames"]


def test_streaming_app_joined_for_plain_client(start_server):
    server = start_server("tests.apps:stream")
    assert server.request(b"abc") == [b"a", b"b", b"c"]


def test_fifty_concurrent_clients_get_their_own_replies(start_server, ctx):
    server = start_server("examples.upper:app", workers=4)
    server.wait_ready()
    socks = []
    for i in range(50):
        sock = server.socket()
        sock.send_multipart([b"client-%d" % i, b"frame-%d" % i])
        socks.append(sock)
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    replies: dict[int, list[bytes]] = {}
    deadline = time.monotonic() + 20
    while len(replies) < 50 and time.monotonic() < deadline:
        for sock, _ in poller.poll(1000):
            replies[socks.index(sock)] = sock.recv_multipart()
            poller.unregister(sock)
    assert len(replies) == 50
    for i, reply in replies.items():
        assert reply == [b"CLIENT-%d" % i, b"FRAME-%d" % i]
    for sock in socks:
        sock.close()


def test_lru_dispatch_sends_new_job_to_idle_worker(start_server, ctx, short_tmp):
    """Two workers; one is busy with a slow job: every fast job goes to the idle one."""
    server = start_server("tests.apps:mark_then_sleep", workers=2)
    server.wait_workers(2)
    server.request(b"0 %s" % bytes(short_tmp / "ping"))  # both workers up and registered
    wait_until(lambda: _both_registered(server), 10, "both workers registered")
    slow = server.socket()
    running = short_tmp / "slow-running"
    slow.send(b"3 %s" % bytes(running))
    wait_until(running.exists, 10, "the slow job to start")  # the app's marker
    fast_pids = {server.request(b"0 %s" % bytes(short_tmp / "fast"))[1] for _ in range(10)}
    assert slow.poll(10_000)
    slow_pid = slow.recv_multipart()[1]
    slow.close()
    assert len(fast_pids) == 1
    assert slow_pid not in fast_pids


def _both_registered(server) -> bool:
    # Each worker answers a job with its pid; two concurrent slow-ish jobs need two workers.
    # (tests.apps:mark_then_sleep: seconds, then the marker file it creates.)
    socks = [server.socket() for _ in range(2)]
    for sock in socks:
        sock.send(b"0.2 %s" % bytes(server.workdir / "probe"))
    pids = set()
    for sock in socks:
        if sock.poll(5000):
            pids.add(sock.recv_multipart()[1])
        sock.close()
    return len(pids) == 2


def test_app_exception_gives_error_reply_and_worker_survives(start_server):
    server = start_server("tests.apps:fail", workers=1)
    (worker,) = server.wait_workers(1)
    reply = server.request(b"boom")
    assert reply == [b"ERROR app_error: ValueError: boom requested"]
    assert server.request(b"fine") == [b"fine"]
    assert server.worker_pids() == [worker]
    assert "boom requested" in server.log()


def test_bad_return_type_is_an_app_error(start_server):
    server = start_server("tests.apps:bad_return", workers=1)
    (reply,) = server.request(b"x")
    assert reply.startswith(b"ERROR app_error: BadReply: app returned int")


def test_killed_worker_is_replaced_and_its_job_answered(start_server, short_tmp):
    server = start_server("tests.apps:mark_then_sleep", workers=2)
    before = server.wait_workers(2)
    server.request(b"0 %s" % bytes(short_tmp / "ping"))
    sock = server.socket()
    running = short_tmp / "running"
    sock.send(b"5 %s" % bytes(running))
    wait_until(running.exists, 10, "the job to start")  # running on one of the workers
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    assert sock.poll(10_000)
    (reply,) = sock.recv_multipart()
    sock.close()
    assert reply.startswith(b"ERROR worker_lost")
    wait_until(
        lambda: len(server.worker_pids()) == 2 and not set(server.worker_pids()) & set(before),
        15,
        "replacement workers",
    )
    ping = b"0 %s" % bytes(short_tmp / "ping")
    assert server.request(ping)[0] == ping


def test_worker_exiting_mid_job_answers_client(start_server):
    server = start_server("tests.apps:crash", workers=1)
    server.wait_ready()
    (reply,) = server.request(b"die")
    assert reply.startswith(b"ERROR worker_lost")
    assert server.request(b"after") == [b"after"]


def test_import_error_stops_server_with_clear_message(start_server):
    server = start_server("tests.broken_app:app", workers=3)
    code = server.wait(20)
    assert code != 0
    log = server.log()
    assert "this module is broken on purpose" in log
    assert "could not start (app 'tests.broken_app:app'" in log
    assert log.count("no start delay") == log.count("next start in") == 0


def test_missing_module_stops_server(start_server):
    server = start_server("no_such_module_anywhere:app", workers=2)
    assert server.wait(20) != 0
    assert "cannot import module 'no_such_module_anywhere'" in server.log()


def test_term_leaves_no_process_behind(start_server):
    server = start_server("examples.upper:app", workers=3)
    pids = server.wait_workers(3)
    server.wait_ready()
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0, server.log()[-4000:]
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, "workers gone")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_int_and_quit_stop_everything(start_server, sig):
    server = start_server("examples.upper:app", workers=2)
    pids = server.wait_workers(2)
    server.wait_ready()
    server.signal(sig)
    assert server.wait(30) == 0
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, "workers gone")


def test_term_lets_running_job_finish(start_server, short_tmp):
    server = start_server("tests.apps:mark_then_sleep", workers=1)
    server.request(b"0 %s" % bytes(short_tmp / "ping"))
    sock = server.socket()
    running = short_tmp / "running"
    job = b"1.5 %s" % bytes(running)
    sock.send(job)
    wait_until(running.exists, 10, "the job to start")  # the app's marker
    server.signal(signal.SIGTERM)
    assert sock.poll(10_000)
    assert sock.recv_multipart()[0] == job
    sock.close()
    assert server.wait(30) == 0


def test_workers_exit_when_master_is_killed(start_server):
    server = start_server("examples.upper:app", workers=2)
    pids = server.wait_workers(2)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, "orphaned workers to exit")


def test_process_titles(start_server):
    server = start_server("examples.upper:app", workers=2)
    pids = server.wait_workers(2)
    wait_until(lambda: cmdline(server.pid).startswith("zmq broker"), 10, "broker title")
    assert cmdline(server.pid) == f"zmq broker {server.frontend}-{server.backend}"
    for pid in pids:
        wait_until(lambda p=pid: cmdline(p).startswith("zmq worker"), 10, "worker title")
        assert cmdline(pid) == f"zmq worker {server.backend}"


def test_malformed_frames_on_both_ports_leave_broker_alive(start_server, ctx):
    server = start_server("examples.upper:app", workers=1)
    server.wait_ready()
    garbage = [
        [b""],
        [b"MDPC02"],
        [b"MDPC02", b"\x09", b"svc"],
        [b"MDPC02", b"\x01", b"x" * 300],
        [b"", b"MDPC01"],
        [b"MDPC02", b"\x01", b"default", b"\x00ZQ\x01bad"],
        [b"\x00" * 1000],
        [os.urandom(64) for _ in range(20)],
    ]
    front = server.socket(zmq.DEALER)
    back = ctx.socket(zmq.DEALER)
    back.setsockopt(zmq.LINGER, 0)
    back.connect(server.backend)
    back_worker = ctx.socket(zmq.DEALER)
    back_worker.setsockopt(zmq.LINGER, 0)
    back_worker.connect(server.backend)
    back_worker.send_multipart([b"MDPW02", b"\x01", b"default"])  # a registered foreign worker
    for frames in garbage:
        front.send_multipart(frames)
        back.send_multipart(frames)
    for frames in (
        [b"MDPW02", b"\x04", b"nojob", b"", b"x"],
        [b"MDPW02", b"\x01"],
        [b"MDPW02", b"\x07"],
        [b"MDPW02"],
    ):
        back.send_multipart(frames)
        back_worker.send_multipart(frames)
    # The foreign worker (which may have been given a job first: one garbage request is valid)
    # broke the protocol and was told to go. Waited for first: until then a request could go to
    # it (its garbage and the request below travel on different connections, in no set order).
    received = []
    while back_worker.poll(5000):
        received.append(back_worker.recv_multipart())
        if received[-1] == [b"MDPW02", b"\x06"]:
            break
    assert received[-1] == [b"MDPW02", b"\x06"]
    # Errors come back where the sender can read them; the broker keeps serving.
    assert server.request(b"still alive") == [b"STILL ALIVE"]
    assert server.proc.poll() is None
    for sock in (front, back, back_worker):
        sock.close()


def test_idle_server_does_not_spin(start_server):
    server = start_server("examples.upper:app", workers=4)
    pids = server.wait_workers(4)
    server.wait_ready()

    def cpu_ticks() -> int:
        total = 0
        for pid in [server.pid, *pids]:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rfind(b")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total

    before = cpu_ticks()
    time.sleep(2.0)  # measuring an interval, not waiting for a condition
    used = (cpu_ticks() - before) / os.sysconf("SC_CLK_TCK")
    # A busy-polling loop burns ~2 s of CPU per process here; heartbeats cost a few ms.
    assert used < 0.4, f"idle server used {used:.2f}s of CPU in 2s"


def test_max_requests_recycles_worker(start_server):
    server = start_server("tests.apps:pid", "--max-requests", "3", workers=1)
    (first,) = server.wait_workers(1)
    pids = [server.request(b"x")[0] for _ in range(3)]
    assert pids == [str(first).encode()] * 3
    wait_until(
        lambda: server.worker_pids() and server.worker_pids() != [first], 15, "a replacement worker"
    )
    assert server.request(b"x")[0] != str(first).encode()


def test_ttin_ttou_change_worker_count(start_server):
    server = start_server("examples.upper:app", "--log-level", "debug", workers=2)
    server.wait_workers(2)
    server.signal(signal.SIGTTIN)
    server.wait_workers(3)
    # Two identical signals sent back to back may merge into one (POSIX does not queue them),
    # so wait for each to take effect.
    server.signal(signal.SIGTTOU)
    server.wait_workers(2)
    server.signal(signal.SIGTTOU)
    server.wait_workers(1)
    assert server.request(b"ok") == [b"OK"]


def test_hup_replaces_all_workers_without_failing_jobs(start_server):
    server = start_server("tests.apps:pid", workers=2)
    old = set(server.wait_workers(2))
    server.wait_ready()
    errors: list[bytes] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            reply = server.request(b"x")
            if reply[0].startswith(b"ERROR"):
                errors.append(reply[0])

    thread = threading.Thread(target=load)
    thread.start()
    try:
        server.signal(signal.SIGHUP)
        wait_until(
            lambda: len(server.worker_pids()) == 2 and not set(server.worker_pids()) & old,
            20,
            "a new generation",
        )
    finally:
        stop.set()
        thread.join(20)
    assert errors == []
    assert int(server.request(b"x")[0]) not in old


def test_run_from_python_with_lambda(short_tmp):
    front = f"ipc://{short_tmp}/f"
    script = (
        "import zmqserver\n"
        f"zmqserver.run(frontend={front!r}, backend='ipc://{short_tmp}/b', min_servers=2,"
        " max_servers=10, app=lambda payload: payload[::-1])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(front)
        sock.send(b"abc")
        assert sock.poll(15_000)
        assert sock.recv_multipart() == [b"cba"]
    finally:
        sock.close()
        ctx.term()
        proc.terminate()
        try:
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            assert proc.stderr is not None
            proc.stderr.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_taken_tcp_port_is_a_clear_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "zmqserver",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                str(_free_port()),
                "--min-servers",
                "1",
            ],
            cwd=REPO,
            capture_output=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
    assert proc.returncode == 1
    assert b"cannot bind the frontend to tcp://127.0.0.1:" in proc.stderr


def test_bad_option_is_refused(start_server):
    proc = subprocess.run(
        [sys.executable, "-m", "zmqserver", "serve", "--min-servers", "5", "--max-servers", "2"],
        cwd=REPO,
        capture_output=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert b"max_servers (2) must be >= min_servers (5)" in proc.stderr
