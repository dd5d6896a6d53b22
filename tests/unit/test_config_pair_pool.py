"""A remote pool of a Binary Star pair: ``connect`` names several brokers (docs/ha.md), from
every source, and one endpoint stays what it was."""

from __future__ import annotations

import pytest

from zmqserver.cli import parse
from zmqserver.config.sources import load
from zmqserver.config.validate import split_endpoints
from zmqserver.errors import ConfigError

A, B = "tcp://10.0.0.1:6661", "tcp://10.0.0.2:6661"


def config_of(argv: list[str], env: dict[str, str] | None = None, path: str | None = None):
    args = parse(["worker", *argv])
    args.pop("command")
    return load(args, env or {}, path).config


def test_one_connect_is_kept_as_given():
    assert config_of(["--connect", A]).connect == A
    assert split_endpoints(A) == [A]


def test_connect_repeated_names_both_brokers_in_order():
    config = config_of(["--connect", A, "--connect", B])
    assert split_endpoints(config.connect) == [A, B]


def test_connect_from_a_toml_list_and_from_the_environment(tmp_path):
    path = tmp_path / "pool.toml"
    path.write_text(f'connect = ["{A}", "{B}"]\n')
    assert split_endpoints(config_of([], path=str(path)).connect) == [A, B]
    env = {"ZMQSERVER_CONNECT": f"{A}, {B}"}
    assert split_endpoints(config_of([], env).connect) == [A, B]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--connect", A, "--connect", A], "names the same broker twice"),
        (["--connect", A, "--connect", "tcp://nowhere"], "is not a ZeroMQ endpoint"),
        (["--connect", ","], "no endpoint given"),
    ],
)
def test_bad_pairs_are_refused_by_name(argv, message):
    with pytest.raises(ConfigError, match=message):
        config_of(argv)


def test_a_toml_list_of_non_strings_is_refused(tmp_path):
    path = tmp_path / "pool.toml"
    path.write_text("connect = [1, 2]\n")
    with pytest.raises(ConfigError, match="connect: expected endpoints"):
        config_of([], path=str(path))
