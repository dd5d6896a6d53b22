"""User hooks: plain callables named in the config (``module:callable``) or given to ``run()``.

Each hook is loaded in the process that calls it, and only there:

* the master loads ``on_starting`` and ``on_exit``;
* each worker loads ``post_fork``, ``pre_request``, ``post_request`` and ``worker_exit`` after
  the fork, the way it imports the app, so HUP reloads them with the app and the master never
  imports a module it would then pin for every future worker (a module the master has imported
  is inherited by forked workers, not re-read from disk).

A hook that cannot be loaded is an :class:`~zmqserver.errors.AppLoadError` naming the option.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from .config import Config, Hook
from .loader import load_app

log = logging.getLogger("zmqserver")

MASTER_HOOKS = ("on_starting", "on_exit")
WORKER_HOOKS = ("post_fork", "pre_request", "post_request", "worker_exit")


class Hooks:
    """The loaded hooks of one process. Calling an unset hook does nothing."""

    def __init__(self, hooks: dict[str, Hook] | None = None) -> None:
        self._hooks = dict(hooks or {})

    @classmethod
    def load(cls, config: Config, names: Iterable[str]) -> Hooks:
        """Import the hooks ``names`` that ``config`` sets; raise AppLoadError naming one."""
        loaded = {}
        for name in names:
            spec = getattr(config, name)
            if spec is not None:
                loaded[name] = load_app(spec, what=name)
        return cls(loaded)

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def get(self, name: str) -> Hook | None:
        """Hook ``name``, or None when it is not set: a hot path looks it up once, not per call."""
        return self._hooks.get(name)

    def run(self, name: str, *args: Any) -> None:
        """Call hook ``name``; its exceptions propagate (the caller decides what they mean)."""
        hook = self._hooks.get(name)
        if hook is not None:
            hook(*args)

    def run_logged(self, name: str, *args: Any) -> None:
        """Call hook ``name`` where nothing can be undone: an exception is logged, not raised."""
        try:
            self.run(name, *args)
        except Exception:
            log.exception("the %s hook raised", name)
