"""Which modules are compiled (mypyc), and the switch back to their Python source.

The code every job runs through (broker/dispatch.py, broker/shell.py, protocol.py, worker.py) is
compiled by mypyc when the package is built (setup.py): the same source, type-checked, turned into C
extensions that sit beside the .py files and win the import. There is one implementation of
every routing decision; compiling it only takes the interpreter out of the per-job path.

``ZMQSERVER_PURE_PYTHON=1`` runs the Python source instead (and, in _io.py, the pure-Python
socket I/O), so the test suite holds the fallback, where no compiler was available, to the same
tests. The switch is a finder put ahead of the normal ones before any of these modules is
imported: it answers for exactly these module names, with their .py files.

The same finder keeps a stale build out: an extension older than its .py file (the source was
edited or checked out after the last build) would run code that is no longer in the tree, so the
source runs instead, with a warning, until the package is built again (``make`` does it). The
modules are one unit: compiled code imports its fellow compiled modules directly, past any
finder, so if one of them is stale, all of them run from source.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import EXTENSION_SUFFIXES
from types import ModuleType

#: The modules setup.py compiles, by name within the package (a test checks the two agree).
MODULES = (
    "broker.admission",
    "broker.deadlines",
    "broker.dispatch",
    "broker.replycache",
    "broker.shell",
    "broker.state",
    "protocol",
    "worker",
)
#: The name of their group: setup.py builds them into one shared library, ``GROUP__mypyc``.
GROUP = "_core"

_PACKAGE = __name__.rpartition(".")[0]
_HERE = os.path.dirname(__file__)


def _path(name: str) -> str:
    """The file path of ``name`` (dotted within the package: "broker.dispatch"), no suffix."""
    return os.path.join(_HERE, *name.split("."))


def _source(name: str) -> str:
    return _path(name) + ".py"


def _extension(name: str) -> str | None:
    """The built extension for ``name``, if there is one."""
    for suffix in EXTENSION_SUFFIXES:
        path = _path(name) + suffix
        if os.path.exists(path):
            return path
    return None


def _stale(name: str, source: str) -> bool:
    """Is there an extension for ``name`` that was built before ``source`` last changed?"""
    extension = _extension(name)
    if extension is None:
        return False
    try:
        changed = os.stat(source).st_mtime
    except OSError:
        return False  # no source (an installed wheel may ship only the extension)
    return os.stat(extension).st_mtime < changed


def _missing() -> list[str]:
    """The modules whose compiled code is missing from a build that has some (the compiler
    failed on part of it: setup.py marks each extension optional), so importing one of the
    others does not fail halfway through the package."""
    if not any(_extension(name) for name in MODULES):
        return []  # nothing compiled: the source, as for any pure-Python package
    try:
        group = importlib.import_module(f"{_PACKAGE}.{GROUP}__mypyc")
    except ImportError:
        return list(MODULES)
    prefix = "init_" + _PACKAGE.replace(".", "___") + "___"
    return [name for name in MODULES if not hasattr(group, prefix + name.replace(".", "___"))]


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Import the compiled modules from their .py files when asked to, or when stale."""

    names = frozenset(f"{_PACKAGE}.{name}" for name in MODULES)

    def __init__(self, pure: bool) -> None:
        self.pure = pure
        #: Why the extensions cannot be used although they are built ("" if they can).
        self.unusable = ""
        if not pure:
            stale = [name for name in MODULES if _stale(name, _source(name))]
            missing = [] if stale else _missing()
            if len(stale) == 1:
                self.unusable = f"the compiled {stale[0]} is older than its .py file"
            elif stale:
                self.unusable = f"the compiled {', '.join(stale)} are older than their .py files"
            elif missing:
                self.unusable = f"the build lacks the compiled {', '.join(missing)}"

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        source = _source(fullname[len(_PACKAGE) + 1 :])
        if not self.pure:
            if not self.unusable:
                return None  # the normal finders: the extension if built, else the source
            warnings.warn(
                f"{fullname}: running the source, as {self.unusable} "
                "(rebuild with `make` or `pip install -e .`)",
                RuntimeWarning,
                stacklevel=2,
            )
        return importlib.util.spec_from_file_location(fullname, source)


def install() -> None:
    """Put the finder first (once), before any of :data:`MODULES` is imported.

    Done when this module is imported, which the package's ``__init__`` does first of all.
    """
    if not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder(bool(os.environ.get("ZMQSERVER_PURE_PYTHON"))))


def compiled() -> dict[str, bool]:
    """For each module in :data:`MODULES`, whether the imported one is the compiled one."""
    found = {}
    for name in MODULES:
        module = sys.modules.get(f"{_PACKAGE}.{name}") or importlib.import_module(
            f"{_PACKAGE}.{name}"
        )
        found[name] = not (module.__file__ or "").endswith(".py")
    return found


install()
