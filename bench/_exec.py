"""Run a program in place of this process: ``python -m bench._launch bench._exec PROGRAM ARGS``.

bench/_launch.py sets PR_SET_PDEATHSIG and then runs this module, which execs PROGRAM with the
same PID: the death signal survives exec, so a non-Python server (redis-server) started by the
benchmark is bound to it like the Python ones, and the Launcher stops it by that PID.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.execvp(sys.argv[1], sys.argv[1:])
