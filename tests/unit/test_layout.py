"""The house's shape: no import cycles inside the package, and no module that outgrew one concern.

The import graph is read from the source (module-level imports; those under ``TYPE_CHECKING``
are for the type checker only and are left out), so a cycle fails here, named, before it fails
as an ImportError in one import order and not another.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "src" / "zmqserver"
#: About 700 lines a module (docs/architecture.md); past this, split along the module's seams.
MAX_LINES = 750
#: Declarations, not logic: the schema is one field per option with its help text (the
#: README's table and --help are generated from it), as gunicorn's config.py is. It grows by
#: ~10 lines an option; its code (coercion, the table) is small and counted with it.
LONGER = {"config/schema.py": 1400}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports when it is imported."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            candidates = [f"{target}.{alias.name}" for alias in node.names]
            if node.module:
                candidates.append(target)
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c in modules and c != name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_package_has_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "zmqserver.broker.dispatch" in graph["zmqserver.broker.shell"]  # the reader works
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_outgrew_one_concern() -> None:
    sizes = {path.relative_to(PACKAGE).as_posix(): len(path.read_text().splitlines())
             for path in PACKAGE.rglob("*.py")}  # fmt: skip
    too_long = {name: size for name, size in sizes.items() if size > LONGER.get(name, MAX_LINES)}
    assert too_long == {}


def test_no_merge_conflict_markers_were_committed() -> None:
    # A conflict resolved by hand once left its markers in CHANGELOG.md; nothing else reads it.
    root = PACKAGE.parents[1]
    markers = ("<<<<<<< ", ">>>>>>> ")
    found = []
    for path in [
        root / "README.md",
        root / "CHANGELOG.md",
        root / "BENCHMARKS.md",
        root / "Makefile",
    ]:
        found += [f"{path.name}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1)
                  if line.startswith(markers)]  # fmt: skip
    for folder in ("src", "tests", "docs", "bench", "examples"):
        for path in (root / folder).rglob("*"):
            if path.suffix in (".py", ".md", ".toml", ".c", ".html") and path.is_file():
                found += [f"{path.relative_to(root)}:{n}"
                          for n, line in enumerate(path.read_text().splitlines(), 1)
                          if line.startswith(markers)]  # fmt: skip
    assert found == []
