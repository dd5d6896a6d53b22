"""An argument parser whose usage errors fit on the screen: the error, then where to look.

argparse answers a mistyped flag with the full usage first: 41 lines for ``zmqserver serve``,
the one line that matters at the bottom. Both commands (``zmqserver`` and ``zmq-client``) use
this parser instead, so a usage error is two lines and still exits with status 2.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class ShortErrorParser(argparse.ArgumentParser):
    """``error()`` prints ``PROG: error: MESSAGE`` and a pointer to ``--help``; status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\nsee '{self.prog} --help' for the usage\n")


__all__ = ["ShortErrorParser"]
