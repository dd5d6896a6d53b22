"""Config sources: TOML file, ZMQSERVER_* variables, CLI flags, and how they layer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from zmqserver.cli import build_parser
from zmqserver.config import Config
from zmqserver.config.sources import env_name, from_env, from_file, load
from zmqserver.errors import ConfigError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "zmqserver.toml"
    path.write_text(text)
    return str(path)


def flags(*argv: str) -> dict[str, object]:
    args = vars(build_parser().parse_args(["serve", *argv]))
    args.pop("command")
    args.pop("config_file", None)
    return args


# -- the file -------------------------------------------------------------------------------------


def test_file_sets_options_with_their_toml_types(tmp_path):
    path = write(
        tmp_path,
        'app = "examples.upper:app"\nport = [7000, 7001]\nmin_servers = 3\n'
        "graceful_timeout = 5\nbackground = false\numask = 0o027\n"
        'on_starting = "tests.apps:on_starting"\n',
    )
    config = load({}, {}, path).config
    assert config.app == "examples.upper:app"
    assert config.port == (7000, 7001)
    assert config.min_servers == 3
    assert config.graceful_timeout == 5  # an int is a fine number of seconds
    assert config.umask == 0o027
    assert config.on_starting == "tests.apps:on_starting"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_server = 3\n", "unknown option 'min_server' (did you mean 'min_servers'?)"),
        ("wat = 1\n", "unknown option 'wat'"),
        ("[zmqserver]\nmin_servers = 3\n", "unknown table 'zmqserver'"),
        ('min_servers = "3"\n', "min_servers: expected an integer, got '3'"),
        ("min_servers = 3.0\n", "min_servers: expected an integer, got 3.0"),
        ("background = 1\n", "background: expected true or false, got 1"),
        ('graceful_timeout = "soon"\n', "graceful_timeout: expected a number"),
        ("log_level = 3\n", "log_level: expected a string, got 3"),
        ("min_servers = \n", "not valid TOML"),
    ],
)
def test_file_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        from_file(path)
    assert message in str(err.value)
    assert path in str(err.value)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load({}, {}, str(tmp_path / "nope.toml"))


def test_config_path_from_environment_and_made_absolute(tmp_path, monkeypatch):
    write(tmp_path, "min_servers = 4\n")
    monkeypatch.chdir(tmp_path)
    loaded = load({}, {"ZMQSERVER_CONFIG": "zmqserver.toml"})
    assert loaded.config.min_servers == 4
    assert loaded.path == str(tmp_path / "zmqserver.toml")


# -- the environment ------------------------------------------------------------------------------


def test_every_option_has_an_environment_variable():
    names = {env_name(f.name) for f in dataclasses.fields(Config)}
    assert "ZMQSERVER_MIN_SPARE_SERVERS" in names
    assert "ZMQSERVER_ON_STARTING" in names


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("MIN_SERVERS", "7", 7),
        ("HEARTBEAT_INTERVAL", "0.5", 0.5),
        ("BACKGROUND", "yes", True),
        ("PRELOAD_APP", "0", False),
        ("RETRY_JOBS", "On", True),
        ("PORT", "7000 7001", (7000, 7001)),
        ("PORT", "7000,7001", (7000, 7001)),
        ("PORT", "7000", (7000, 7001)),
        ("UMASK", "027", 0o027),
        ("PID_FILE", "/run/zs.pid", "/run/zs.pid"),
        ("PID_FILE", "", None),
        ("APP", "examples.upper:app", "examples.upper:app"),
        ("MIN_SPARE_SERVERS", "0", 0),
    ],
)
def test_environment_values_are_parsed_by_type(name, text, value):
    config = load({}, {f"ZMQSERVER_{name}": text}).config
    assert getattr(config, name.lower()) == value


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("MIN_SERVERS", "five", "ZMQSERVER_MIN_SERVERS: expected a number (int), got 'five'"),
        ("BACKGROUND", "maybe", "ZMQSERVER_BACKGROUND: expected true or false"),
        ("UMASK", "999", "ZMQSERVER_UMASK: expected an octal number"),
        ("PORT", "x y", "ZMQSERVER_PORT: expected numbers"),
        ("MIN_SERVER", "3", "unknown option 'min_server' (did you mean 'min_servers'?)"),
    ],
)
def test_environment_errors_name_the_variable(name, text, message):
    with pytest.raises(ConfigError) as err:
        load({}, {f"ZMQSERVER_{name}": text})
    assert message in str(err.value)


def test_unrelated_prefixed_variables_are_only_warned_about():
    found = from_env({"ZMQSERVER_TEST_RUNS": "/tmp/x", "HOME": "/root", "ZMQSERVER_CONFIG": "f"})
    assert found.values == {}
    assert found.warnings == ["environment variable ZMQSERVER_TEST_RUNS is not an option; ignored"]


# -- layering -------------------------------------------------------------------------------------


def test_precedence_flags_over_environment_over_file_over_defaults(tmp_path):
    path = write(tmp_path, "min_servers = 3\nmax_servers = 30\nmax_requests = 100\n")
    env = {"ZMQSERVER_MAX_SERVERS": "20", "ZMQSERVER_MAX_REQUESTS": "200"}
    config = load(flags("--max-requests", "300"), env, path).config
    assert config.min_servers == 3  # file
    assert config.max_servers == 20  # environment over file
    assert config.max_requests == 300  # flag over both
    assert config.max_requests_jitter == 0  # default


def test_the_app_comes_from_the_file_unless_given_on_the_command_line(tmp_path):
    path = write(tmp_path, 'app = "examples.upper:app"\n')
    assert load(flags(), {}, path).config.app == "examples.upper:app"
    assert load(flags("tests.apps:pid"), {}, path).config.app == "tests.apps:pid"


def test_combinations_are_checked_after_layering(tmp_path):
    path = write(tmp_path, "min_servers = 8\n")
    with pytest.raises(ConfigError, match=r"max_servers \(4\) must be >= min_servers \(8\)"):
        load({}, {"ZMQSERVER_MAX_SERVERS": "4"}, path)


# -- the new flags --------------------------------------------------------------------------------


def test_process_flags_are_generated_from_the_schema():
    config = Config.from_mapping(
        flags(
            "--min-spare-servers",
            "1",
            "--max-spare-servers",
            "3",
            "--check-for-waiting",
            "2.5",
            "--umask",
            "027",
            "--background",
            "--user",
            "nobody",
            "--post-fork",
            "tests.apps:post_fork",
            "--max-worker-memory",
            "512",
        )
    )
    assert config.spare_servers == (1, 3)
    assert config.check_for_waiting == 2.5
    assert config.umask == 0o027
    assert config.background is True
    assert config.user == "nobody"
    assert config.post_fork == "tests.apps:post_fork"
    assert config.max_worker_memory == 512


# -- the scaling rules (Net::Server::PreFork's) ---------------------------------------------------


@pytest.mark.parametrize(
    ("options", "spares"),
    [
        ({}, (2, 10)),
        ({"min_servers": 1}, (1, 10)),
        ({"min_servers": 1, "max_servers": 1}, (0, 0)),
        ({"min_servers": 2, "max_servers": 4}, (2, 3)),
        ({"min_spare_servers": 5, "min_servers": 6, "max_servers": 8}, (5, 7)),
        ({"min_spare_servers": 0}, (0, 10)),
    ],
)
def test_unset_spare_counts_fit_the_bounds(options, spares):
    assert Config.from_mapping(options).spare_servers == spares


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_spare_servers": 50}, "max_spare_servers (50) must be < max_servers (50)"),
        ({"min_spare_servers": 6}, "min_spare_servers (6) must be <= min_servers (5)"),
        (
            {"min_spare_servers": 4, "max_spare_servers": 3},
            "min_spare_servers (4) must be <= max_spare_servers (3)",
        ),
        ({"min_spare_servers": -1}, "min_spare_servers: expected an integer >= 0"),
        ({"check_for_waiting": 0}, "check_for_waiting: expected a positive number"),
        ({"min_child_ttl": -1}, "min_child_ttl: expected a number of seconds >= 0"),
        ({"queue_wait_threshold": "1"}, "queue_wait_threshold: expected a number"),
        ({"umask": 0o1000}, "umask: 1000 is not a file mode mask"),
        ({"post_fork": "nocolon"}, "post_fork: expected 'module:callable'"),
        ({"on_exit": 42}, "on_exit: expected a string, got 42"),
    ],
)
def test_bad_combinations_are_refused_by_name(options, message):
    with pytest.raises(ConfigError) as err:
        Config.from_mapping(options)
    assert message in str(err.value)


def test_hooks_may_be_callables_from_python():
    def hook(config: Config) -> None:
        pass

    assert Config.from_mapping({"post_fork": hook}).post_fork is hook
