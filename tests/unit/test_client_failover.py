"""A client with several endpoints: which one it uses and when it moves (client/failover.py),
without sockets; and the endpoint arguments the drivers and zmq-client accept."""

from __future__ import annotations

import argparse

import pytest

from zmqserver.client.cli import endpoint_arg
from zmqserver.client.failover import Endpoints, split_endpoints
from zmqserver.client.options import ClientOptions

T = 2.0


def test_one_endpoint_never_moves() -> None:
    ends = Endpoints(["tcp://a:1"])
    assert not ends.on_timeout(100.0, T)
    assert ends.current == "tcp://a:1"


def test_a_timeout_moves_to_the_next_and_round() -> None:
    ends = Endpoints(["tcp://a:1", "tcp://b:1"])
    assert ends.current == "tcp://a:1"
    assert ends.on_timeout(10.0, T)
    assert ends.current == "tcp://b:1"
    assert ends.on_timeout(12.0, T)  # the attempt sent at the move timed out in turn
    assert ends.current == "tcp://a:1"
    assert ends.moves == 2


def test_attempts_sent_before_the_move_do_not_move_again() -> None:
    """A pipelined client: requests sent to the old server expire one after another within a
    timeout of the move; they resend to the new one without bouncing back."""
    ends = Endpoints(["tcp://a:1", "tcp://b:1"])
    assert ends.on_timeout(10.0, T)
    for now in (10.0, 10.5, 11.99):
        assert not ends.on_timeout(now, T)
    assert ends.current == "tcp://b:1"


def test_split_endpoints() -> None:
    assert split_endpoints("tcp://a:1") == ("tcp://a:1",)
    assert split_endpoints("tcp://a:1, tcp://b:1") == ("tcp://a:1", "tcp://b:1")
    assert split_endpoints(["tcp://a:1", "ipc:///x"]) == ("tcp://a:1", "ipc:///x")
    for bad in ("", "tcp://a:1,", [], ["tcp://a:1", ""]):
        with pytest.raises(ValueError, match="one or more"):
            split_endpoints(bad)
    with pytest.raises(TypeError):
        split_endpoints([b"tcp://a:1"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one"):
        Endpoints([])


def test_options_keep_every_endpoint_and_name_them_in_errors() -> None:
    options = ClientOptions.from_arguments(["tcp://a:1", "tcp://b:1"], service="s")
    assert options.endpoint == "tcp://a:1"
    assert options.endpoints == ("tcp://a:1", "tcp://b:1")
    assert options.peer == "tcp://a:1 or tcp://b:1 (service 's')"
    assert options.failover().all == options.endpoints


def test_zmq_client_endpoint_argument() -> None:
    assert endpoint_arg("a:1,tcp://b:2") == "tcp://a:1,tcp://b:2"
    assert endpoint_arg("ipc:///x") == "ipc:///x"
    with pytest.raises(argparse.ArgumentTypeError):
        endpoint_arg("a:1,nonsense")
