"""Turn an app spec such as ``examples.upper:app`` into the callable it names.

The current directory goes on ``sys.path`` first, as gunicorn does, so ``zmqserver serve
myapp:handle`` works from a project checkout without installing it.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
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
        raise AppLoadError(f"{what} {spec!r} is not of the form 'module:callable'")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        if getattr(exc, "name", None) == module_name:
            # The module itself is missing: its traceback would only show the loader's frames.
            raise AppLoadError(
                f"{what} {spec!r}: cannot import module {module_name!r}; is it on the path? "
                f"(cwd: {cwd})"
            ) from None
        raise AppLoadError(f"{what} {spec!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise AppLoadError(
            f"{what} {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(
                f"{what} {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(obj):
        raise AppLoadError(f"{what} {spec!r} is not callable (it is a {type(obj).__name__})")
    return obj  # type: ignore[no-any-return]


def explain(exc: AppLoadError) -> str:
    """The message, followed by the traceback of the error the import raised (if any): what
    failed to load, and where in its code. Import errors are the commonest start-up failure,
    and their cause is usually a line or two below the module the spec names."""
    cause = exc.__cause__
    if cause is None:
        return str(exc)
    found = traceback.TracebackException.from_exception(cause)
    # The loader's and importlib's own frames say nothing about the app.
    found.stack = traceback.StackSummary.from_list(
        [f for f in found.stack if f.filename != __file__ and "importlib" not in f.filename]
    )
    trace = "".join(found.format()).rstrip("\n")
    return f"{exc}\n{trace}"
