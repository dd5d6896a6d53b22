"""Server options: one frozen dataclass is the single source of truth.

Each option is one field; its ``metadata`` carries the help text and CLI details, and the command
line parser (cli.py) and the README's options table are generated from these fields, so the three
cannot drift apart. Names follow Net::Server::ZMQ / Net::Server::PreFork where they have one.

This module is the schema: the fields, the values derived from them, and the type coercion each
source goes through (:func:`_coerce`). Whether a combination is valid is validate.py's question;
where values come from is sources.py's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from . import validate as _validate
from .validate import check_service_name

#: What a worker runs: payload (bytes, or list[bytes] for a multi-frame payload) -> reply.
App = Callable[..., Any]
#: A hook named in the config: see the hook options for what each one is called with.
Hook = Callable[..., Any]

#: The hook options, in the order a server's life calls them (hooks.py calls them).
HOOKS = ("on_starting", "post_fork", "pre_request", "post_request", "worker_exit", "on_exit")


def option(
    default: Any,
    help: str,
    *,
    flag: bool = True,
    metavar: str | None = None,
    nargs: int | str | None = None,
    kind: type | None = None,
    parse: Callable[[str], Any] | None = None,
    callable_ok: bool = False,
    reload: bool = False,
    shown: str | None = None,
    per_service: bool = False,
    command: str | None = None,
    path: bool = False,
) -> Any:
    """A config field: ``help`` is the one description shown in --help and in the README.

    ``kind`` is the value's type when the default (None) does not tell; ``parse`` turns the text
    of a CLI flag or environment variable into a value when ``kind`` alone cannot (octal, say);
    ``callable_ok`` also accepts a Python callable (app and hooks); ``reload`` means HUP applies a
    changed value (every other option needs a restart); ``shown`` is the default as documented,
    when the real default is None meaning "worked out from other options"; ``per_service`` means
    a service's table may set it for that service alone; ``command`` is ``"serve"`` (the broker)
    or ``"worker"`` (a remote pool) for an option only that command has (None: both); ``path``
    means the value names a file or directory, in which a leading ``~`` is the home directory
    (from every source: the shell expands it only in some positions, a TOML file never).
    """
    meta = {"help": help, "flag": flag, "metavar": metavar, "nargs": nargs, "kind": kind}
    meta |= {"parse": parse, "callable_ok": callable_ok, "reload": reload, "shown": shown}
    meta |= {"per_service": per_service, "command": command, "path": path}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One service of a server with several: its name and the options it sets for itself.

    Every option it does not set comes from the top level (which has the defaults), so a
    service is "the server's options, with these overrides". Built by :func:`parse_services`.
    """

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.options)


class _Checked:
    """The one slot of a :class:`Config` that is not an option: its services, once validated.

    Not a dataclass field, so it is in no generated flag, table, comparison or ``repr``, and a
    changed copy (``replace``) starts without it: a new combination is checked anew.
    """

    __slots__ = ("_services",)
    _services: dict[str, Config]


