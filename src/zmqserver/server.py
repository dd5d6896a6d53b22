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
    DaemonStartup,
    LogFile,
    check_pid_file,
    daemonize,
    raise_fd_limit,
    wait_for_daemon,
)
from .config import App, Config
from .errors import ConfigError
from .hooks import MASTER_HOOKS, Hooks
from .loader import load_app
from .supervisor import Master, arbiter, pool_supervisor

LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"

log = logging.getLogger("zmqserver")


def configure_logging(config: Config) -> None:
    """Log at ``config.log_level`` to ``config.log_file``, or to stderr.

    Without a log file, a program that embeds the server and configured logging itself keeps
    its own handlers. A log file is an explicit request and is always added.
    """
    logger = logging.getLogger("zmqserver")
    logger.setLevel(config.log_level_number)
    if config.log_file is not None:
        handler: logging.Handler = LogFile(config.log_file)
    elif not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
    else:
        return
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)


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
    hooks = Hooks.load(config, MASTER_HOOKS)
    apps = _master_apps(config)
    startup: DaemonStartup | None = None
    if config.background:
        in_daemon, fd = daemonize()
        if not in_daemon:
            return wait_for_daemon(fd)
        startup = DaemonStartup(fd)
    configure_logging(config)  # in the daemon: the log file is opened by the process using it
    if startup is not None:
        logging.getLogger("zmqserver").addHandler(startup)
        if config.log_file is None:
            log.warning("background mode without log_file: the log goes nowhere")
    # Before anything opens a socket: the broker holds one per client and per worker.
    raise_fd_limit()
    code = 1
    try:
        hooks.run("on_starting", config)
        supervisor = kind(
            config,
            apps,
            reload=reload,
            credentials=credentials,
            on_ready=startup.ready if startup is not None else None,
        )
        code = supervisor.run()
    except Exception as exc:
        if startup is None:
            raise
        log.error("the server could not start: %s", exc)  # reaches the starting command
    finally:
        hooks.run_logged("on_exit", config)
        if startup is not None:
            startup.finish()
    if startup is not None:
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
