"""The version, from the installed package's metadata: pyproject.toml is its one source."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _metadata_version


def version() -> str:
    """The installed distribution's version ("unknown" when run from a tree never installed)."""
    try:
        return _metadata_version("zmqserver")
    except PackageNotFoundError:
        return "unknown"


def version_line() -> str:
    """What ``zmqserver --version`` prints: the version and the compiled parts in use."""
    from ._compiled import describe

    return f"zmqserver {version()} ({describe()})"
