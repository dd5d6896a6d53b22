"""``--reload``: a new generation of workers when a source file of the app changes (development).

Rule 1: this component only notices changes; what a change does is a HUP, sent to the master
itself, so it goes the one command path every reload takes (signals.py -> ``handle_hup``): a new
generation imports the changed code, and the old one retires once it has registered. An edit
that breaks the import leaves the old generation serving, and the next edit tries again.

How it notices: once a second (a deadline of the master's loop, :meth:`next_deadline`; no
thread, no busy loop) it compares the modification times of the files it watches with those it
saw last. What it watches is found without importing anything in the master (a module the
master imports is inherited by every worker, and HUP could not reload it): each app and hook
module is looked up on ``sys.path`` by name, and if it is a package, or a module inside a
package, every ``.py`` file under the top-level package's directory is watched, so an edit to a
helper module counts too. A project of a few hundred files costs a few hundred ``stat`` calls a
second, which a development server can spare; libraries such as watchfiles were not worth a
dependency for that (and inotify cannot see every file system a project lives on).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from collections.abc import Collection, Iterable, Iterator
from typing import TYPE_CHECKING

from ..config import HOOKS, Config
from .component import Handle, Host, WatchItem

if TYPE_CHECKING:
    from .._process import Credentials

log = logging.getLogger("zmqserver")

#: Seconds between two looks at the files.
CHECK_INTERVAL = 1.0


def module_sources(module: str, path: Iterable[str]) -> list[str]:
    """The source files to watch for ``module`` (``pkg.mod``), found on ``path`` without
    importing it: its top-level package's ``.py`` files, or the module's own file."""
    top = module.partition(".")[0]
    for entry in path:
        base = os.path.join(entry or os.curdir, top)
        if os.path.isdir(base):
            return sorted(_py_files(base))
        if os.path.isfile(base + ".py"):
            return [base + ".py"]
    return []


def _py_files(directory: str) -> Iterator[str]:
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(root, name)


def watched_modules(config: Config) -> list[str]:
    """The modules of every service's app and hooks that are named as ``module:callable``."""
    modules: list[str] = []
    for service in config.service_configs().values():
        for spec in (service.app, *(getattr(service, hook) for hook in HOOKS)):
            if isinstance(spec, str):
                module = spec.partition(":")[0]
                if module and module not in modules:
                    modules.append(module)
    return modules


class ReloadOnChange:
    """A master component that sends the master SIGHUP when a watched source file changes."""

    def __init__(self, interval: float = CHECK_INTERVAL) -> None:
        self.interval = interval
        self.host: Host | None = None
        self.due = math.inf
        self.mtimes: dict[str, tuple[int, int]] = {}
        self.modules: list[str] = []

    def open(self, host: Host) -> None:
        self.host = host
        # Python's .pyc files record a source's mtime in whole seconds: an edit in the second
        # after a worker compiled the module would load the stale .pyc. Workers forked from
        # here write none, so what they import is always the source as it is now.
        sys.dont_write_bytecode = True
        self.modules = watched_modules(host.config)
        self.mtimes = self._scan()
        found = {os.path.dirname(path) for path in self.mtimes}
        if not self.modules:
            log.warning("--reload: no app or hook is named as module:callable; nothing to watch")
            return
        log.info(
            "--reload: watching %d file(s) of %s in %s",
            len(self.mtimes),
            ", ".join(self.modules),
            ", ".join(sorted(found)) or "(none found on sys.path)",
        )
        self.due = time.monotonic() + self.interval

    def _scan(self) -> dict[str, tuple[int, int]]:
        """(modification time in ns, size) of every watched file."""
        path = [os.getcwd(), *sys.path]  # the loader puts the current directory first
        mtimes: dict[str, tuple[int, int]] = {}
        for module in self.modules:
            for file in module_sources(module, path):
                try:
                    stat = os.stat(file)
                except OSError:
                    continue  # deleted between the listing and the stat: a change next time
                mtimes[file] = (stat.st_mtime_ns, stat.st_size)
        return mtimes

    def watch(self) -> list[WatchItem]:
        return []

    def next_deadline(self) -> float:
        return self.due

    def handle(self, ready: Collection[Handle], now: float) -> None:
        if now < self.due:
            return
        self.due = now + self.interval
        mtimes = self._scan()
        if mtimes == self.mtimes:
            return
        changed = sorted(
            path
            for path in mtimes.keys() | self.mtimes.keys()
            if mtimes.get(path) != self.mtimes.get(path)
        )
        self.mtimes = mtimes
        log.info("--reload: %s changed; reloading the workers", ", ".join(changed[:3]))
        assert self.host is not None
        os.kill(self.host.pid, signal.SIGHUP)  # the one path a reload takes: handle_hup

    def on_stop(self, graceful: bool) -> None:
        self.due = math.inf

    def on_reload(self) -> None:
        pass

    def on_config(self, config: Config) -> None:
        pass

    def owned_paths(self) -> list[str]:
        return []

    def admit_user(self, creds: Credentials) -> None:
        pass

    def close(self) -> None:
        self.due = math.inf
