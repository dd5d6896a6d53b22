"""Turn an app spec such as ``examples.upper:app`` into the callable it names.

The current directory goes on ``sys.path`` first, as gunicorn does, so ``zmqserver serve
myapp:handle`` works from a project checkout without installing it.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from .config import App
from .errors import AppLoadError


def echo(payload: Any) -> Any:
    """The app used when none is given: the reply is the payload (the seed's default)."""
    return payload


def load_app(spec: str | App | None, what: str = "app") -> App:
    """Return the callable for ``spec``; raise :class:`AppLoadError` saying what went wrong.

    ``module`` alone means ``module:app``. Attribute paths may be dotted (``pkg.mod:obj.method``).
    ``what`` names the option in messages (``app``, or a hook such as ``post_fork``).
    """
    if spec is None:
        return echo
    if not isinstance(spec, str):
        if not callable(spec):
            raise AppLoadError(f"{what} {spec!r} is not callable")
        return spec
    module_name, _, attr_path = spec.partition(":")
    attr_path = attr_path or "app"
    if not module_name or not all(part.isidentifier() for part in attr_path.split(".")):
        raise AppLoadError(f"{what} spec {spec!r} is not of the form 'module:callable'")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        if getattr(exc, "name", None) == module_name:
            raise AppLoadError(
                f"cannot import module {module_name!r} (from {what} spec {spec!r}); "
                f"is it on the path? (cwd: {cwd})"
            ) from exc
        raise AppLoadError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise AppLoadError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    if not callable(obj):
        raise AppLoadError(f"{spec!r} is not callable (it is a {type(obj).__name__})")
    return obj  # type: ignore[no-any-return]
