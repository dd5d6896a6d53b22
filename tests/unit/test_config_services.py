"""Several services in one config, and the remote pool's options: every source, every error."""

from __future__ import annotations

from pathlib import Path

import pytest

from zmqserver.cli import parse
from zmqserver.config import Config, ServiceSpec, options_table, parse_services
from zmqserver.config.sources import load
from zmqserver.errors import ConfigError


def upper(payload: bytes) -> bytes:
    return payload.upper()


def options(*argv: str) -> dict[str, object]:
    args = parse(["serve", *argv])
    args.pop("command")
    return args


# -- the forms of `services` ----------------------------------------------------------------------


def test_every_source_spells_services_its_own_way_and_means_the_same():
    expected = (
        ServiceSpec("echo", (("app", "examples.echo:app"),)),
        ServiceSpec("upper", (("app", "examples.upper:app"), ("min_servers", 3))),
    )
    assert (
        parse_services(
            {"echo": "examples.echo:app", "upper": {"app": "examples.upper:app", "min_servers": 3}}
        )
        == expected
    )
    listed = parse_services(["echo=examples.echo:app", "upper=examples.upper:app"])
    assert [s.name for s in listed] == ["echo", "upper"]
    assert parse_services(expected) == expected
    assert parse_services({"f": upper}) == (ServiceSpec("f", (("app", upper),)),)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"mmi.x": "a:b"}, "reserved"),
        ({"": "a:b"}, "reserved"),
        ({"a b": "a:b"}, "not a service name"),
        ({"x" * 256: "a:b"}, "at most 255 bytes"),
        ({"s": {"port": 7000}}, "services.s: 'port' is an option that applies to all services"),
        ({"s": {"min_server": 1}}, "services.s: 'min_server' is an unknown option"),
        ({"s": {"min_servers": "3"}}, "services.s: min_servers: expected an integer, got '3'"),
        (["echo"], "expected NAME=module:callable, got 'echo'"),
        (["a=x:app", "a=y:app"], "'a' is given twice"),
        ("a=x:app", "expected a table of services"),
    ],
)
def test_bad_services_are_refused_by_name(value, message):
    with pytest.raises(ConfigError) as err:
        parse_services(value)
    assert message in str(err.value)


# -- what each service runs with ------------------------------------------------------------------


def test_a_service_is_the_top_level_options_with_its_own_overrides():
    config = Config.from_mapping(
        {
            "app": "examples.echo:app",
            "min_servers": 2,
            "max_requests": 100,
            "job_timeout": 9.0,
            "services": {
                "echo": {},
                "upper": {"app": "examples.upper:app", "min_servers": 4, "job_timeout": 1.5},
            },
        }
    )
    echo, upper_ = config.service_configs().values()
    assert (echo.service, echo.app, echo.min_servers, echo.job_timeout) == (
        "echo",
        "examples.echo:app",
        2,
        9.0,
    )
    assert (upper_.service, upper_.app, upper_.min_servers, upper_.job_timeout) == (
        "upper",
        "examples.upper:app",
        4,
        1.5,
    )
    assert upper_.max_requests == 100
    assert upper_.services == () == echo.services
    assert config.default_service_name == "echo"


def test_one_app_is_one_service_named_by_the_service_option():
    config = Config.from_mapping({"app": "examples.upper:app", "service": "upper"})
    assert config.service_configs() == {"upper": config}
    assert config.default_service_name == "upper"


def test_default_service_may_name_any_service_even_a_remote_one():
    config = Config.from_mapping({"services": ["a=x:app", "b=y:app"], "default_service": "b"})
    assert config.default_service_name == "b"
    remote = Config.from_mapping({"default_service": "gpu", "remote_workers": True})
    assert remote.default_service_name == "gpu"
    with pytest.raises(ConfigError, match="default_service"):
        Config.from_mapping({"default_service": "mmi.service"})


def test_a_combination_that_is_wrong_for_one_service_names_it():
    with pytest.raises(ConfigError) as err:
        Config.from_mapping({"max_servers": 4, "services": {"big": {"min_servers": 8}}})
    assert str(err.value) == "services.big: max_servers (4) must be >= min_servers (8)"


