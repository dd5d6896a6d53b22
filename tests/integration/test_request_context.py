"""``zmqserver.request()`` end to end: a real client over tcp 127.0.0.1 sees its own address,
request id and CURVE key reflected by an app that returns the request's fields.

The server runs ``tests.apps:context``, which answers with ``zmqserver.request()`` as JSON.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import zmq
from tests.helpers import ServerProcess, wait_until

from zmqserver import Client
from zmqserver.protocol import encode_client_request, parse_client_reply
from zmqserver.security import write_key_pair

APP = "tests.apps:context"


def _bound(server: ServerProcess) -> str:
    """The tcp endpoint a server bound to port 0 (its start-up line names it)."""
    pattern = re.compile(r"clients on (tcp://127\.0\.0\.1:\d+)")
    wait_until(lambda: pattern.search(server.log()), 15, "the clients' endpoint")
    match = pattern.search(server.log())
    assert match is not None
    return match.group(1)


def _tcp(start_server, *args: str, workers: int = 1) -> ServerProcess:
    server = start_server(APP, "--frontend", "tcp://127.0.0.1:0", *args, workers=workers)
    server.frontend = _bound(server)
    return server


@pytest.mark.parametrize("credit", ["1", "4"])
def test_client_sees_its_address_and_request_id(start_server, credit):
    """Both READY forms: credit 1 (asked for by the option alone) and credit > 1 (compact)."""
    server = _tcp(start_server, "--pass-client-info", "--worker-credit", credit)
    with Client(server.frontend, timeout=10, retries=1) as client:
        first = json.loads(client.request(b"who am i"))
        second = json.loads(client.request(b"again"))
    with Client(server.frontend, timeout=30, retries=1) as client:
        patient = json.loads(client.request(b"later"))
    assert first["client_address"] == "127.0.0.1"
    assert first["service"] == "default"
    assert first["attempt"] == 1
    assert first["client_key"] is None  # no CURVE, no pass_client_key
    assert isinstance(first["request_id"], int)
    assert second["request_id"] == (first["request_id"] + 1) % 2**64  # the client's own ids
    assert first["id"] != second["id"]
    assert len(first["id"]) == 16
    assert 0 <= first["deadline"] <= 10
    assert 20 <= patient["deadline"] <= 30


def test_plain_client_has_no_request_id_and_the_default_deadline(start_server):
    server = _tcp(start_server, "--pass-client-info", "--job-timeout", "40")
    reply = json.loads(server.request(b"plain")[0])
    assert (reply["client_address"], reply["request_id"]) == ("127.0.0.1", None)
    assert 35 <= reply["deadline"] <= 40


def test_without_the_option_the_app_still_has_its_job(start_server):
    server = _tcp(start_server)
    reply = json.loads(server.request(b"plain")[0])
    assert reply["client_address"] is None
    assert reply["attempt"] is None
    assert reply["deadline"] is None
    assert reply["request_id"] is None
    assert reply["service"] == "default"
    assert len(reply["id"]) == 16


def test_client_sees_its_curve_key_and_address(start_server, short_tmp: Path):
    folder = short_tmp / "keys"
    server_public, server_secret, _ = write_key_pair(folder, "server")
    alice_public, alice_secret, _ = write_key_pair(folder, "alice")
    clients = folder / "clients"
    clients.mkdir()
    (clients / "alice.key").write_bytes(alice_public.read_bytes())
    server = _tcp(
        start_server,
        "--pass-client-info",
        "--pass-client-key",
        "--curve-secret-key-file",
        str(server_secret),
        "--curve-client-keys-dir",
        str(clients),
    )
    public, _ = zmq.auth.load_certificate(alice_secret)
    with Client(
        server.frontend, server_key=server_public, client_key_file=alice_secret, timeout=10
    ) as client:
        reply = json.loads(client.request(b"x"))
    assert reply["client_key"] == public.decode()
    assert reply["client_address"] == "127.0.0.1"


def test_a_raw_mdp_worker_on_such_a_server_gets_no_info(start_server, ctx):
    """Backward compatible: a worker whose READY does not ask (any RFC 18 worker) gets plain
    REQUESTs on a server with pass_client_info."""
    server = start_server(
        APP,
        "--pass-client-info",
        "--remote-workers",
        "--backend",
        "tcp://127.0.0.1:0",
        "--unknown-service-wait",
        "5",
        workers=1,
    )
    match = re.compile(r"workers on (tcp://127\.0\.0\.1:\d+)")
    wait_until(lambda: match.search(server.log()), 15, "the workers' endpoint")
    found = match.search(server.log())
    assert found is not None
    worker = ctx.socket(zmq.DEALER)
    worker.setsockopt(zmq.LINGER, 0)
    worker.connect(found.group(1))
    worker.send_multipart([b"MDPW02", b"\x01", b"rfc"])
    client = server.socket(zmq.DEALER)
    client.send_multipart(encode_client_request(b"rfc", [b"payload"], request_id=5))
    assert worker.poll(10_000)
    request = worker.recv_multipart()
    assert request[:2] == [b"MDPW02", b"\x02"]
    assert request[3:] == [b"", b"payload"]
    worker.send_multipart([b"MDPW02", b"\x04", request[2], b"", b"ok"])
    assert client.poll(10_000)
    assert parse_client_reply(client.recv_multipart()).body == [b"ok"]
    worker.close()
    client.close()
