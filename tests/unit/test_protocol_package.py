"""The shape of the protocol package: what it re-exports, and which module imports which."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import zmqserver.protocol as protocol

PACKAGE = Path(protocol.__file__).parent
SUBMODULES = ("frames", "frontend", "backend")


def _public(module: str) -> set[str]:
    """The public names a submodule defines (not the ones it imports)."""
    names: set[str] = set()
    for node in ast.parse((PACKAGE / f"{module}.py").read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(ast.unparse(target) for target in node.targets)
        elif isinstance(node, ast.AnnAssign):
            names.add(ast.unparse(node.target))
    return {name for name in names if not name.startswith("_")}


def _imports(module: str) -> set[str]:
    """What a submodule imports, as absolute module names."""
    found: set[str] = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ["zmqserver", "protocol"][: 3 - node.level] if node.level else []
            found.add(".".join([*base, node.module or ""]).strip("."))
    return found


def test_the_package_re_exports_every_public_name_of_its_modules() -> None:
    defined = set().union(*(_public(module) for module in SUBMODULES))
    assert set(protocol.__all__) == defined
    for module in SUBMODULES:
        loaded = importlib.import_module(f"zmqserver.protocol.{module}")
        for name in _public(module):
            assert getattr(protocol, name) is getattr(loaded, name), name


@pytest.mark.parametrize(
    ("module", "may_import"),
    [
        ("frames", set()),
        ("frontend", {"zmqserver.protocol.frames"}),
        ("backend", {"zmqserver.protocol.frames"}),
    ],
)
def test_frames_is_the_base_and_nothing_imports_zmq(module: str, may_import: set[str]) -> None:
    """frames <- frontend, frames <- backend: no cycle, and the two halves stay apart."""
    imported = _imports(module)
    assert not any(name == "zmq" or name.startswith("zmq.") for name in imported)
    ours = {name for name in imported if name.startswith("zmqserver.protocol")}
    assert ours == may_import
