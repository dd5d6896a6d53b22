"""Which modules are compiled (mypyc), and the switch back to their Python source.

The code every job runs through (the routing core, the wire protocol, the broker shell, the
worker loop, and the client library's sans-IO core: its per-request state and pipeline) is
compiled by mypyc when the package is built (setup.py): the same source, type-checked, turned
into C extensions that sit beside the .py files and win the import. There
is one implementation of every routing decision; compiling it only takes the interpreter out of
the per-job path. Delivered the way msgpack and aiohttp deliver theirs:

1. ``ZMQSERVER_PURE_PYTHON=1`` runs the Python source (and, in _io.py, pyzmq's socket calls),
   so the test suite holds the fallback, where nothing could be compiled, to the same tests.
2. Otherwise the extension, if it was built.
3. Otherwise the source, as for any pure-Python package.

A build records what it compiled, and a hash of each compiled module's source, in
``_build.json`` beside the extensions (setup.py writes it). If the source beside an extension is
not the source it was built from (an editable tree edited or checked out since the last build),
or the build lacks part of the group (setup.py marks each extension optional), the source runs
instead, with a warning, until the package is built again (``make`` does it). Files' times are
never compared: an installer may write a wheel's files in any order. The modules are one unit:
compiled code imports its fellow compiled modules directly, past any finder, so if one of them
cannot be used, all of them run from source.

Running the source means putting a finder ahead of the normal ones before any of these modules
is imported (the package's ``__init__`` imports this module first): it answers for exactly
these module names, with their .py files. Nothing else is ever found differently.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
import warnings
from importlib.machinery import EXTENSION_SUFFIXES
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

#: The modules setup.py compiles, by dotted name within the package (setup.py reads this tuple).
MODULES = (
    "broker.admission",
    "broker.clients",
    "broker.deadlines",
    "broker.dispatch",
    "broker.liveness",
    "broker.metrics",
    "broker.queries",
    "broker.replycache",
    "broker.shell",
    "broker.state",
    "client.pipeline",
    "client.state",
    "protocol.backend",
    "protocol.frames",
    "protocol.frontend",
    "worker",
)
#: The name of their group: setup.py builds them into one shared library, ``GROUP__mypyc``.
GROUP = "_core"
#: What setup.py writes beside the extensions: what it compiled, from which sources.
STAMP = "_build.json"

_PACKAGE = __name__.rpartition(".")[0]
_HERE = os.path.dirname(__file__)


def source_path(name: str) -> str:
    """The .py file of the compiled module ``name`` (a dotted name within the package)."""
    return os.path.join(_HERE, *name.split(".")) + ".py"


def source_hash(path: str) -> str:
    """What the build stamps for a source file, and what the import compares."""
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def _extension(name: str) -> str | None:
    """The built extension for ``name``, if there is one."""
    base = os.path.join(_HERE, *name.split("."))
    for suffix in EXTENSION_SUFFIXES:
        if os.path.exists(base + suffix):
            return base + suffix
    return None


def read_stamp() -> dict[str, object] | None:
    """The build's record (see setup.py), or None where nothing recorded one."""
    try:
        with open(os.path.join(_HERE, STAMP)) as file:
            stamp = json.load(file)
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def unusable() -> str:
    """Why the built extensions cannot be used, or "" if they can (or none were built)."""
    if not any(_extension(name) for name in MODULES):
        return ""  # nothing compiled: the source, as for any pure-Python package
    stamp = read_stamp()
    if stamp is None:
        return f"the build did not record what it compiled ({STAMP} is missing)"
    built = stamp.get("compiled")
    sources = stamp.get("sources")
    if not isinstance(built, list) or not isinstance(sources, dict):
        return f"{STAMP} is not one this version writes"
    missing = [name for name in MODULES if name not in built or _extension(name) is None]
    if missing:
        return f"the build lacks the compiled {', '.join(missing)}"
    if _extension(f"{GROUP}__mypyc") is None:
        return f"the build lacks the modules' shared library ({GROUP}__mypyc)"
    stale = []
    for name in MODULES:
        try:
            current = source_hash(source_path(name))
        except OSError:
            continue  # no source beside the extension: nothing it could be stale against
        if sources.get(name) != current:
            stale.append(name.replace(".", "/") + ".py")
    if len(stale) == 1:
        return f"{stale[0]} changed after the build"
    if stale:
        return f"{', '.join(stale)} changed after the build"
    return ""


class _SourceFinder:
    """Import the compiled modules from their .py files.

    A meta path finder by its ``find_spec`` alone (importlib.abc.MetaPathFinder would cost every
    ``import zmqserver`` several milliseconds of imports for nothing)."""

    names = frozenset(f"{_PACKAGE}.{name}" for name in MODULES)

    def __init__(self, reason: str) -> None:
        #: Why the source runs: "" when asked to (ZMQSERVER_PURE_PYTHON), else what is wrong.
        self.reason = reason

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname not in self.names:
            return None
        if self.reason:
            warnings.warn(
                f"{fullname}: running the source, as {self.reason} "
                "(rebuild with `make` or `pip install -e .`)",
                RuntimeWarning,
                stacklevel=2,
            )
        return importlib.util.spec_from_file_location(
            fullname, source_path(fullname[len(_PACKAGE) + 1 :])
        )


def install() -> None:
    """Decide, once and before any of :data:`MODULES` is imported, extension or source.

    Done when this module is imported, which the package's ``__init__`` does first of all.
    """
    if any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
        return
    if os.environ.get("ZMQSERVER_PURE_PYTHON"):
        sys.meta_path.insert(0, _SourceFinder(""))
        return
    reason = unusable()
    if reason:
        sys.meta_path.insert(0, _SourceFinder(reason))


def compiled() -> dict[str, bool]:
    """For each module in :data:`MODULES`, whether the imported one is the compiled one."""
    found = {}
    for name in MODULES:
        fullname = f"{_PACKAGE}.{name}"
        module = sys.modules.get(fullname) or importlib.import_module(fullname)
        found[name] = not (module.__file__ or "").endswith(".py")
    return found


def parts(modules: dict[str, bool]) -> list[str]:
    """The compiled parts, as ``--version`` names them: a package when all of its compiled
    modules are (``broker`` for ``broker.*``), else the module."""
    named: dict[str, bool] = {}
    for name, done in modules.items():
        part = name.partition(".")[0]
        named[part] = named.get(part, True) and done
    return [part for part, done in named.items() if done]


def describe() -> str:
    """The compiled parts in use, for ``zmqserver --version``: "compiled: a, b" or "pure Python"."""
    from . import _io

    found = parts(compiled())
    if _io.COMPILED:
        found.append("_fastio")
    return f"compiled: {', '.join(found)}" if found else "pure Python"


install()
