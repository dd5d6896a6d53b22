"""The one argument check and socket set-up that Client and AsyncClient share, with no sockets.

Both constructors go through :class:`ClientOptions`; the first tests here hold them to that by
giving each the same bad arguments and expecting the same error (what ``Client`` raised before
the two shared any code). Every case fails before a socket or an event loop is needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import zmq

from zmqserver.client import AsyncClient, Client
from zmqserver.client.options import ClientOptions, new_identity
from zmqserver.client.state import RequestIds
from zmqserver.errors import ConfigError
from zmqserver.protocol import FLAG_RETRYABLE

BAD_ARGUMENTS = [
    pytest.param({"timeout": 0}, ValueError, "timeout", id="timeout-zero"),
    pytest.param({"timeout": -1}, ValueError, "timeout", id="timeout-negative-int"),
    pytest.param({"timeout": -1.0}, ValueError, "timeout", id="timeout-negative"),
    pytest.param({"timeout": math.nan}, ValueError, "timeout", id="timeout-nan"),
    pytest.param({"timeout": math.inf}, ValueError, "timeout", id="timeout-inf"),
    pytest.param({"retries": 0}, ValueError, "retries", id="retries-zero"),
    pytest.param({"retries": -3}, ValueError, "retries", id="retries-negative"),
    pytest.param({"service": "s" * 256}, ValueError, "255", id="service-too-long"),
    pytest.param({"service": b"s" * 256}, ValueError, "255", id="service-bytes-too-long"),
    pytest.param(
        {"client_key_file": "alice.key_secret"}, ConfigError, "needs server_key", id="key-alone"
    ),
    pytest.param(
        {"server_key": b"too short"}, ConfigError, "got bytes", id="server-key-short-bytes"
    ),
    pytest.param({"server_key": "~" * 40}, ConfigError, "outside Z85", id="server-key-not-z85"),
    pytest.param(
        {"server_key": Path("/nonexistent/server.key")},
        ConfigError,
        "does not exist",
        id="server-key-missing-file",
    ),
    # The order of the checks is part of the contract: policy, then keys, then the service.
    pytest.param(
        {"timeout": 0, "client_key_file": "alice.key_secret"},
        ValueError,
        "timeout",
        id="order-policy-before-keys",
    ),
    pytest.param(
        {"service": "s" * 256, "client_key_file": "alice.key_secret"},
        ConfigError,
        "needs server_key",
        id="order-keys-before-service",
    ),
]


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_ARGUMENTS)
def test_both_clients_refuse_the_same_arguments_alike(
    client_class: type[Any], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        client_class("tcp://127.0.0.1:1", **kwargs)


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_ARGUMENTS)
def test_both_clients_give_the_same_message(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    messages = []
    for client_class in (Client, AsyncClient):
        with pytest.raises(error) as info:
            client_class("tcp://127.0.0.1:1", **kwargs)
        messages.append((type(info.value), str(info.value)))
    assert messages[0] == messages[1]


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_ARGUMENTS)
def test_options_refuse_what_the_clients_refuse(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ClientOptions.from_arguments("tcp://127.0.0.1:1", **kwargs)


def test_options_keep_what_they_were_given() -> None:
    options = ClientOptions.from_arguments("tcp://h:1", service="echo", timeout=2.5, retries=4)
    assert (options.endpoint, options.service, options.timeout, options.retries) == (
        "tcp://h:1",
        b"echo",
        2.5,
        4,
    )
    assert options.curve is None
    assert options.peer == "tcp://h:1 (service 'echo')"
    assert ClientOptions.from_arguments("tcp://h:1").peer == "tcp://h:1"


def test_curve_credentials_come_from_security() -> None:
    public, _ = zmq.curve_keypair()
    options = ClientOptions.from_arguments("tcp://h:1", server_key=public.decode())
    assert options.curve is not None
    assert options.curve.server_key == public


def test_only_a_client_that_resends_marks_its_requests_retryable() -> None:
    assert ClientOptions.from_arguments("tcp://h:1", retries=2).flags == FLAG_RETRYABLE
    assert ClientOptions.from_arguments("tcp://h:1", retries=1).flags == 0


def test_identity_is_random_and_never_starts_with_a_zero_byte() -> None:
    identities = {new_identity() for _ in range(100)}
    assert len(identities) == 100
    assert all(len(identity) == 16 and identity[0] != 0 for identity in identities)
    first = ClientOptions.from_arguments("tcp://h:1")
    second = ClientOptions.from_arguments("tcp://h:1")
    assert first.identity != second.identity


def test_pipeline_takes_the_options_and_the_given_ids() -> None:
    options = ClientOptions.from_arguments("tcp://h:1", service=b"s", timeout=3.0, retries=1)
    pipeline = options.pipeline(RequestIds(7))
    assert (pipeline.service, pipeline.timeout, pipeline.retries) == (b"s", 3.0, 1)
    assert (pipeline.flags, pipeline.peer) == (0, "tcp://h:1 (service 's')")
    assert pipeline.submit([b"job"], 0.0)[0] == 7


class FakeSocket:
    """Records what set-up does to a socket, in order; connect fails if told to."""

    def __init__(self, fail_connect: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_connect = fail_connect

    def setsockopt(self, option: int, value: Any) -> None:
        self.calls.append(("setsockopt", (option, value)))

    def connect(self, endpoint: str) -> None:
        self.calls.append(("connect", endpoint))
        if self.fail_connect:
            raise zmq.ZMQError(zmq.EPROTONOSUPPORT)

    def close(self, linger: int | None = None) -> None:
        self.calls.append(("close", linger))


def test_setup_sets_every_option_before_connecting() -> None:
    public, _ = zmq.curve_keypair()
    options = ClientOptions.from_arguments("tcp://h:1", server_key=public.decode())
    socket = FakeSocket()
    assert options.setup(socket) is socket  # type: ignore[type-var]
    names = [call[0] for call in socket.calls]
    assert names[-1] == "connect"
    assert "connect" not in names[:-1]
    options_set = dict(call[1] for call in socket.calls[:-1])
    assert options_set[zmq.LINGER] == 0
    assert options_set[zmq.ROUTING_ID] == options.identity
    assert options_set[zmq.CURVE_SERVERKEY] == public
    assert zmq.CURVE_SECRETKEY in options_set


def test_setup_closes_the_socket_and_names_the_endpoint_when_connect_fails() -> None:
    options = ClientOptions.from_arguments("no-such-transport://x")
    socket = FakeSocket(fail_connect=True)
    with pytest.raises(ValueError, match="cannot connect to 'no-such-transport://x'"):
        options.setup(socket)  # type: ignore[type-var]
    assert socket.calls[-1] == ("close", 0)
