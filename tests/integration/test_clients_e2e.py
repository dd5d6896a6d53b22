"""The client library and the zmq-client command against a real server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tests.helpers import REPO

import zmqserver

# The same whichever build of the broker runs: make test runs it once (pyproject's markers).
pytestmark = [pytest.mark.timeout(60), pytest.mark.compiled_pass]


def test_client_library_round_trip_and_errors(start_server):
    server = start_server("tests.apps:fail", workers=2)
    with zmqserver.Client(server.frontend, timeout=10, retries=1) as client:
        assert client.request(b"hello") == b"hello"
        assert client.request("text") == b"text"
        with pytest.raises(zmqserver.AppError, match="ValueError: boom requested") as info:
            client.request(b"boom")
        assert info.value.status is zmqserver.Status.APP_ERROR
        assert client.request(b"still serving") == b"still serving"


def test_client_library_multi_frame_and_stream(start_server):
    server = start_server("tests.apps:frames", workers=1)
    with zmqserver.Client(server.frontend, timeout=10) as client:
        assert client.request([b"a", "b"]) == [b"list", b"a", b"b"]
    streamer = start_server("tests.apps:stream", workers=1)
    with zmqserver.Client(streamer.frontend, timeout=10) as client:
        assert list(client.stream(b"xyz")) == [b"x", b"y", b"z"]
        assert client.request(b"ab") == [b"a", b"b"]


def test_client_unknown_service(start_server):
    server = start_server("examples.upper:app", "--unknown-service-wait", "0.5", workers=1)
    with (
        zmqserver.Client(server.frontend, service="nope", timeout=10, retries=1) as client,
        pytest.raises(zmqserver.UnknownService, match="nope"),
    ):
        client.request(b"x")
    with zmqserver.Client(server.frontend, service="default", timeout=10) as client:
        assert client.request(b"named") == b"NAMED"


def test_client_worker_lost(start_server):
    server = start_server("tests.apps:crash", workers=1)
    with (
        zmqserver.Client(server.frontend, timeout=10, retries=1) as client,
        pytest.raises(zmqserver.WorkerLost),
    ):
        client.request(b"die")


def test_client_times_out_against_no_server(short_tmp):
    with (
        zmqserver.Client(f"ipc://{short_tmp}/nobody", timeout=0.2, retries=2) as client,
        pytest.raises(zmqserver.RequestTimeout),
    ):
        client.request(b"anyone?")


def _zmq_client(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from zmqserver.cli import client_main; raise SystemExit(client_main())",
            *args,
        ],
        input=stdin,
        capture_output=True,
        timeout=30,
        env=env,
        cwd=REPO,
    )


def test_zmq_client_command(start_server):
    server = start_server("examples.upper:app", workers=1)
    proc = _zmq_client("-e", server.frontend, "-t", "10", "hello", "world")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"HELLO\nWORLD\n"
    proc = _zmq_client("-e", server.frontend, "-t", "10", stdin=b"from stdin")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"FROM STDIN\n"


def test_zmq_client_command_errors(start_server, short_tmp):
    server = start_server("tests.apps:fail", workers=1)
    proc = _zmq_client("-e", server.frontend, "-t", "10", "boom")
    assert proc.returncode == 1
    assert proc.stderr.decode().strip().startswith("zmq-client: app_error:")
    assert len(proc.stderr.decode().strip().splitlines()) == 1
    proc = _zmq_client("-e", f"ipc://{short_tmp}/nobody", "-t", "0.2", "-r", "1", "x")
    assert proc.returncode == 2
    # The timeout, then what a watched connection met: nothing listening there.
    timeout, hint = proc.stderr.decode().strip().splitlines()
    assert timeout.startswith("zmq-client: timeout:")
    assert "nothing accepts connections" in hint


def test_sync_submit_and_map_pipeline_over_one_socket(start_server):
    server = start_server("examples.upper:app", workers=3)
    with zmqserver.Client(server.frontend, timeout=10) as client:
        futures = [client.submit(b"f%d" % i) for i in range(20)]
        # request() while submissions are in flight waits alongside them on the same socket.
        assert client.request(b"mid") == b"MID"
        assert [f.result() for f in futures] == [b"F%d" % i for i in range(20)]
        assert client.map([b"m%d" % i for i in range(100)], window=8) == [
            b"M%d" % i for i in range(100)
        ]


def test_sync_map_raises_errors_and_close_fails_pending(start_server):
    server = start_server("tests.apps:fail", workers=2)
    client = zmqserver.Client(server.frontend, timeout=10, retries=1)
    with pytest.raises(zmqserver.AppError):
        client.map([b"ok", b"boom", b"ok"])
    pending = client.submit(b"never read")
    client.close()
    with pytest.raises(zmqserver.Closed):
        pending.result()
