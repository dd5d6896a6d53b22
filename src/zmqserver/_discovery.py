"""Where a server writes its control endpoint, so that `zmqserver status` finds it.

Rule 1: path rules only, shared by the server (supervisor/control.py writes) and the client
(control_client.py reads) without the client importing any server code.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config


def runtime_dir() -> Path:
    """Where discovery files live: ``$XDG_RUNTIME_DIR/zmqserver``, else
    ``$TMPDIR/zmqserver.uidUID`` (per user, 0700)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "zmqserver"
    return Path(tempfile.gettempdir()) / f"zmqserver.uid{os.getuid()}"


def runtime_file(frontend: str) -> Path:
    """The discovery file of the server whose frontend endpoint is ``frontend``."""
    if frontend.startswith("tcp://") and frontend.rsplit(":", 1)[-1].isdigit():
        key = "port-" + frontend.rsplit(":", 1)[-1]
    else:
        key = "ep-" + hashlib.sha1(frontend.encode()).hexdigest()[:16]
    return runtime_dir() / f"{key}.control"


def discovery_files(config: Config) -> list[Path]:
    """Every file the endpoint of a server run with ``config`` is written to."""
    files = [runtime_file(config.frontend_endpoint)]
    if config.pid_file is not None:
        files.insert(0, Path(config.pid_file + ".control"))
    return files
