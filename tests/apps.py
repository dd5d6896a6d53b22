"""Apps used by the integration tests, imported by real workers as ``tests.apps:NAME``."""

from __future__ import annotations

import os
import time


def pid(payload: bytes | list[bytes]) -> bytes:
    """Replies with the worker's pid, so a test can see which worker ran a job."""
    return str(os.getpid()).encode()


def sleep_then_pid(payload: bytes | list[bytes]) -> list[bytes]:
    """Sleeps for the number of seconds in the payload, then replies ``[payload, pid]``."""
    assert isinstance(payload, bytes)
    time.sleep(float(payload))
    return [payload, str(os.getpid()).encode()]


def fail(payload: bytes | list[bytes]) -> bytes:
    """Raises on ``boom``, echoes anything else."""
    if payload == b"boom":
        raise ValueError("boom requested")
    assert isinstance(payload, bytes)
    return payload


def crash(payload: bytes | list[bytes]) -> bytes:
    """Kills its own process on ``die`` (a worker lost mid-job), echoes anything else."""
    if payload == b"die":
        os._exit(9)
    assert isinstance(payload, bytes)
    return payload


def frames(payload: bytes | list[bytes]) -> list[bytes]:
    """Describes what the app received: the type name, then the frames."""
    if isinstance(payload, list):
        return [b"list", *payload]
    return [b"bytes", payload]


def text(payload: bytes | list[bytes]) -> str:
    """Returns a str, which goes out UTF-8 encoded."""
    return "héllo"


def stream(payload: bytes | list[bytes]):  # noqa: ANN201 - a generator app
    """A streaming app: one part per byte of the payload."""
    assert isinstance(payload, bytes)
    for byte in payload:
        yield bytes([byte])


def bad_return(payload: bytes | list[bytes]) -> int:
    return 42
