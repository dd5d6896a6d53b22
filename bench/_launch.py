"""Start a benchmark child that dies with the benchmark: ``python -m bench._launch MODULE ARGS``.

Sets PR_SET_PDEATHSIG (SIGTERM) and then runs ``MODULE`` as ``__main__`` in this same process (same
PID), so a broker, worker or client started by the suite cannot outlive it even if the suite is
killed with SIGKILL before its ``finally`` blocks run. The suite still stops every child itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import runpy
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main() -> None:
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None:
        ctypes.CDLL(libc_name).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    parent = os.environ.get("BENCH_PARENT")
    if parent is not None and os.getppid() != int(parent):
        sys.exit(1)  # the benchmark died before prctl took effect
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
