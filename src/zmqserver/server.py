"""``zmqserver.run``: start a server from Python, as Net::Server::ZMQ's ``run`` did from Perl.

:func:`serve` is the start-up sequence shared by ``run()`` and ``zmqserver serve``, and
:func:`serve_pool` runs the same sequence for a remote pool (``zmqserver worker``). Its order is
the point of it, so each step says why it comes where it does.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

from ._process import (
    Credentials,
    check_pid_file,
    daemonize,
    raise_fd_limit,
)
from .config import App, Config
from .errors import ConfigError
from .hooks import MASTER_HOOKS, Hooks
from .loader import load_app
from .logsetup import (
    LOG_FORMAT,
    StartupRelay,
    check_log_file,
    load_log_config,
    wait_for_daemon,
)
from .logsetup import configure_logging as _configure
from .supervisor import Master, arbiter, pool_supervisor

__all__ = ["LOG_FORMAT", "configure_logging", "run", "serve", "serve_pool"]

log = logging.getLogger("zmqserver")


def configure_logging(config: Config) -> None:
    """Log as ``config`` says (logsetup.py): its handler on the root logger, so the app's own
    loggers reach the same place; or its ``log_config`` file."""
    _configure(config.log_level_number, config.log_file, config.log_format, config.log_config)


def run(
    app: str | App | None = None,
    *,
    apps: Mapping[str, Any] | None = None,
    config: Config | None = None,
    **options: Any,
) -> int:
    """Run a server in the foreground until it is stopped by a signal; return its exit code.

    ``app`` is a callable or a ``"module:callable"`` string; options are :class:`Config` fields::

        zmqserver.run(port=(6660, 6661), min_servers=5, max_servers=10,
                      app="examples.upper:app")

    (A callable works too; it gets ``bytes``, or ``list[bytes]`` for a job of several frames.)

    ``apps`` runs several services, each with its own pool: a name maps to an app, or to a dict
    of that service's options (``app`` and any option that can be set per service)::

        zmqserver.run(apps={"echo": "examples.echo:app",
                            "upper": {"app": "examples.upper:app", "min_servers": 2,
                                      "job_timeout": 5}})

    A callable is used as is by forked workers (it is already in memory); a string is imported
    by each worker after the fork. With ``background=True`` the server runs as a daemon and this
    call returns 0 in the calling process once it is up.
    """
    if apps is not None:
        options["services"] = apps
    if config is None:
        config = Config.from_mapping({"app": app, **options})
    elif app is not None or options:
        config = Config.from_mapping(
            {
                **{k: getattr(config, k) for k in config.__dataclass_fields__},
                **({"app": app} if app is not None else {}),
                **options,
            }
        )
    else:
        config = config.validate()
    return serve(config)


def serve(config: Config, *, reload: Callable[[], Config] | None = None) -> int:
    """Start the server ``config`` describes and run it until it stops; return its exit code.

    ``reload`` rebuilds the config from its sources for HUP (the CLI re-reads its file).
    Problems found before anything binds raise :class:`~zmqserver.errors.ConfigError` or
    :class:`~zmqserver.errors.AppLoadError`, in the caller's process, even in background mode.
    """
    return _start(arbiter, config, reload)


def serve_pool(config: Config, *, reload: Callable[[], Config] | None = None) -> int:
    """Run a remote worker pool for the broker at ``config.connect`` until it stops.

    The same start-up sequence, signals and process options as :func:`serve`, without a broker.
    """
    return _start(pool_supervisor, config, reload)


def _start(kind: Callable[..., Master], config: Config, reload: Callable[[], Config] | None) -> int:
    config = config.validate()
    # Directory and umask first: every relative path below, the app import and every file and
    # ipc:// socket created from here on depend on them.
    if config.chdir is not None:
        try:
            os.chdir(config.chdir)
        except OSError as exc:
            raise ConfigError(f"chdir: {config.chdir}: {exc.strerror}") from None
    if config.umask is not None:
        os.umask(config.umask)
    # Checks that can fail, while errors still reach the terminal: a misspelt user, a server
    # already running, a hook or a preloaded app that does not import.
    credentials = Credentials.resolve(config.user, config.group)
    if config.pid_file is not None:
        check_pid_file(config.pid_file)
    # The log's destination too: a log file that cannot be opened, or a logging config that
    # does not load, is a config error (exit status 2), said on the terminal.
    if config.log_config is not None:
        load_log_config(config.log_config)
    elif config.log_file is not None:
        check_log_file(config.log_file)
    hooks = Hooks.load(config, MASTER_HOOKS)
    apps = _master_apps(config)
    relay: StartupRelay | None = None
    if config.background:
        in_daemon, fd = daemonize()
        if not in_daemon:
            return wait_for_daemon(fd)
        relay = StartupRelay(fd, pipe=True)
    elif config.log_file is not None or config.log_config is not None:
        # The log goes to a file: what stops the server before it is up must reach the
        # terminal as well, or `zmqserver serve` would just exit.
        relay = StartupRelay(sys.stderr.fileno(), pipe=False)
    code = 1
    try:
        configure_logging(config)  # in the daemon: the log file is opened by the process using it
        if relay is not None:
            relay.attach()
            if config.background and config.log_file is None and config.log_config is None:
                log.warning("background mode without log_file: the log goes nowhere")
        # Before anything opens a socket: the broker holds one per client and per worker.
        raise_fd_limit()
        hooks.run("on_starting", config)
        supervisor = kind(
            config,
            apps,
            reload=reload,
            credentials=credentials,
            on_ready=relay.ready if relay is not None else None,
        )
        code = supervisor.run()
    except Exception as exc:
        if not config.background:
            raise
        log.error("the server could not start: %s", exc)  # reaches the starting command
    finally:
        hooks.run_logged("on_exit", config)
        if relay is not None:
            relay.finish(code)
    if config.background:
        # The daemon must never return into its caller's code: that stack belongs to the
        # process that started it, which has already returned.
        logging.shutdown()
        os._exit(code)
    return code


def _master_apps(config: Config) -> dict[str, App]:
    """The apps the master holds, by service: callables given as such, and preloaded ones.

    The other services' workers import their app after the fork.
    """
    apps: dict[str, App] = {}
    for name, service in config.service_configs().items():
        spec = service.app
        if callable(spec):
            apps[name] = spec
        elif service.preload_app:
            apps[name] = load_app(spec)
        elif isinstance(spec, str) and spec.partition(":")[0] in sys.modules:
            log.warning(
                "the app's module %r was imported by the master (by a hook?): workers inherit "
                "it, so HUP will not reload its code",
                spec.partition(":")[0],
            )
    return apps
