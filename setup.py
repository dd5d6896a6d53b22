"""Build the optional C extension; everything else is declared in pyproject.toml.

The extension is optional: where it cannot be compiled, zmqserver runs its pure-Python I/O path
(src/zmqserver/_io.py), which the test suite also exercises.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "zmqserver._fastio",
            sources=["src/zmqserver/_fastio.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
            optional=True,
        )
    ]
)