# -- sources --------------------------------------------------------------------------------------


def test_toml_service_tables(tmp_path: Path):
    path = tmp_path / "zmqserver.toml"
    path.write_text(
        'default_service = "upper"\nmin_servers = 2\n\n'
        '[services.echo]\napp = "examples.echo:app"\n\n'
        '[services.upper]\napp = "examples.upper:app"\nmin_servers = 3\nmax_queue = 5\n'
    )
    config = load({}, {}, str(path)).config
    services = config.service_configs()
    assert list(services) == ["echo", "upper"]
    assert (services["echo"].min_servers, services["upper"].min_servers) == (2, 3)
    assert services["upper"].max_queue == 5
    assert config.default_service_name == "upper"


def test_toml_service_errors_name_the_file_and_the_service(tmp_path: Path):
    path = tmp_path / "zmqserver.toml"
    path.write_text('[services.upper]\napp = "examples.upper:app"\nmin_servers = "3"\n')
    with pytest.raises(ConfigError) as err:
        load({}, {}, str(path))
    assert str(err.value) == (f"{path}: services.upper: min_servers: expected an integer, got '3'")


def test_environment_and_flags_replace_the_files_services(tmp_path: Path):
    path = tmp_path / "zmqserver.toml"
    path.write_text('[services.a]\napp = "x:app"\n')
    env = {"ZMQSERVER_SERVICES": "b=y:app, c=z:app"}
    assert [s.name for s in load({}, env, str(path)).config.services] == ["b", "c"]
    flags = options("d=w:app")
    assert [s.name for s in load(flags, env, str(path)).config.services] == ["d"]


def test_the_command_line_takes_one_app_or_named_services_in_any_order():
    assert options("examples.upper:app") == {"app": "examples.upper:app"}
    assert options("a=x:app", "--min-servers", "2", "b=y:app") == {
        "services": ["a=x:app", "b=y:app"],
        "min_servers": 2,
    }
    with pytest.raises(SystemExit):
        options("a=x:app", "y:app")


def test_the_worker_command_has_the_pool_options_and_not_the_brokers(capsys):
    assert parse(["worker", "--connect", "tcp://b:6661", "--min-servers", "4"]) == {
        "command": "worker",
        "connect": "tcp://b:6661",
        "min_servers": 4,
    }
    for broker_only in ("--port", "--frontend", "--job-timeout", "--curve-secret-key-file"):
        with pytest.raises(SystemExit):
            parse(["worker", broker_only, "1"])
    with pytest.raises(SystemExit):
        parse(["serve", "--connect", "tcp://b:6661"])
    capsys.readouterr()


def test_pool_options_are_checked():
    for endpoint in ("broker:6661", "tcp://broker", "tcp://broker:x", "tcp://:6661", "tcp://b:0"):
        with pytest.raises(ConfigError, match="is not a ZeroMQ endpoint"):
            Config.from_mapping({"connect": endpoint})
    for endpoint in ("tcp://[::1]:6661", "tcp://broker.example.org:6661", "ipc:///run/b"):
        assert Config.from_mapping({"connect": endpoint}).connect == endpoint
    with pytest.raises(ConfigError, match="key_file needs server_key"):
        Config.from_mapping({"connect": "tcp://b:1", "key_file": "pool.key_secret"})


def test_options_table_says_which_options_a_service_may_set_and_which_command_has_them():
    table = options_table()
    assert "| `min_servers` | `--min-servers` | `5` | reloads | yes |" in table
    assert "| `port` | `--port` (serve only) | `6660 6661` | restart |  |" in table
    assert "| `connect` | `--connect` (worker only) |" in table
    assert "| `services` | NAME=APP | `[]` | reloads |  |" in table


def test_top_level_values_every_service_overrides_are_not_held_against_the_config():
    # max_servers = 4 with the default min_servers (5) would be refused on its own; here each
    # service sets its own min_servers, which is what runs.
    config = Config.from_mapping({"max_servers": 4, "services": {"a": {"min_servers": 2}}})
    assert config.service_configs()["a"].min_servers == 2
