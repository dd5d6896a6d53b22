"""The compiled dispatch core and protocol (mypyc): in use where built, and never stale."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import zmqserver
from zmqserver import _compiled

PURE = bool(os.environ.get("ZMQSERVER_PURE_PYTHON"))


def test_setup_compiles_the_modules_the_finder_knows():
    tree = ast.parse((Path(__file__).parents[2] / "setup.py").read_text())
    (listed,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "COMPILED"
    ]
    assert tuple(ast.literal_eval(listed)) == _compiled.MODULES


def test_compiled_modules_are_the_ones_imported_here():
    """CI builds them: an optional build that failed quietly must not go unnoticed."""
    if PURE:
        pytest.skip("pure-Python path forced by ZMQSERVER_PURE_PYTHON")
    assert _compiled.compiled() == dict.fromkeys(_compiled.MODULES, True)


def test_the_pure_python_switch_runs_the_source():
    if not PURE:
        pytest.skip("only with ZMQSERVER_PURE_PYTHON=1 (make test's second pass)")
    assert _compiled.compiled() == dict.fromkeys(_compiled.MODULES, False)


def _import_in_copy(
    tmp_path: Path, touch: str | None, drop: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Import the dispatch core from a copy of the package, after touching one of its files
    (or dropping those that match a pattern)."""
    package = Path(zmqserver.__file__).parent
    copy = tmp_path / "zmqserver"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    if drop is not None:
        for path in copy.glob(drop):
            path.unlink()
    if touch is not None:
        later = time.time() + 10
        os.utime(copy / touch, (later, later))
    code = (
        "import zmqserver._compiled as c, zmqserver.broker.dispatch as r; "
        "print(c.compiled()['broker.dispatch'], r.__file__.endswith('.py'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "ZMQSERVER_PURE_PYTHON"}
    env["PYTHONPATH"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )


def test_a_stale_extension_gives_way_to_its_source(tmp_path):
    """An edit after the last build must run, not the code compiled before it."""
    package = Path(zmqserver.__file__).parent
    if not any((package / f"broker/dispatch{suffix}").exists() for suffix in EXTENSION_SUFFIXES):
        pytest.skip("the dispatch core is not compiled here")
    fresh = _import_in_copy(tmp_path / "fresh", None)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.split() == ["True", "False"]
    assert "older than" not in fresh.stderr

    stale = _import_in_copy(tmp_path / "stale", "broker/dispatch.py")
    assert stale.returncode == 0, stale.stderr
    assert stale.stdout.split() == ["False", "True"]
    assert "as the compiled broker.dispatch is older than its .py file" in stale.stderr


def test_one_stale_module_sends_all_of_them_to_source(tmp_path):
    """Compiled modules import each other past the finder: they are stale or fresh together."""
    package = Path(zmqserver.__file__).parent
    if not any((package / f"protocol{suffix}").exists() for suffix in EXTENSION_SUFFIXES):
        pytest.skip("the protocol is not compiled here")
    stale = _import_in_copy(tmp_path, "protocol.py")
    assert stale.returncode == 0, stale.stderr
    assert stale.stdout.split() == ["False", "True"]


def test_a_build_missing_part_of_the_group_runs_the_source(tmp_path):
    """setup.py marks each extension optional: a compiler that failed on the group's library
    but not on a module's stub must not leave an import that fails halfway."""
    package = Path(zmqserver.__file__).parent
    if not list(package.glob(f"{_compiled.GROUP}__mypyc.*")):
        pytest.skip("nothing compiled here")
    partial = _import_in_copy(tmp_path, None, drop=f"{_compiled.GROUP}__mypyc.*")
    assert partial.returncode == 0, partial.stderr
    assert partial.stdout.split() == ["False", "True"]
    assert f"the build lacks the compiled {', '.join(_compiled.MODULES)}" in partial.stderr