@dataclass(frozen=True, slots=True)
class Config(_Checked):
    """Every setting of a zmqserver server. Build with keywords; :meth:`validate` checks it."""

    app: str | App | None = option(
        None,
        "The app: `module:callable` (importable from the current directory) or a "
        "callable. None echoes the payload back.",
        flag=False,
        callable_ok=True,
        reload=True,
        per_service=True,
    )
    services: tuple[ServiceSpec, ...] = option(
        (),
        "Several apps, each a service with its own worker pool and queue: `NAME=module:callable` "
        "arguments, `[services.NAME]` tables in the config file (setting `app` and any option "
        "marked per service), or `run(apps={...})`. Unset: one service, `service`, runs `app`.",
        flag=False,
        metavar="NAME=APP",
        reload=True,
    )
    port: tuple[int, int] = option(
        (6660, 6661),
        "Frontend (clients) and backend (workers) TCP ports.",
        metavar="PORT",
        nargs=2,
        command="serve",
    )
    host: str = option("*", "Address both ports bind to (`*` = all interfaces).", command="serve")
    frontend: str | None = option(
        None,
        "Frontend endpoint, overriding host and port (e.g. `ipc:///run/zmqs.sock`).",
        metavar="ENDPOINT",
        command="serve",
    )
    backend: str | None = option(
        None,
        "Backend endpoint, overriding host and port (e.g. `ipc:///tmp/zmqs-workers`).",
        metavar="ENDPOINT",
        command="serve",
    )
    service: str = option(
        "default", "Service name of the app when no services are given.", metavar="NAME"
    )
    default_service: str | None = option(
        None,
        "Service that plain REQ clients (and an empty MDP service frame) reach: the first "
        "service, unless set. It may be one that only remote pools offer.",
        metavar="NAME",
        command="serve",
    )
    connect: str | None = option(
        None,
        "Backend endpoint of the broker a remote pool's workers connect to "
        "(`tcp://BROKER:6661`); required by `zmqserver worker`. Several (a Binary Star pair; "
        "`--connect` repeated, a list in TOML, commas in the environment): the workers "
        "register with each and serve the active one (docs/ha.md).",
        metavar="ENDPOINT",
        command="worker",
    )
    server_key: str | None = option(
        None,
        "The broker backend's public key (40 Z85 characters, or its `.key` file): the pool's "
        "workers then connect with CURVE.",
        metavar="KEY|FILE",
        command="worker",
        path=True,
    )
    key_file: str | None = option(
        None,
        "The pool's own secret key file (from `zmqserver keygen`), whose public key is in the "
        "broker's curve_worker_keys_dir; needs server_key.",
        metavar="FILE",
        command="worker",
        path=True,
    )
    min_servers: int = option(
        5, "Worker processes started and kept running, however idle.", reload=True, per_service=True
    )
    max_servers: int = option(
        50,
        "Upper bound on worker processes (autoscaling and TTIN stop there). Set it to "
        "min_servers for a fixed pool.",
        reload=True,
        per_service=True,
    )
    min_spare_servers: int | None = option(
        None,
        "Idle workers to keep ready: when fewer are idle, more are started at once (up to "
        "max_servers). Unset: 2, or min_servers (or max_spare_servers) if smaller.",
        kind=int,
        reload=True,
        shown="2",
        per_service=True,
    )
    max_spare_servers: int | None = option(
        None,
        "Idle workers beyond which the surplus is retired (idle ones, oldest first, down to "
        "min_servers); must be < max_servers. Unset: 10, or max_servers - 1 if smaller.",
        kind=int,
        reload=True,
        shown="10",
        per_service=True,
    )
    check_for_waiting: float = option(
        10.0,
        "Seconds idle workers must stay above max_spare_servers before the surplus is retired.",
        metavar="SECONDS",
        reload=True,
        per_service=True,
    )
    check_for_spawn: float = option(
        30.0,
        "Seconds a starting worker counts as spare before it has registered; after that it "
        "counts as busy, so a hung start-up cannot block scaling.",
        metavar="SECONDS",
        reload=True,
        per_service=True,
    )
    min_child_ttl: float = option(
        10.0,
        "Seconds after the last worker start before any worker is retired as surplus "
        "(so the pool does not fork and retire in turn).",
        metavar="SECONDS",
        reload=True,
        per_service=True,
    )
    queue_wait_threshold: float = option(
        1.0,
        "Start one more worker per queued job (up to max_servers) once the oldest queued job "
        "has waited this many seconds; 0 = off.",
        metavar="SECONDS",
        reload=True,
        per_service=True,
        command="serve",
    )
    max_requests: int = option(
        0,
        "Restart a worker after it has served this many jobs (0 = never).",
        reload=True,
        per_service=True,
    )
    max_requests_jitter: int = option(
        0,
        "Add a random 0..N to max_requests per worker, so workers do not restart together.",
        reload=True,
        per_service=True,
    )
    max_worker_memory: int = option(
        0,
        "Restart a worker (between jobs) once its resident memory (RSS) exceeds this many "
        "MiB (0 = never).",
        metavar="MIB",
        reload=True,
        per_service=True,
    )
    worker_credit: int = option(
        16,
        "Jobs a worker may hold at once (1-64): more than 1 lets the broker send it the next "
        "jobs while it runs one (only while jobs are short: prefetch_below), saving a round "
        "trip per job; 1 is strict LRU. The broker grants a worker at most its own value.",
        reload=True,
        per_service=True,
    )
    prefetch_below: float = option(
        0.001,
        "A busy worker is sent more jobs (up to its worker_credit) only while the service's "
        "jobs take less than this many seconds on average; longer jobs (and until the first "
        "reply) are dispatched strict LRU. 0 = always use the whole credit.",
        metavar="SECONDS",
        reload=True,
        per_service=True,
        command="serve",
    )
    heartbeat_interval: float = option(
        1.0, "Seconds between heartbeats between broker and idle workers.", metavar="SECONDS"
    )
    heartbeat_liveness: int = option(3, "Missed heartbeats after which a peer is taken for dead.")
    graceful_timeout: float = option(
        30.0,
        "Seconds running jobs get to finish on TERM/QUIT before workers are killed.",
        metavar="SECONDS",
        reload=True,
    )
    job_timeout: float = option(
        60.0,
        "Deadline in seconds of a job whose client sent none (plain clients); 0 = none. A queued "
        "job past its deadline gets an expired error; a running one gets its worker killed.",
        metavar="SECONDS",
        reload=True,
        per_service=True,
        command="serve",
    )
    kill_grace: float = option(
        5.0,
        "Seconds a running job may overrun its deadline before its worker is killed.",
        metavar="SECONDS",
        reload=True,
        per_service=True,
        command="serve",
    )
    retry_jobs: bool = option(
        False,
        "Rerun a job on another worker when its worker dies, even if the client did not flag "
        "the request as retryable.",
        reload=True,
        per_service=True,
        command="serve",
    )
    max_attempts: int = option(
        3,
        "Workers a retried job may be given to before it is quarantined with an error.",
        reload=True,
        per_service=True,
        command="serve",
    )
    max_queue: int = option(
        10000,
        "Queued jobs per service beyond which new jobs get a queue_full error; 0 = no limit.",
        reload=True,
        per_service=True,
        command="serve",
    )
    max_queue_bytes: int = option(
        256 * 1024 * 1024,
        "Bytes of queued requests per service (counted as for max_message_size) beyond which "
        "new jobs get a queue_full error; 0 = no limit.",
        metavar="BYTES",
        reload=True,
        per_service=True,
        command="serve",
    )
    max_message_size: int = option(
        1024 * 1024,
        "Largest request in bytes (all body frames, each counted 64 bytes more); larger ones "
        "get a too_large error, but a single frame over 4 times this drops the client's "
        "connection with no reply (libzmq's ZMQ_MAXMSGSIZE); 0 = no limit.",
        metavar="BYTES",
        command="serve",
    )
    max_frames: int = option(
        64,
        "Most frames in a request (header frames included); the broker keeps no more of a "
        "longer one and answers it too_large; 0 = no limit, else at least 8.",
        metavar="FRAMES",
        command="serve",
    )
    reply_cache: int = option(
        1024,
        "Recent replies kept to answer a client's resend of a finished request without running "
        "it again; 0 = off.",
        command="serve",
    )
    # -- security (security/, config/validate.py, docs/security.md) --
    curve_secret_key_file: str | None = option(
        None,
        "Secret key file (from `zmqserver keygen`) of the frontend: clients must then use CURVE, "
        "encrypted and authenticated by curve_client_keys_dir or curve_allow_any.",
        metavar="FILE",
        command="serve",
        path=True,
    )
    curve_client_keys_dir: str | None = option(
        None,
        "Directory of the public keys (`*.key`) of the clients allowed on a CURVE frontend; "
        "reloaded on HUP.",
        metavar="DIR",
        command="serve",
        path=True,
    )
    curve_allow_any: bool = option(
        False,
        "Admit any client key on a CURVE frontend (encryption without client authentication).",
        command="serve",
    )
    pass_client_key: bool = option(
        False,
        "Pass each job's authenticated client key (CURVE public key, Z85) to the worker, where "
        "the app reads it with `zmqserver.client_key()`.",
        command="serve",
    )
    curve_backend_secret_key_file: str | None = option(
        None,
        "Secret key file of the backend, for remote worker pools (needs curve_worker_keys_dir).",
        metavar="FILE",
        command="serve",
        path=True,
    )
    curve_worker_keys_dir: str | None = option(
        None,
        "Directory of the public keys of the remote workers allowed on a CURVE backend; "
        "reloaded on HUP.",
        metavar="DIR",
        command="serve",
        path=True,
    )
    remote_workers: bool = option(
        False,
        "Open the backend port to worker pools on other hosts. Without it (or an explicit "
        "backend), no backend port is opened: local workers use a private ipc:// socket.",
        command="serve",
    )
    allow: tuple[str, ...] = option(
        (),
        "IP addresses and CIDR ranges (IPv4, IPv6) allowed on the frontend; empty = all "
        "that are not denied.",
        metavar="CIDR",
        nargs="+",
        command="serve",
    )
    deny: tuple[str, ...] = option(
        (),
        "IP addresses and CIDR ranges refused on the frontend.",
        metavar="CIDR",
        nargs="+",
        command="serve",
    )
    backend_allow: tuple[str, ...] = option(
        (),
        "IP addresses and CIDR ranges of remote workers allowed on the backend.",
        metavar="CIDR",
        nargs="+",
        command="serve",
    )
    backend_deny: tuple[str, ...] = option(
        (),
        "IP addresses and CIDR ranges refused on the backend.",
        metavar="CIDR",
        nargs="+",
        command="serve",
    )
    zap_domain: str = option(
        "zmqserver",
        "ZAP domain of the frontend; the backend's is `<zap_domain>.workers`.",
        command="serve",
    )
    handshake_timeout: float = option(
        10.0,
        "Seconds a new connection gets to complete its ZeroMQ (and CURVE) handshake.",
        metavar="SECONDS",
        command="serve",
    )
    log_level: str = option(
        "info", "Logging level: debug, info, warning, error or critical.", reload=True
    )
    proc_name: str = option(
        "zmq",
        "Prefix of process titles (`zmq broker 6660-local`, `zmq worker local`).",
        reload=True,
    )
    # -- process management (supervisor/, server.py, _process.py) --
    log_file: str | None = option(
        None,
        "Append the log to this file instead of stderr; USR1 reopens it (for logrotate).",
        metavar="FILE",
        path=True,
    )
    pid_file: str | None = option(
        None,
        "Write the master's pid to this file (by the daemon, in background mode); refuse to "
        "start while it names a running process.",
        metavar="FILE",
        path=True,
    )
    background: bool = option(
        False,
        "Run as a daemon: the command returns once the server is up (or says why it is not).",
    )
    user: str | None = option(
        None,
        "Run as this user (name or uid) after binding the ports; needs root to start.",
        metavar="USER",
    )
    group: str | None = option(
        None,
        "Run as this group (name or gid) after binding; default: the user's group.",
        metavar="GROUP",
    )
    chdir: str | None = option(
        None,
        "Change to this directory before loading the app (and resolving relative paths).",
        metavar="DIR",
        path=True,
    )
    umask: int | None = option(
        None,
        "File mode mask (octal, e.g. 027) for the files and ipc:// sockets the server creates; "
        "unset: inherited.",
        kind=int,
        parse=lambda text: int(text, 8),
        metavar="OCTAL",
    )
    preload_app: bool = option(
        False,
        "Import the app in the master before forking: workers share its memory and a bad app "
        "fails at start-up, but HUP does not re-import it.",
    )
    on_starting: str | Hook | None = option(
        None,
        "Hook `module:callable`, called `(config)` in the master before it binds.",
        metavar="HOOK",
        callable_ok=True,
    )
    post_fork: str | Hook | None = option(
        None,
        "Hook called `(config)` in each new worker before it loads the app (e.g. to load a "
        "model once per worker); raising stops the server like a bad app.",
        metavar="HOOK",
        callable_ok=True,
        reload=True,
        per_service=True,
    )
    pre_request: str | Hook | None = option(
        None,
        "Hook called `(payload)` in the worker before each job; raising fails the job with "
        "an app_error.",
        metavar="HOOK",
        callable_ok=True,
        reload=True,
        per_service=True,
    )
    post_request: str | Hook | None = option(
        None,
        "Hook called `(payload, status)` in the worker after each job's reply is sent.",
        metavar="HOOK",
        callable_ok=True,
        reload=True,
        per_service=True,
    )
    worker_exit: str | Hook | None = option(
        None,
        "Hook called `(config)` in a worker that exits in an orderly way.",
        metavar="HOOK",
        callable_ok=True,
        reload=True,
        per_service=True,
    )
    on_exit: str | Hook | None = option(
        None,
        "Hook called `(config)` in the master after the workers have stopped.",
        metavar="HOOK",
        callable_ok=True,
    )
    # -- pub-sub (pubsub/, docs/protocol.md "Pub-sub") --
    pubsub_port: int | None = option(
        None,
        "Open pub-sub (ZeroMQ RFC 12, CHP) on three ports: snapshot ROUTER on P, PUB on P+1, "
        "collector SUB on P+2 (bound on `host`); unset: off. A remote pool given it publishes "
        "to its broker's P+2.",
        kind=int,
        metavar="P",
    )
    pubsub_max_keys: int = option(
        100_000, "Keys the pub-sub last-value cache holds at most; 0 = no limit.", command="serve"
    )
    pubsub_max_bytes: int = option(
        64 * 1024 * 1024,
        "Bytes (keys, values, properties) the pub-sub cache holds at most; 0 = no limit.",
        command="serve",
    )
    pubsub_max_key_length: int = option(256, "Longest pub-sub key, in bytes.", command="serve")
    pubsub_max_value_size: int = option(
        1024 * 1024, "Largest pub-sub value, in bytes.", command="serve"
    )
    pubsub_hwm: int = option(
        10_000,
        "Updates queued per subscriber before the PUB drops (the subscriber then resyncs).",
        command="serve",
    )
    pubsub_publishers_keys_dir: str | None = option(
        None,
        "Directory of the CURVE public keys allowed to publish on the collector (P+2); unset: "
        "the frontend's rules. Needs curve_secret_key_file; reloaded on HUP.",
        metavar="DIR",
        command="serve",
        path=True,
    )
    pubsub_events: bool = option(
        True,
        "Publish the server's own events on `$zmqserver/...` keys when pub-sub is on.",
        command="serve",
    )

    # -- development (supervisor/autoreload.py) --
    reload: bool = option(
        False,
        "Development: start a new generation of workers (as HUP does) when a source file of "
        "the app or its hooks changes (their package's `.py` files, looked at once a second). "
        "Not with preload_app.",
    )
    # -- interop with foreign MDP peers (issue 20) --
    plain_errors: str = option(
        "inband",
        "How plain and raw clients (no envelope for a status) learn of an error: `inband` "
        "replies `ERROR <reason>: <message>` (shutting_down too, on a graceful stop); `drop` "
        "sends nothing, so a Lazy Pirate client times out and retries as with a dead server.",
        metavar="MODE",
        reload=True,
        command="serve",
    )
    unknown_service_wait: float = option(
        5.0,
        "Seconds a request for a service no worker has registered waits for one (RFC 7/18: "
        "the broker SHOULD queue it) before it is answered unknown_service; 0 = at once.",
        metavar="SECONDS",
        reload=True,
        command="serve",
    )

    # -- logging (logsetup.py) --
    log_format: str = option(
        "text",
        "Log line format: `text`, or `json` (one object a line: time, level, pid, service, "
        "request_id inside a job, logger, message).",
        metavar="FORMAT",
    )
    log_config: str | None = option(
        None,
        "A `logging.config.dictConfig` file (JSON, or TOML) that replaces log_file, log_level "
        "and log_format.",
        metavar="FILE",
        path=True,
    )

    # -- observability and control (supervisor/control.py, http.py; docs/operations.md) --
    control: bool = option(
        True,
        "Answer `zmqserver status` and `zmqserver control` on the control endpoint.",
        command="serve",
    )
    control_endpoint: str | None = option(
        None,
        "Where the control endpoint listens; unset: ipc:// in the server's private 0700 "
        "directory. A tcp:// endpoint needs `curve_secret_key_file` and `control_keys_dir`.",
        metavar="ENDPOINT",
        command="serve",
    )
    control_keys_dir: str | None = option(
        None,
        "Directory of the CURVE public keys (*.key) allowed on a tcp:// control endpoint.",
        path=True,
        metavar="DIR",
        command="serve",
    )
    metrics_port: int | None = option(
        None,
        "Serve `/metrics` (Prometheus), `/healthz`, `/readyz` and the live dashboard (`/`) over "
        "HTTP on this port (0: any free port, logged); unset: no HTTP.",
        kind=int,
        metavar="PORT",
        command="serve",
    )
    metrics_host: str = option(
        "127.0.0.1",
        "Address the metrics port binds to (`0.0.0.0`: all interfaces; it has no "
        "authentication, and its dashboard can show jobs' services and rates).",
        command="serve",
    )
    access_log: str | None = option(
        None,
        "Write one line per job to this file (`-`: standard output): time, client, service, "
        "request id, outcome, queue wait, run time, request bytes (docs/operations.md).",
        path=True,
        metavar="FILE",
        command="serve",
    )

    # -- per-client bounds and fairness (broker/clients.py, docs/reliability.md §6.5) --
    max_client_inflight: int = option(
        1000,
        "Jobs one client connection (routing id) may have queued, running or answered but not "
        "yet read; beyond it that client's new requests get queue_full (others are not "
        "affected), and its replies wait in the broker, never dropped; 0 = no limit.",
        reload=True,
        command="serve",
    )

    # -- durable jobs (Titanic, RFC 9; docs/durable.md) --
    store: str | None = option(
        None,
        "SQLite file for durable jobs (`titanic.*` services, `Client.enqueue`): created if "
        "absent, one server per file. Unset: no durable jobs.",
        metavar="PATH",
        command="serve",
    )
    store_sync: str = option(
        "full",
        "When the store fsyncs: `full` at every commit (an acknowledged job survives a power "
        "cut), `normal` at checkpoints (survives a crash of the server, not of the machine).",
        metavar="full|normal",
        command="serve",
    )
    result_ttl: float = option(
        86400.0,
        "Seconds a durable job's result (or last error) is kept after it finished.",
        metavar="SECONDS",
        command="serve",
    )
    store_max_result: int = option(
        1048576,
        "Largest result in bytes a durable job may store; a larger one fails the job.",
        metavar="BYTES",
        command="serve",
    )
    store_window: int = option(
        256,
        "Durable jobs handed to the broker at once, at most: enough to keep every worker busy; "
        "a restart after a crash runs up to this many again (at-least-once).",
        metavar="N",
        command="serve",
    )

    # -- request context for apps (context.py, docs/protocol.md §3.4b) --
    pass_client_info: bool = option(
        False,
        "Pass each job's client address (Peer-Address), request id, attempt and deadline to the "
        "worker, where the app reads them with `zmqserver.request()`; a worker asks for them.",
    )

    # -- high availability (Binary Star; supervisor/ha_side.py, docs/ha.md) --
    ha_role: str | None = option(
        None,
        "Run as one server of a Binary Star pair: `primary` or `backup` (needs ha_bind and "
        "ha_peer). The passive server of the pair does not answer clients. Unset: no pair.",
        metavar="primary|backup",
        command="serve",
    )
    ha_bind: str | None = option(
        None,
        "Where this server publishes its state to its peer, e.g. `tcp://*:6690`.",
        metavar="ENDPOINT",
        command="serve",
    )
    ha_peer: str | None = option(
        None,
        "The peer's ha_bind endpoint, e.g. `tcp://OTHER-HOST:6690`.",
        metavar="ENDPOINT",
        command="serve",
    )
    ha_heartbeat: float = option(
        1.0,
        "Seconds between two state messages to the peer; the peer is taken for dead after "
        "two heartbeats of silence.",
        metavar="SECONDS",
        command="serve",
    )
    # -- pub-sub follow-ups: per-job events (pubsub/events.py) --
    pubsub_job_events: str = option(
        "sample",
        "Per-job events on `$zmqserver/jobs/<service>/<outcome>` (with pubsub_events): "
        "`none` (the per-second totals only), `sample` (at most "
        "pubsub_job_events_per_second per service), `all` (every job; costs the broker CPU).",
        metavar="MODE",
        command="serve",
    )
    pubsub_job_events_per_second: int = option(
        10,
        "With pubsub_job_events = sample: per-job events published per service per second.",
        metavar="N",
        command="serve",
    )
    # -- high availability: the peer link's security (supervisor/ha_link.py, docs/ha.md) --
    ha_peer_key: str | None = option(
        None,
        "The peer's CURVE public key (its curve_secret_key_file's `.key` file, or its 40 Z85 "
        "characters): with curve_secret_key_file, the peer link speaks CURVE and admits only "
        "this key. Needed in a pair with CURVE.",
        metavar="KEY|FILE",
        command="serve",
        path=True,
    )
    # -- high availability: pub-sub replicated to the passive server (pubsub/replica.py) --
    ha_peer_pubsub: str | None = option(
        None,
        "With ha_role and pubsub_port: the peer's pub-sub port, `tcp://OTHER-HOST:P`, which "
        "the passive server copies its map from. Default: ha_peer's host, our pubsub_port.",
        metavar="ENDPOINT",
        command="serve",
    )

    def validate(self) -> Config:
        """Return ``self`` if the combination is valid, else raise :class:`ConfigError`.

        What is checked, and how services are: config/validate.py. A config is checked once:
        its builders (:meth:`from_mapping`, used by the sources and by ``zmqserver.run``)
        return it checked, and the start-up's own calls then cost nothing.
        """
        self._checked_services()
        return self

    def _checked_services(self) -> dict[str, Config]:
        try:
            return self._services
        except AttributeError:
            services = _validate.check(self)  # raises ConfigError: nothing is remembered
            object.__setattr__(self, "_services", services)  # frozen, but not an option
            return services

    # -- derived values ---------------------------------------------------------------------------

    @property
    def frontend_endpoint(self) -> str:
        return self.frontend or f"tcp://{self.host}:{self.port[0]}"

    @property
    def backend_endpoint(self) -> str:
        return self.backend or f"tcp://{self.host}:{self.port[1]}"

    @property
    def public_backend(self) -> str | None:
        """The backend endpoint opened to remote worker pools, or None if the backend is private.

        An explicit ``backend`` endpoint is opened as given; the ``port``-derived TCP endpoint only
        with ``remote_workers``. Local workers always use a private ipc:// socket instead.
        """
        if self.backend is not None or self.remote_workers:
            return self.backend_endpoint
        return None

    @property
    def default_service_name(self) -> str:
        """The service plain clients reach: ``default_service``, else the first service."""
        if self.default_service is not None:
            return self.default_service
        return self.services[0].name if self.services else self.service

    def service_configs(self) -> dict[str, Config]:
        """Each service's own complete options, in order: the top level with its overrides.

        A server without ``services`` has one, ``service``, running ``app``. Each returned
        config has no ``services`` of its own, so a worker or a pool needs only its config.
        Validates the config first, if that has not been done.
        """
        return dict(self._checked_services())

    @property
    def log_level_number(self) -> int:
        return int(logging.getLevelName(self.log_level.upper()))

    @property
    def spare_servers(self) -> tuple[int, int]:
        """(min_spare_servers, max_spare_servers), with unset ones worked out as PreFork does.

        Net::Server::PreFork fits its defaults to the bounds when they are not given, so that
        `--min-servers 1` or `--max-servers 4` alone are valid; explicit values are checked.
        """
        max_spare = self.max_spare_servers
        if max_spare is None:
            max_spare = max(min(10, self.max_servers - 1), self.min_spare_servers or 0)
        min_spare = self.min_spare_servers
        if min_spare is None:
            min_spare = min(2, self.min_servers, max_spare)
        return min_spare, max_spare

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Config:
        """Build from keyword options, turning unknown names and wrong types into ConfigError."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"unknown option {key!r}")
            kwargs[key] = _coerce(key, known[key].default, value)
        return cls(**kwargs).validate()


def _coerce(key: str, default: Any, value: Any) -> Any:
    """Accept the obvious spellings (a list for a tuple) and reject the wrong types by name."""
    if key == "services":
        return parse_services(value)
    if key == "port":
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value + 1)
        if isinstance(value, list | tuple):
            return tuple(value)
        raise ConfigError(f"port: expected two port numbers (frontend, backend), got {value!r}")
    if key == "connect" and isinstance(value, list | tuple):
        # The brokers of a pair (docs/ha.md): kept as one string, as the CLI and env spell it.
        if not value or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"connect: expected endpoints (strings), got {value!r}")
        return ",".join(value)
    if isinstance(default, tuple):
        # A list in TOML, one string (comma- or space-separated) from the environment.
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
    meta = Config.__dataclass_fields__[key].metadata
    if value is None or (meta.get("callable_ok") and callable(value)):
        return value
    kind = meta.get("kind") or type(default)
    if kind is bool:
        expected: type | tuple[type, ...] = bool
    elif kind is float:
        expected = (int, float)
    elif kind is int:
        expected = int
    else:
        expected = str
    if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
        raise ConfigError(f"{key}: expected {_type_name(expected)}, got {value!r}")
    if meta.get("path") and isinstance(value, str):
        # A Z85 key (server_key may be one) has no "~" in its alphabet: only paths change.
        value = os.path.expanduser(value)
    return value


def parse_services(value: Any) -> tuple[ServiceSpec, ...]:
    """Services as any source spells them, in order; names and option types are checked.

    * ``{"echo": "examples.echo:app", "upper": {"app": ..., "min_servers": 2}}``: a TOML
      ``[services.NAME]`` table, or ``run(apps=...)`` (an app alone, or a table of options);
    * ``["echo=examples.echo:app", ...]``: command line arguments, ``ZMQSERVER_SERVICES``;
    * ServiceSpec objects (already parsed).
    """
    if isinstance(value, Mapping):
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list | tuple):
        items = []
        for entry in value:
            if isinstance(entry, ServiceSpec):
                items.append((entry.name, entry.settings))
            elif isinstance(entry, str) and "=" in entry:
                name, _, app = entry.partition("=")
                items.append((name, {"app": app or None}))
            else:
                raise ConfigError(f"services: expected NAME=module:callable, got {entry!r}")
    else:
        raise ConfigError(f"services: expected a table of services, got {value!r}")
    specs: dict[str, ServiceSpec] = {}
    for name, settings in items:
        if not isinstance(name, str):
            raise ConfigError(f"services: a service name must be a string, got {name!r}")
        check_service_name(f"services.{name}", name)
        if name in specs:
            raise ConfigError(f"services: {name!r} is given twice")
        if not isinstance(settings, Mapping):
            settings = {"app": settings}  # an app alone: a spec string or a callable
        options = []
        for key, setting in settings.items():
            f = Config.__dataclass_fields__.get(key)
            if f is None or not f.metadata.get("per_service"):
                what = "unknown option" if f is None else "option that applies to all services"
                raise ConfigError(f"services.{name}: {key!r} is an {what}")
            try:
                options.append((key, _coerce(key, f.default, setting)))
            except ConfigError as exc:
                raise ConfigError(f"services.{name}: {exc}") from None
        specs[name] = ServiceSpec(name, tuple(options))
    return tuple(specs.values())


def _type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return "a number"
    return {bool: "true or false", int: "an integer", str: "a string"}.get(expected, "a value")


def show_default(f: dataclasses.Field[Any]) -> str:
    """An option's default as --help and the README show it."""
    default = f.default
    if f.metadata.get("shown") is not None:
        return str(f.metadata["shown"])
    if isinstance(default, tuple):
        return " ".join(map(str, default)) or "[]"
    return str(default)


def options_table() -> str:
    """The README's options table, generated from the fields (a test keeps the README in sync)."""
    rows = [
        "| option | CLI flag | default | HUP | per service | description |",
        "|---|---|---|---|---|---|",
    ]
    for f in dataclasses.fields(Config):
        meta = f.metadata
        if meta.get("flag", True):
            flag = "`--" + f.name.replace("_", "-") + "`"
        else:
            flag = meta.get("metavar") or "APP"  # positional arguments
        if meta.get("command"):
            flag += f" ({meta['command']} only)"
        hup = "reloads" if meta.get("reload") else "restart"
        per_service = "yes" if meta.get("per_service") else ""
        help = meta["help"]
        rows.append(
            f"| `{f.name}` | {flag} | `{show_default(f)}` | {hup} | {per_service} | {help} |"
        )
    return "\n".join(rows) + "\n"
