"""Config validation: is this combination of options one a server can run with?

Rule 1: a :class:`~.schema.Config` is checked once, where it is built from its sources
(:meth:`Config.from_mapping`, used by the CLI/file/environment loader and by ``zmqserver.run``),
or by an explicit :meth:`Config.validate`; the result is remembered on the config, so the
supervisor, the server start-up and the security driver take a checked config and check nothing
again. Each check here is pure: it reads option values, never a file or a socket (the key files
are read by zmqserver.security when the server starts).

The security options' checks live here too, not in zmqserver.security: they are checks of a
config, and they use security's pure address parsers (security/policy.py), so the dependency
runs one way, config -> security.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..protocol import MAX_CREDIT
from ..security.policy import AddressPolicy

if TYPE_CHECKING:
    from .schema import Config

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
PLAIN_ERRORS = ("inband", "drop")
#: pubsub_job_events: which jobs have an event of their own (pubsub/events.py).
PUBSUB_JOB_EVENTS = ("none", "sample", "all")

#: Longest service name: MDP carries it in one frame, which RFC 7 and 18 bound to 255 bytes.
MAX_SERVICE_NAME = 255

#: The lowest max_frames but 0: a request's envelope alone takes up to 5 frames (protocol.md
#: §3), so a lower limit would refuse every request, or cut one inside its header.
MIN_FRAMES = 8


def check(config: Config) -> dict[str, Config]:
    """Check ``config``; return each service's own complete options, each checked in turn.

    The options a service may set are checked as each service runs with them (its own values
    over the top level's), so a top-level default that every service overrides cannot make a
    valid config fail; an error in one names the service. Each returned config has no
    ``services`` of its own, so a worker or a pool needs only its config.
    """
    _check_server(config)
    if config.reload and config.preload_app:
        raise ConfigError(
            "reload and preload_app: with preload_app the master holds the app and a reload "
            "does not import it again; drop one"
        )
    if not config.services:
        _check_service(config)
        return {config.service: config}
    configs = {}
    for spec in config.services:
        try:
            configs[spec.name] = dataclasses.replace(
                config, services=(), service=spec.name, **spec.settings
            ).validate()
        except ConfigError as exc:
            raise ConfigError(f"services.{spec.name}: {exc}") from None
    return configs


def check_service_name(what: str, name: object) -> None:
    if not isinstance(name, str) or not name or name.startswith("mmi."):
        raise ConfigError(f"{what}: {name!r} is empty or reserved (mmi.*)")
    if len(name.encode()) > MAX_SERVICE_NAME or not name.isprintable() or " " in name:
        raise ConfigError(
            f"{what}: {name!r} is not a service name (printable, no spaces, at most "
            f"{MAX_SERVICE_NAME} bytes)"
        )


def split_endpoints(connect: str) -> list[str]:
    """The brokers a remote pool connects to: ``connect`` is one endpoint, or a pair's
    (several, comma-separated: a ZeroMQ endpoint has no comma)."""
    return [endpoint.strip() for endpoint in connect.split(",") if endpoint.strip()]


def _check_pool(config: Config) -> None:
    """The remote pool's options (``zmqserver worker``)."""
    endpoints = split_endpoints(config.connect) if config.connect is not None else []
    if config.connect is not None and not endpoints:
        raise ConfigError("connect: no endpoint given (expected tcp://host:port)")
    if len(set(endpoints)) != len(endpoints):
        raise ConfigError(f"connect: {config.connect!r} names the same broker twice")
    for connect in endpoints:
        # Checked here, in the master: an endpoint libzmq refuses would make every worker fail
        # in connect() and be replaced, over and over.
        transport, sep, address = connect.partition("://")
        host, colon, port = address.rpartition(":")
        if not sep or (
            transport == "tcp" and not (host and colon and port.isdigit() and 0 < int(port) < 65536)
        ):
            raise ConfigError(
                f"connect: {connect!r} is not a ZeroMQ endpoint (expected tcp://host:port)"
            )
    if config.key_file is not None and config.server_key is None:
        raise ConfigError("key_file needs server_key (the broker backend's public key)")


def _positive_int(config: Config, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: expected a positive integer, got {value!r}")


def _nonnegative_int(config: Config, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name}: expected an integer >= 0, got {value!r}")


def _check_observability(config: Config) -> None:
    """The control endpoint, the metrics port (docs/operations.md)."""
    endpoint = config.control_endpoint
    if endpoint is not None:
        transport = endpoint.partition("://")[0]
        if transport not in ("ipc", "tcp"):
            raise ConfigError(
                f"control_endpoint: expected ipc://PATH or tcp://HOST:PORT, got {endpoint!r}"
            )
        if transport == "tcp" and (
            config.curve_secret_key_file is None or config.control_keys_dir is None
        ):
            raise ConfigError(
                "control_endpoint: a tcp:// control endpoint speaks CURVE only: give "
                "curve_secret_key_file (the server's keys) and control_keys_dir (who may connect)"
            )
    port = config.metrics_port
    if port is not None and (isinstance(port, bool) or not 0 <= port < 65536):
        raise ConfigError(f"metrics_port: {port} is not a TCP port number (0-65535)")


def _check_server(config: Config) -> None:
    """The options that apply to the whole server (or pool), whatever its services."""
    port = config.port
    if (
        not isinstance(port, tuple)
        or len(port) != 2
        or not all(isinstance(p, int) and not isinstance(p, bool) for p in port)
    ):
        raise ConfigError(f"port: expected two port numbers (frontend, backend), got {port!r}")
    for p in port:
        if not 0 < p < 65536:
            raise ConfigError(f"port: {p} is not a TCP port number (1-65535)")
    if port[0] == port[1] and config.frontend is None and config.backend is None:
        raise ConfigError("port: frontend and backend ports must differ")
    _check_observability(config)
    _positive_int(config, "heartbeat_liveness")
    for name in ("max_message_size", "reply_cache", "max_frames", "max_client_inflight"):
        _nonnegative_int(config, name)
    if 0 < config.max_frames < MIN_FRAMES:
        raise ConfigError(
            f"max_frames: 0 (no limit) or at least {MIN_FRAMES}, got {config.max_frames}"
        )
    for name in ("heartbeat_interval", "graceful_timeout"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{name}: expected a positive number of seconds, got {value!r}")
    if config.plain_errors not in PLAIN_ERRORS:
        raise ConfigError(
            f"plain_errors: expected one of {', '.join(PLAIN_ERRORS)}, got {config.plain_errors!r}"
        )
    if config.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(
            f"log_level: expected one of {', '.join(LOG_LEVELS)}, got {config.log_level!r}"
        )
    if config.log_format not in LOG_FORMATS:
        raise ConfigError(
            f"log_format: expected one of {', '.join(LOG_FORMATS)}, got {config.log_format!r}"
        )
    _check_store(config)
    _check_ha(config)
    check_service_name("service", config.service)
    if config.default_service is not None:
        check_service_name("default_service", config.default_service)
    for name in ("frontend", "backend"):
        endpoint = getattr(config, name)
        if endpoint is not None and "://" not in endpoint:
            raise ConfigError(
                f"{name}: {endpoint!r} is not a ZeroMQ endpoint "
                "(expected tcp://host:port or ipc:///path)"
            )
    check_security(config)
    if config.umask is not None:
        _nonnegative_int(config, "umask")
        if config.umask > 0o777:
            raise ConfigError(f"umask: {config.umask:o} is not a file mode mask (000-777)")
    _check_hooks(config, ("on_starting", "on_exit"))
    _check_pool(config)
    check_pubsub(config)


def _check_service(config: Config) -> None:
    """The options of one service's pool: its app, scaling bounds, timers, reliability limits.

    Scaling bounds follow Net::Server::PreFork's rules, by name.
    """
    if config.app is not None and not isinstance(config.app, str) and not callable(config.app):
        raise ConfigError(f"app: expected 'module:callable' or a callable, got {config.app!r}")
    _positive_int(config, "min_servers")
    _positive_int(config, "max_servers")
    _nonnegative_int(config, "max_requests")
    _positive_int(config, "max_attempts")
    _positive_int(config, "worker_credit")
    if config.worker_credit > MAX_CREDIT:
        raise ConfigError(f"worker_credit: at most {MAX_CREDIT}, got {config.worker_credit}")
    _nonnegative_int(config, "max_queue")
    _nonnegative_int(config, "max_queue_bytes")
    for name in ("job_timeout", "kill_grace", "prefetch_below", "unknown_service_wait"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{name}: expected a number of seconds >= 0, got {value!r}")
    if not isinstance(config.retry_jobs, bool):
        raise ConfigError(f"retry_jobs: expected true or false, got {config.retry_jobs!r}")
    _nonnegative_int(config, "max_requests_jitter")
    if config.max_servers < config.min_servers:
        raise ConfigError(
            f"max_servers ({config.max_servers}) must be >= min_servers ({config.min_servers})"
        )
    for name in ("min_spare_servers", "max_spare_servers"):
        if getattr(config, name) is not None:
            _nonnegative_int(config, name)
    _nonnegative_int(config, "max_worker_memory")
    for name in ("check_for_waiting", "check_for_spawn"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{name}: expected a positive number of seconds, got {value!r}")
    for name in ("min_child_ttl", "queue_wait_threshold"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{name}: expected a number of seconds >= 0, got {value!r}")
    min_spare, max_spare = config.spare_servers
    if config.min_spare_servers is not None and min_spare > config.min_servers:
        raise ConfigError(
            f"min_spare_servers ({min_spare}) must be <= min_servers ({config.min_servers})"
        )
    if config.max_spare_servers is not None and max_spare >= config.max_servers:
        raise ConfigError(
            f"max_spare_servers ({max_spare}) must be < max_servers ({config.max_servers}): "
            "more idle workers than that can never be retired"
        )
    if min_spare > max_spare:
        raise ConfigError(
            f"min_spare_servers ({min_spare}) must be <= max_spare_servers ({max_spare}), or "
            "the pool would start and retire workers in turn"
        )
    _check_hooks(config, ("post_fork", "pre_request", "post_request", "worker_exit"))


def _check_hooks(config: Config, names: tuple[str, ...]) -> None:
    for name in names:
        spec = getattr(config, name)
        if isinstance(spec, str):
            module, _, attr = spec.partition(":")
            if not module or not attr or not all(p.isidentifier() for p in attr.split(".")):
                raise ConfigError(f"{name}: expected 'module:callable', got {spec!r}")
        elif spec is not None and not callable(spec):
            raise ConfigError(f"{name}: expected 'module:callable' or a callable, got {spec!r}")


# -- security options (pure: no key file is read here) --------------------------------------------


def _strings(config: Config, name: str) -> tuple[str, ...]:
    value = getattr(config, name)
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}: expected a list of IP addresses or CIDR ranges, got {value!r}")
    return value


def address_policies(config: Config) -> tuple[AddressPolicy, AddressPolicy]:
    """The frontend's and backend's allow/deny lists, checked (``ConfigError`` on a bad one)."""
    allow, deny = _strings(config, "allow"), _strings(config, "deny")
    front = AddressPolicy.build(allow, deny, "allow", "deny")
    back = AddressPolicy.build(
        _strings(config, "backend_allow"),
        _strings(config, "backend_deny"),
        "backend_allow",
        "backend_deny",
    )
    return front, back


def check_security(config: Config) -> None:
    """Check the security options' consistency; ``ServerSecurity.load`` reads the files."""
    for name in (
        "curve_secret_key_file",
        "curve_backend_secret_key_file",
        "curve_client_keys_dir",
        "curve_worker_keys_dir",
    ):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"{name}: expected a file or directory path, got {value!r}")
    if not isinstance(config.curve_allow_any, bool):
        raise ConfigError(
            f"curve_allow_any: expected true or false, got {config.curve_allow_any!r}"
        )
    if not isinstance(config.remote_workers, bool):
        raise ConfigError(f"remote_workers: expected true or false, got {config.remote_workers!r}")
    front_curve = config.curve_secret_key_file is not None
    if config.curve_allow_any and config.curve_client_keys_dir is not None:
        raise ConfigError(
            "curve_allow_any and curve_client_keys_dir: give one (any client key, or only the "
            "keys in the directory), not both"
        )
    if not front_curve:
        for name in ("curve_client_keys_dir", "curve_allow_any"):
            if getattr(config, name):
                raise ConfigError(
                    f"{name} is set but curve_secret_key_file is not: "
                    "the frontend only checks client keys when it uses CURVE"
                )
    elif config.curve_client_keys_dir is None and not config.curve_allow_any:
        raise ConfigError(
            "curve_secret_key_file needs curve_client_keys_dir (the client keys allowed) "
            "or curve_allow_any (any client key)"
        )
    back_curve = config.curve_backend_secret_key_file is not None
    if config.curve_worker_keys_dir is not None and not back_curve:
        raise ConfigError(
            "curve_worker_keys_dir is set but curve_backend_secret_key_file is not: "
            "the backend only checks worker keys when it uses CURVE"
        )
    if back_curve and config.curve_worker_keys_dir is None:
        raise ConfigError(
            "curve_backend_secret_key_file needs curve_worker_keys_dir "
            "(the public keys of the remote workers allowed)"
        )
    _, back = address_policies(config)
    if config.public_backend is None:
        if back_curve:
            raise ConfigError(
                "curve_backend_secret_key_file secures the backend for remote worker pools, "
                "but the backend is not open to them: set remote_workers (or backend)"
            )
        if back.active:
            raise ConfigError(
                "backend_allow/backend_deny filter remote workers, but the backend is not open "
                "to them: set remote_workers (or backend)"
            )
    domain = config.zap_domain
    if not isinstance(domain, str) or not domain or len(domain.encode()) > 200:
        # An empty domain would switch ZAP off for NULL connections, and the allow/deny lists
        # with it.
        raise ConfigError(f"zap_domain: expected a non-empty name, got {domain!r}")
    timeout = config.handshake_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigError(
            f"handshake_timeout: expected a positive number of seconds, got {timeout!r}"
        )


def check_pubsub(config: Config) -> None:
    """The pub-sub options (pubsub/): three ports from P, bounds, the publishers' keys."""
    port = config.pubsub_port
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65534:
            raise ConfigError(f"pubsub_port: expected a TCP port number (1-65533), got {port!r}")
        taken = set(range(port, port + 3))
        if config.frontend is None and config.port[0] in taken:
            raise ConfigError(f"pubsub_port: {port}..{port + 2} overlaps the frontend port")
        if config.public_backend is not None and config.backend is None and config.port[1] in taken:
            raise ConfigError(f"pubsub_port: {port}..{port + 2} overlaps the backend port")
    for name in ("pubsub_max_keys", "pubsub_max_bytes", "pubsub_hwm"):
        _nonnegative_int(config, name)
    for name in ("pubsub_max_key_length", "pubsub_max_value_size"):
        _positive_int(config, name)
    if not isinstance(config.pubsub_events, bool):
        raise ConfigError(f"pubsub_events: expected true or false, got {config.pubsub_events!r}")
    if config.pubsub_job_events not in PUBSUB_JOB_EVENTS:
        raise ConfigError(
            f"pubsub_job_events: expected one of {', '.join(PUBSUB_JOB_EVENTS)}, "
            f"got {config.pubsub_job_events!r}"
        )
    _positive_int(config, "pubsub_job_events_per_second")
    keys = config.pubsub_publishers_keys_dir
    if keys is not None:
        if not isinstance(keys, str) or not keys:
            raise ConfigError(f"pubsub_publishers_keys_dir: expected a directory, got {keys!r}")
        if config.curve_secret_key_file is None:
            raise ConfigError(
                "pubsub_publishers_keys_dir is set but curve_secret_key_file is not: "
                "publishers are told apart by their CURVE keys"
            )


def _check_store(config: Config) -> None:
    """Durable jobs' options (docs/durable.md)."""
    if config.store_sync not in ("full", "normal"):
        raise ConfigError(f"store_sync: expected full or normal, got {config.store_sync!r}")
    ttl = config.result_ttl
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
        raise ConfigError(f"result_ttl: expected a positive number of seconds, got {ttl!r}")
    _positive_int(config, "store_max_result")
    _positive_int(config, "store_window")
    if config.store is not None and not config.store:
        raise ConfigError("store: expected a file path, got an empty string")


_LOCAL_HOSTS = frozenset({"*", "0.0.0.0", "127.0.0.1", "localhost", "[::1]", "::1"})


def _host(endpoint: str) -> str:
    return endpoint.partition("://")[2].rpartition(":")[0]


def _tcp_port(endpoint: str) -> int | None:
    """The port of a ``tcp://host:port`` endpoint (None: not tcp, or not a number)."""
    scheme, _, rest = endpoint.partition("://")
    port = rest.rpartition(":")[2]
    return int(port) if scheme == "tcp" and port.isdigit() else None


def _check_tcp(name: str, endpoint: str, *, connect: bool) -> None:
    """A tcp:// endpoint that libzmq would refuse only when the server opens it."""
    if not endpoint.startswith("tcp://"):
        return
    port = _tcp_port(endpoint)
    if port is None or not 0 < port < 65536:
        raise ConfigError(f"{name}: {endpoint!r} has no port number (expected tcp://host:port)")
    if connect and _host(endpoint) in ("*", ""):
        raise ConfigError(
            f"{name}: {endpoint!r}: a server to connect to needs its host name or address, not *"
        )


def _same_place(bind: str, peer: str) -> bool:
    """Whether connecting to ``peer`` would reach what this server binds on ``bind``."""
    if bind == peer:
        return True
    port = _tcp_port(bind)
    if port is None or port != _tcp_port(peer):
        return False
    return _host(bind) in ("*", "0.0.0.0", _host(peer)) and _host(peer) in _LOCAL_HOSTS


def _own_ports(config: Config) -> dict[str, set[int]]:
    """The TCP ports this server binds for its other sockets, by option."""
    owned: dict[str, set[int]] = {}
    for index, name in enumerate(("frontend", "backend")):
        endpoint = getattr(config, name)
        port = config.port[index] if endpoint is None else _tcp_port(endpoint)
        if port is not None:
            owned[name] = {port}
    if config.metrics_port:
        owned["metrics_port"] = {config.metrics_port}
    if config.pubsub_port is not None:
        owned["pubsub_port (P to P+2)"] = {config.pubsub_port + i for i in range(3)}
    return owned


def _check_ha(config: Config) -> None:
    """A Binary Star pair's options (docs/ha.md): all three endpoints' options, or none."""
    beat = config.ha_heartbeat
    if isinstance(beat, bool) or not isinstance(beat, int | float) or beat <= 0:
        raise ConfigError(f"ha_heartbeat: expected a positive number of seconds, got {beat!r}")
    if config.ha_role is None:
        for name in ("ha_bind", "ha_peer", "ha_peer_key", "ha_peer_pubsub"):
            if getattr(config, name) is not None:
                raise ConfigError(f"{name} is set but ha_role is not (primary or backup)")
        return
    if config.ha_role not in ("primary", "backup"):
        raise ConfigError(f"ha_role: expected primary or backup, got {config.ha_role!r}")
    for name in ("ha_bind", "ha_peer"):
        endpoint = getattr(config, name)
        if endpoint is None:
            raise ConfigError(f"ha_role is {config.ha_role} but {name} is not set")
        if "://" not in endpoint:
            raise ConfigError(
                f"{name}: {endpoint!r} is not a ZeroMQ endpoint (expected tcp://host:port)"
            )
        _check_tcp(name, endpoint, connect=name == "ha_peer")
    assert config.ha_bind is not None
    assert config.ha_peer is not None
    if _same_place(config.ha_bind, config.ha_peer):
        raise ConfigError(
            f"ha_peer: {config.ha_peer!r} is this server's own ha_bind: give the other "
            "server's ha_bind"
        )
    bind_port = _tcp_port(config.ha_bind)
    if bind_port is not None:
        for other, ports in _own_ports(config).items():
            if bind_port in ports:
                raise ConfigError(f"ha_bind: port {bind_port} is also {other}'s")
    # The peer link speaks CURVE exactly when the frontend does (with the frontend's key pair):
    # half a CURVE configuration would leave the two servers unable to hear each other, and
    # each would take the other for dead.
    if config.curve_secret_key_file is not None and config.ha_peer_key is None:
        raise ConfigError(
            "curve_secret_key_file is set, so the Binary Star peer link speaks CURVE too: set "
            "ha_peer_key to the peer's public key (its curve_secret_key_file's .key file)"
        )
    if config.ha_peer_key is not None and config.curve_secret_key_file is None:
        raise ConfigError(
            "ha_peer_key is set but curve_secret_key_file is not: the peer link speaks CURVE "
            "with this server's own key pair; give both (and the same on the peer) or neither"
        )
    if config.pubsub_port is not None:
        from ..pubsub.endpoints import peer_pubsub

        assert config.ha_peer is not None
        try:
            peer = peer_pubsub(config.ha_peer, config.pubsub_port, config.ha_peer_pubsub)
        except ValueError as exc:
            raise ConfigError(f"ha_peer_pubsub: {exc}") from None
        _check_tcp("ha_peer_pubsub", peer, connect=True)
        if _tcp_port(peer) == config.pubsub_port and _host(peer) in _LOCAL_HOSTS:
            raise ConfigError(
                f"ha_peer_pubsub: {peer!r} is this server's own pub-sub port: give the other "
                "server's (two servers on one host use two pubsub_port values)"
            )
    elif config.ha_peer_pubsub is not None:
        raise ConfigError("ha_peer_pubsub is set but pubsub_port is not")
