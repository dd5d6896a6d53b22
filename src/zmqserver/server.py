"""``zmqserver.run``: start a server from Python, as Net::Server::ZMQ's ``run`` did from Perl."""

from __future__ import annotations

import logging
import sys
from typing import Any

from .config import App, Config
from .supervisor import Arbiter

LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def configure_logging(config: Config) -> None:
    """Log to stderr at ``config.log_level``, unless the embedding program configured logging."""
    logger = logging.getLogger("zmqserver")
    logger.setLevel(config.log_level_number)
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)


def run(app: str | App | None = None, *, config: Config | None = None, **options: Any) -> int:
    """Run a server in the foreground until it is stopped by a signal; return its exit code.

    ``app`` is a callable or a ``"module:callable"`` string; options are :class:`Config` fields::

        zmqserver.run(port=(6660, 6661), min_servers=5, max_servers=10,
                      app=lambda payload: payload.upper())

    A callable is used as is by forked workers (it is already in memory); a string is imported
    by each worker after the fork.
    """
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
    configure_logging(config)
    preloaded = config.app if callable(config.app) else None
    return Arbiter(config, preloaded).run()
