"""Build the optional compiled parts; everything else is declared in pyproject.toml.

Two of them, both optional: where they cannot be built, zmqserver runs as pure Python (the test
suite runs that path too, with ZMQSERVER_PURE_PYTHON=1). ``zmqserver --version`` says which are
in use.

- ``zmqserver._fastio`` (src/zmqserver/_fastio.c): the broker's batched socket I/O. It needs
  libzmq's header, zmq.h (Debian: libzmq3-dev, listed in apt-packages.txt), and calls the libzmq
  that pyzmq runs on (see the comment at the top of _fastio.c).
- The code every job runs through, compiled from its Python source by mypyc: the same code,
  without the interpreter's per-job cost. ``MODULES`` in src/zmqserver/_compiled.py says which.

The build records what it compiled, with a hash of each compiled module's source, in
``_build.json`` beside the extensions: the import compares it with the source it finds there, so
an editable tree that was edited after its build runs its source instead of stale compiled code.
"""

import ast
import hashlib
import json
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
PACKAGE = HERE / "src" / "zmqserver"
C_FLAGS = [
    "-O2",
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Wno-missing-field-initializers",
    "-Wno-cast-function-type",
]


def _constant(path, name):
    """A literal assigned at the top level of a module, read without importing it."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == name:
            return ast.literal_eval(node.value)
    raise LookupError(f"{name} in {path}")


COMPILED = _constant(PACKAGE / "_compiled.py", "MODULES")
GROUP = _constant(PACKAGE / "_compiled.py", "GROUP")
STAMP = _constant(PACKAGE / "_compiled.py", "STAMP")


def _source(name):
    return PACKAGE.joinpath(*name.split(".")).with_suffix(".py")


def compiled_modules():
    try:
        from mypyc.build import mypycify
    except ImportError:  # built without the build requirements (no mypy): pure Python
        return []
    try:
        extensions = mypycify(
            [str(_source(name).relative_to(HERE)) for name in COMPILED],
            opt_level="3",
            # The shared library of the group lives inside the package, not at the top level.
            group_name=f"zmqserver.{GROUP}",
        )
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error: install pure Python
        print(
            f"zmqserver: not compiling the per-job modules ({exc!r}); they run as Python",
            file=sys.stderr,
        )
        return []
    for extension in extensions:
        extension.optional = True
    return extensions


class BuildExt(build_ext):
    """Builds what it can (every extension is optional) and stamps what it built."""

    def run(self):
        self.built = set()
        super().run()
        self.stamp()

    def build_extension(self, ext):
        super().build_extension(ext)  # an optional one that fails raises: not recorded
        self.built.add(ext.name)

    def stamp(self):
        group = f"zmqserver.{GROUP}__mypyc"
        compiled = [
            name for name in COMPILED if f"zmqserver.{name}" in self.built and group in self.built
        ]
        record = {
            "compiled": compiled,
            "sources": {
                name: hashlib.sha256(_source(name).read_bytes()).hexdigest() for name in compiled
            },
            "fastio": "zmqserver._fastio" in self.built,
        }
        target = Path(self.get_ext_fullpath("zmqserver._fastio")).parent / STAMP
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=[
        Extension(
            "zmqserver._fastio",
            sources=["src/zmqserver/_fastio.c"],
            extra_compile_args=C_FLAGS,
            optional=True,
        ),
        *compiled_modules(),
    ],
)
