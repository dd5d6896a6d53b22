"""The compiled modules (mypyc): in use where built, never stale, and file times never matter."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import zmqserver
from zmqserver import _compiled

PURE = bool(os.environ.get("ZMQSERVER_PURE_PYTHON"))
ROOT = Path(__file__).parents[2]
PACKAGE = Path(zmqserver.__file__).parent


def _built() -> bool:
    return _compiled.read_stamp() is not None and bool(_compiled.read_stamp().get("compiled"))


def test_make_rebuilds_when_a_compiled_source_changes():
    """The Makefile's install stamp depends on every compiled module's source."""
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^COMPILED_SRC := (.*?)(?<!\\)$", makefile, re.M | re.S)
    assert match is not None
    listed = match.group(1).replace("\\\n", " ")
    for name in _compiled.MODULES:
        source = Path(_compiled.source_path(name)).relative_to(ROOT).as_posix()
        wildcard = f"$(wildcard {Path(source).parent.as_posix()}/*.py)"
        assert source in listed or wildcard in listed, f"{source} is not in COMPILED_SRC"


def test_compiled_modules_are_the_ones_imported_here():
    """CI builds them: an optional build that failed quietly must not go unnoticed."""
    if PURE:
        pytest.skip("pure-Python path forced by ZMQSERVER_PURE_PYTHON")
    assert _compiled.compiled() == dict.fromkeys(_compiled.MODULES, True)
    assert _compiled.unusable() == ""


def test_the_pure_python_switch_runs_the_source():
    if not PURE:
        pytest.skip("only with ZMQSERVER_PURE_PYTHON=1 (make test's second pass)")
    assert _compiled.compiled() == dict.fromkeys(_compiled.MODULES, False)
    assert _compiled.describe() == "pure Python"


def test_the_build_stamps_the_sources_it_compiled():
    if not _built():
        pytest.skip("nothing compiled here")
    stamp = _compiled.read_stamp()
    assert stamp is not None
    assert sorted(stamp["compiled"]) == sorted(_compiled.MODULES)
    for name in _compiled.MODULES:
        assert stamp["sources"][name] == _compiled.source_hash(_compiled.source_path(name))


def _env(tmp_path: Path) -> dict[str, str]:
    """Import from the copy in ``tmp_path``, without the pure-Python switch."""
    env = {k: v for k, v in os.environ.items() if k != "ZMQSERVER_PURE_PYTHON"}
    return env | {"PYTHONPATH": str(tmp_path)}


def _import_in_copy(
    tmp_path: Path,
    edit: str | None = None,
    drop: str | None = None,
    touch_all: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Import the routing core from a copy of the package, after editing one of its sources
    (``edit``), dropping the files that match ``drop``, or giving every source a later time
    than every extension (``touch_all``: what pip does when it writes a wheel's .so first)."""
    copy = tmp_path / "zmqserver"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    if drop is not None:
        for path in copy.glob(drop):
            path.unlink()
    if edit is not None:
        with open(copy / edit, "a") as source:
            source.write("\n# edited after the build\n")
    if touch_all:
        later = time.time() + 10
        for path in copy.rglob("*.py"):
            os.utime(path, (later, later))
    code = (
        "import zmqserver._compiled as c, zmqserver.broker.dispatch as d; "
        "print(c.compiled()['broker.dispatch'], d.__file__.endswith('.py'))"
    )
    return subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )


def _run_warned(result: subprocess.CompletedProcess[str], reason: str) -> None:
    """Under -W error the warning that the source runs is raised: its text is the reason."""
    assert result.returncode != 0
    assert "running the source, as" in result.stderr
    assert reason in result.stderr


def test_file_times_never_matter(tmp_path):
    """The bug a wheel showed: pip writes each .so before its .py, and a check of file times
    called every compiled module stale. Only the sources' contents count."""
    if not _built():
        pytest.skip("nothing compiled here")
    result = _import_in_copy(tmp_path, touch_all=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]


def test_an_edited_source_runs_instead_of_its_stale_extension(tmp_path):
    """An edit after the last build must run, not the code compiled before it."""
    if not _built():
        pytest.skip("nothing compiled here")
    _run_warned(
        _import_in_copy(tmp_path, edit="broker/dispatch.py"),
        "broker/dispatch.py changed after the build",
    )
    quiet = subprocess.run(
        [sys.executable, "-c", "import zmqserver.broker.dispatch as d; print(d.__file__)"],
        env=_env(tmp_path) | {"PYTHONWARNINGS": "ignore"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert quiet.stdout.strip().endswith("dispatch.py"), quiet.stderr


def test_one_stale_module_sends_all_of_them_to_source(tmp_path):
    """Compiled modules import each other past the finder: they are stale or fresh together."""
    if not _built():
        pytest.skip("nothing compiled here")
    _run_warned(_import_in_copy(tmp_path, edit="protocol/frames.py"), "protocol/frames.py changed")


def test_a_build_missing_part_of_the_group_runs_the_source(tmp_path):
    """setup.py marks each extension optional: a compiler that failed on the group's library
    but not on a module's stub must not leave an import that fails halfway."""
    if not _built():
        pytest.skip("nothing compiled here")
    _run_warned(
        _import_in_copy(tmp_path, drop=f"{_compiled.GROUP}__mypyc.*"),
        f"the build lacks the modules' shared library ({_compiled.GROUP}__mypyc)",
    )


def test_a_build_that_recorded_nothing_runs_the_source(tmp_path):
    if not _built():
        pytest.skip("nothing compiled here")
    _run_warned(_import_in_copy(tmp_path, drop=_compiled.STAMP), f"{_compiled.STAMP} is missing")


def test_a_stamp_that_lacks_a_module_runs_the_source(tmp_path):
    if not _built():
        pytest.skip("nothing compiled here")
    copy = tmp_path / "zmqserver"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    stamp = json.loads((copy / _compiled.STAMP).read_text())
    stamp["compiled"].remove("broker.dispatch")
    (copy / _compiled.STAMP).write_text(json.dumps(stamp))
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", "import zmqserver.broker.dispatch"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    _run_warned(result, "the build lacks the compiled broker.dispatch")


def test_version_names_the_compiled_parts():
    from zmqserver import _io
    from zmqserver._version import version_line

    line = version_line()
    assert line.startswith("zmqserver ")
    if PURE:
        assert line.endswith("(pure Python)")
    else:
        parts = list(dict.fromkeys(name.partition(".")[0] for name in _compiled.MODULES))
        if _io.COMPILED:
            parts.append("_fastio")
        assert line.endswith(f"(compiled: {', '.join(parts)})")


def test_the_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    from zmqserver._version import version as ours

    assert ours() == version("zmqserver")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{ours()}"' in pyproject
