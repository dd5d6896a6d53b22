"""Build the optional compiled parts; everything else is declared in pyproject.toml.

Two of them, both optional: where they cannot be built, zmqserver runs as pure Python (the test
suite runs that path too, with ZMQSERVER_PURE_PYTHON=1).

- ``zmqserver._fastio`` (src/zmqserver/_fastio.c): the broker's batched socket I/O.
- The code every job runs through (routing core, wire protocol, broker shell, worker loop),
  compiled from its Python source by mypyc: the same code, without the interpreter's per-job
  cost. src/zmqserver/_compiled.py says which modules, and runs their source when asked to.
"""

import sys

from setuptools import Extension, setup

C_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
           "-Wno-missing-field-initializers", "-Wno-cast-function-type"]
# Keep in step with zmqserver._compiled.MODULES (a test checks) and COMPILED_SRC in the Makefile.
COMPILED = [
    "broker.admission",
    "broker.deadlines",
    "broker.dispatch",
    "broker.replycache",
    "broker.shell",
    "broker.state",
    "protocol",
    "worker",
]


def compiled_modules():
    try:
        from mypyc.build import mypycify
    except ImportError:  # built without the build requirements (no mypy): pure Python
        return []
    try:
        extensions = mypycify(
            [f"src/zmqserver/{name.replace('.', '/')}.py" for name in COMPILED],
            opt_level="3",
            # The shared library of the group lives inside the package, not at the top level.
            group_name="zmqserver._core",
        )
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error: install pure Python
        print(f"zmqserver: not compiling the per-job modules ({exc!r}); they run as Python",
              file=sys.stderr)
        return []
    for extension in extensions:
        extension.optional = True
    return extensions


setup(
    ext_modules=[
        Extension("zmqserver._fastio", sources=["src/zmqserver/_fastio.c"],
                  extra_compile_args=C_FLAGS, optional=True),
        *compiled_modules(),
    ]
)
