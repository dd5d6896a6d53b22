"""``zmq-client`` for a first user: ``HOST:PORT`` endpoints, and why a request timed out."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from tests.helpers import REPO

# The same whichever build of the broker runs: make test runs it once (pyproject's markers).
pytestmark = [pytest.mark.timeout(60), pytest.mark.compiled_pass]


def _client(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from zmqserver.cli import client_main; raise SystemExit("
         "client_main())", *argv],
        cwd=REPO, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_host_port_without_a_scheme_is_tcp_and_a_dead_server_is_named():
    port = _free_port()
    proc = _client("-e", f"127.0.0.1:{port}", "-t", "0.3", "-r", "1", "hi")
    assert proc.returncode == 2
    assert f"no reply from tcp://127.0.0.1:{port}" in proc.stderr
    assert "nothing accepts connections" in proc.stderr


def test_a_malformed_endpoint_is_a_short_usage_error():
    proc = _client("-e", "nohost", "hi")
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 2
    assert "'nohost' is not an endpoint" in proc.stderr


def test_a_refused_handshake_and_an_oversize_payload_are_hinted(start_server, short_tmp):
    from zmqserver.security import write_key_pair

    _, secret, _ = write_key_pair(short_tmp, "server")
    port = _free_port()
    start_server(
        "examples.upper:app", "--frontend", f"tcp://127.0.0.1:{port}",
        "--curve-secret-key-file", str(secret), "--curve-allow-any",
        "--max-message-size", "100", workers=1,
    )  # fmt: skip
    plain = _client("-e", f"127.0.0.1:{port}", "-t", "1", "-r", "1", "hi")
    assert plain.returncode == 2
    assert "refused the handshake: does it use CURVE?" in plain.stderr
    key = str(short_tmp / "server.key")
    ok = _client("-e", f"127.0.0.1:{port}", "-t", "5", "--server-key", key, "hi")
    assert ok.returncode == 0, ok.stderr
    big = _client(
        "-e", f"127.0.0.1:{port}", "-t", "1", "-r", "1", "--server-key", key, "x" * 100_000
    )  # fmt: skip
    assert big.returncode == 2
    assert "the payload (100000 bytes) is over the server's max_message_size" in big.stderr
