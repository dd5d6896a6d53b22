"""Configuration: validation errors name the option; the README table is generated."""

from __future__ import annotations

import pytest
from tests.helpers import REPO

from zmqserver.broker.state import REPLY_CACHE_BYTES, Limits
from zmqserver.cli import build_parser
from zmqserver.config import Config, options_table
from zmqserver.errors import ConfigError
from zmqserver.scaling import Policy


def test_defaults_match_the_seed():
    config = Config().validate()
    assert config.port == (6660, 6661)
    assert config.frontend_endpoint == "tcp://*:6660"
    assert config.backend_endpoint == "tcp://*:6661"
    assert config.min_servers == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_servers": 0}, "min_servers"),
        ({"min_servers": 5, "max_servers": 2}, "max_servers (2) must be >= min_servers (5)"),
        ({"port": (1, 1)}, "must differ"),
        ({"port": (0, 5)}, "not a TCP port"),
        ({"port": "6660"}, "port"),
        ({"min_servers": "5"}, "min_servers: expected an integer"),
        ({"min_servers": True}, "min_servers"),
        ({"heartbeat_interval": 0}, "heartbeat_interval"),
        ({"log_level": "loud"}, "log_level"),
        ({"service": "mmi.x"}, "reserved"),
        ({"frontend": "localhost:5"}, "not a ZeroMQ endpoint"),
        ({"no_such_option": 1}, "unknown option 'no_such_option'"),
        ({"app": 42}, "app"),
        ({"worker_credit": 0}, "worker_credit"),
        ({"prefetch_below": -1}, "prefetch_below"),
        ({"worker_credit": 65}, "worker_credit: at most 64"),
        ({"services": {"a": {"worker_credit": 100}}}, "services.a: worker_credit"),
    ],
)
def test_bad_options_are_refused_by_name(options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config.from_mapping(options)


def test_port_accepts_list_and_single_int():
    assert Config.from_mapping({"port": [7000, 7001]}).port == (7000, 7001)
    assert Config.from_mapping({"port": 7000}).port == (7000, 7001)


def test_cli_flags_come_from_the_fields():
    args = vars(
        build_parser().parse_args(
            [
                "serve",
                "examples.upper:app",
                "--port",
                "7000",
                "7001",
                "--min-servers",
                "3",
                "--heartbeat-interval",
                "0.5",
            ]
        )
    )
    args.pop("command")
    config = Config.from_mapping(args)
    assert config.app == "examples.upper:app"
    assert config.port == (7000, 7001)
    assert config.min_servers == 3
    assert config.heartbeat_interval == 0.5


def test_readme_options_table_is_current():
    readme = (REPO / "README.md").read_text()
    assert options_table() in readme, (
        "README.md's options table is stale; regenerate it with "
        "python -c 'from zmqserver.config import options_table; print(options_table())'"
    )


def test_worker_credit_and_the_prefetch_gate_have_defaults_and_may_differ_per_service():
    assert Config().worker_credit == 16
    assert Config().prefetch_below == 0.001
    config = Config.from_mapping(
        {"worker_credit": 4, "services": {"a": "x:app", "b": {"app": "y:app", "worker_credit": 2}}}
    )
    assert {name: c.worker_credit for name, c in config.service_configs().items()} == {
        "a": 4,
        "b": 2,
    }


def test_limits_and_policy_take_the_schemas_defaults():
    """Limits and Policy have no defaults of their own: a server's are the schema's."""
    config = Config()
    limits = Limits.from_config(config)
    for name in (
        "job_timeout",
        "kill_grace",
        "retry_jobs",
        "max_attempts",
        "max_queue",
        "max_queue_bytes",
        "max_message_size",
        "max_frames",
        "reply_cache",
        "worker_credit",
        "prefetch_below",
    ):
        assert getattr(limits, name) == getattr(config, name), name
    assert limits.reply_cache_bytes == REPLY_CACHE_BYTES  # not an option
    assert (limits.job_timeout, limits.max_queue) == (60.0, 10000)
    policy = Policy.from_config(config)
    assert (policy.min_spare_servers, policy.max_spare_servers) == config.spare_servers == (2, 10)
    for name in (
        "min_servers",
        "max_servers",
        "check_for_waiting",
        "check_for_spawn",
        "min_child_ttl",
        "queue_wait_threshold",
    ):
        assert getattr(policy, name) == getattr(config, name), name
    assert policy.queue_wait_threshold == 1.0
    for kind in (Limits, Policy):
        with pytest.raises(TypeError, match="missing"):
            kind()  # type: ignore[call-arg]
