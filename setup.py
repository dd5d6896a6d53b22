"""Build the optional compiled parts; everything else is declared in pyproject.toml.

Two of them, both optional: where they cannot be built, zmqserver runs as pure Python (the test
suite runs that path too, with ZMQSERVER_PURE_PYTHON=1).

- ``zmqserver._fastio`` (src/zmqserver/_fastio.c): the broker's batched socket I/O.
- The routing core and the wire protocol, compiled from their Python source by mypyc
  (src/zmqserver/_compiled.py lists them): the same code, without the interpreter's per-job cost.
"""

import os

from setuptools import Extension, setup

C_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
           "-Wno-missing-field-initializers", "-Wno-cast-function-type"]
# Keep in step with zmqserver._compiled.MODULES.
COMPILED = ["broker", "protocol", "routing", "worker"]


def compiled_modules():
    if os.environ.get("ZMQSERVER_NO_MYPYC"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # built without the build requirements (no mypy): pure Python
        return []
    extensions = mypycify(
        [f"src/zmqserver/{name}.py" for name in COMPILED],
        opt_level="3",
        # The shared library of the group lives inside the package, not at the top level.
        group_name="zmqserver._core",
    )
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
