"""A config is validated once per start, where it is built; the start-up takes it as checked.

The server's start-up is followed as far as it goes without forking: ``zmqserver.run`` and
``serve`` (the CLI's path, after the sources are layered) up to the supervisor's loop, which is
replaced by a stub.
"""

from __future__ import annotations

import dataclasses

import pytest

from zmqserver import server
from zmqserver.config import Config, sources, validate
from zmqserver.errors import ConfigError


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """The configs validation looked at, one entry per check (top level or one service)."""
    seen: list[Config] = []
    real = validate._check_server

    def counting(config: Config) -> None:
        seen.append(config)
        real(config)

    monkeypatch.setattr(validate, "_check_server", counting)
    return seen


@pytest.fixture
def no_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server.Master, "run", lambda self: 0)
    monkeypatch.setattr(server, "configure_logging", lambda config: None)


def test_run_with_options_validates_once(checked, no_fork):
    assert server.run(None, min_servers=1, max_servers=2) == 0
    assert len(checked) == 1


def test_run_with_a_config_validates_it_once(checked, no_fork):
    assert server.run(config=Config(min_servers=1, max_servers=2)) == 0
    assert len(checked) == 1


def test_the_cli_path_validates_once(checked, no_fork):
    loaded = sources.load({"min_servers": 1, "max_servers": 2}, {})
    assert server.serve(loaded.config) == 0
    assert len(checked) == 1


def test_each_service_is_validated_once(checked, no_fork):
    apps = {"a": "examples.echo:app", "b": {"app": "examples.upper:app", "min_servers": 2}}
    assert server.run(apps=apps, min_servers=1, max_servers=4) == 0
    # The top level, then each service with its own options.
    assert [c.service for c in checked] == ["default", "a", "b"]


def test_validate_again_is_free_but_a_changed_copy_is_checked(checked):
    config = Config(min_servers=1).validate()
    assert config.validate() is config
    assert len(checked) == 1
    with pytest.raises(ConfigError, match="max_servers"):
        dataclasses.replace(config, max_servers=0).validate()
    with pytest.raises(ConfigError, match="max_servers"):
        config.replace(max_servers=0).validate()


def test_an_invalid_config_still_fails_each_time():
    bad = Config(min_servers=0)
    for _ in range(2):
        with pytest.raises(ConfigError, match="min_servers: expected a positive integer"):
            bad.validate()
