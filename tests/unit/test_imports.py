"""What ``import zmqserver`` costs a client: the client library, and none of the server.

Each check runs in a fresh interpreter: in this one, other tests have long since imported the
server modules, and a lazy name resolved once is no longer lazy.

Modules are matched by prefix (a name, or a name followed by a dot) so that the check still holds
when a module becomes a package (``zmqserver.broker`` -> ``zmqserver.broker.core``).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import zmqserver

REPO = Path(__file__).resolve().parents[2]

#: Server code, and the asyncio stack only AsyncClient needs.
NOT_FOR_CLIENTS = (
    "zmqserver.supervisor",
    "zmqserver.server",
    "zmqserver.routing",
    "zmqserver.broker",
    "zmqserver.worker",
    "zmqserver.config",
    "zmqserver.scaling",
    "zmqserver.loader",
    "zmqserver.hooks",
    "zmqserver.status",
    "zmqserver.cli",
    "zmqserver._process",
    "zmqserver._io",
    "zmqserver._fastio",
    "zmqserver.security.zap",
    "zmqserver.client.aio",
    "zmqserver.context",
    "zmqserver.durable.sqlite",
    "zmqserver.durable.store",
    "sqlite3",
    "zmq.asyncio",
    "asyncio",
)

LAZY = (
    "run",
    "AsyncClient",
    "client_key",
    "request",
    "Config",
    "App",
    "AsyncSubscriber",
)


def fresh(code: str) -> object:
    """Run ``code`` in a new interpreter; it prints one JSON value, which is returned."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def loaded(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_the_prefix_match_does_not_take_a_neighbour_for_a_submodule() -> None:
    modules = ["zmqserver.client", "zmqserver.broker.core", "zmqserver.cli", "asyncio.events"]
    assert loaded(modules, ("zmqserver.cli", "zmqserver.broker", "asyncio")) == [
        "asyncio.events",
        "zmqserver.broker.core",
        "zmqserver.cli",
    ]


#: What client/ may import from the rest of the package: the wire format, the errors, the
#: client half of security (credentials) and the socket I/O (client/wire.py, not at import time);
#: the server side may import the client, never the reverse.
CLIENT_MAY_IMPORT = (
    "zmqserver._io",  # the compiled socket I/O, imported when a client makes its first socket
    "zmqserver.pubsub.cli",  # zmq-client sub/pub: pub-sub's client half, no server code
    "zmqserver._version",
    "zmqserver.durable.tsp",
    "zmqserver.errors",
    "zmqserver.protocol",
    "zmqserver.security",
)
SERVER_SIDE = tuple(
    p
    for p in NOT_FOR_CLIENTS
    if p.startswith("zmqserver.")
    and "client" not in p
    and p not in ("zmqserver._io", "zmqserver._fastio")
)


def test_the_client_package_imports_nothing_from_the_server_side() -> None:
    package = REPO / "src" / "zmqserver" / "client"
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            assert node.level <= 2, f"{path.name}: {ast.unparse(node)}"
            if node.level == 1:
                continue  # a sibling inside client/
            target = "zmqserver" + (f".{node.module}" if node.module else "")
            names = [target] if node.module else [f"zmqserver.{a.name}" for a in node.names]
            assert loaded(names, CLIENT_MAY_IMPORT) == names, f"{path.name}: {ast.unparse(node)}"


def test_the_asyncio_client_and_the_command_load_no_server_code() -> None:
    modules = fresh(
        "import json, sys; import zmqserver.client.aio, zmqserver.client.cli; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    assert isinstance(modules, list)
    assert loaded(modules, SERVER_SIDE) == []


@pytest.mark.parametrize(
    "code",
    [
        "import zmqserver; zmqserver.Client",
        "from zmqserver import Client, RequestTimeout, ServerError, Status",
        "import zmqserver.client",
        "from zmqserver.client import Client, RequestState",
        "import zmqserver; zmqserver.Subscriber, zmqserver.Publisher, zmqserver.publish",
        "import zmqserver.pubsub.cli",
    ],
)
def test_a_client_loads_no_server_code(code: str) -> None:
    modules = fresh(f"import json, sys; {code}; print(json.dumps(sorted(sys.modules)))")
    assert isinstance(modules, list)
    assert "zmqserver.client" in modules
    assert loaded(modules, NOT_FOR_CLIENTS) == []


#: Where each lazy name is defined.
HOMES = {
    "run": "zmqserver.server",
    "AsyncClient": "zmqserver.client.aio",
    "client_key": "zmqserver.worker",
    "request": "zmqserver.context",
    "Config": "zmqserver.config",
    "App": "zmqserver.config",
    "AsyncSubscriber": "zmqserver.pubsub.aio",
}


@pytest.mark.parametrize("name", LAZY)
def test_lazy_names_resolve_on_first_use(name: str) -> None:
    code = (
        "import importlib, json, sys, zmqserver; "
        f"before = {HOMES[name]!r} in sys.modules; "
        f"value = zmqserver.{name}; "
        f"home = importlib.import_module({HOMES[name]!r}); "
        f"print(json.dumps([before, value is getattr(home, {name!r})]))"
    )
    assert fresh(code) == [False, True]


def test_lazy_names_are_the_objects_their_modules_define() -> None:
    from zmqserver.client.aio import AsyncClient
    from zmqserver.config import App, Config
    from zmqserver.server import run
    from zmqserver.worker import client_key

    assert zmqserver.AsyncClient is AsyncClient
    assert zmqserver.Config is Config
    assert zmqserver.App is App
    assert zmqserver.run is run
    assert zmqserver.client_key is client_key
    assert zmqserver.client.AsyncClient is AsyncClient
    assert set(HOMES) == set(LAZY)


def test_from_import_and_star_import_resolve_the_lazy_names() -> None:
    names = fresh(
        "import json; from zmqserver import run, AsyncClient, client_key, Config, App; "
        "namespace = {}; exec('from zmqserver import *', namespace); "
        "print(json.dumps(sorted(n for n in namespace if n != '__builtins__')))"
    )
    assert names == sorted(zmqserver.__all__)


def test_dir_and_all_list_every_public_name() -> None:
    assert set(LAZY) <= set(zmqserver.__all__)
    assert set(zmqserver.__all__) <= set(dir(zmqserver))
    assert "AsyncClient" in dir(zmqserver.client)
    for name in zmqserver.__all__:
        assert getattr(zmqserver, name) is not None


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Clinet'"):
        zmqserver.Clinet  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        zmqserver.client.nope  # type: ignore[attr-defined]  # noqa: B018
