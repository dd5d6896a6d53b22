"""Apps used by the integration tests, imported by real workers as ``tests.apps:NAME``."""

from __future__ import annotations

import ctypes
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


# -- fault injection (tests/integration/test_faults.py) -------------------------------------------

#: If set, :func:`faulty` appends one line ``<pid> <payload>`` per run to this file, so a test can
#: count how many times each job ran and on which worker (one ``write`` with O_APPEND per line, so
#: lines from concurrent workers never interleave).
RUNS_ENV = "ZS_TEST_RUNS"
#: If set, :func:`faulty` sleeps this many seconds before echoing an ordinary payload.
SLEEP_ENV = "ZS_TEST_SLEEP"


def _record_run(payload: bytes) -> None:
    path = os.environ.get(RUNS_ENV)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"%d %s\n" % (os.getpid(), payload))
        finally:
            os.close(fd)


def faulty(payload: bytes | list[bytes]) -> bytes | list[bytes]:
    """An echo app that misbehaves on request; every run is recorded (see :data:`RUNS_ENV`).

    ``sleep <seconds> <tag>`` sleeps, then replies ``[payload, pid]``; ``gil <seconds> <tag>``
    does the same holding the GIL; ``die <tag>`` kills its own worker (exit code 9) mid-job;
    ``boom <tag>`` raises ``ValueError``; anything else is echoed after sleeping
    :data:`SLEEP_ENV` seconds (default none). A multi-frame payload is recorded by its first frame.
    """
    first = payload[0] if isinstance(payload, list) else payload
    _record_run(first)
    if first.startswith(b"sleep "):
        time.sleep(float(first.split()[1]))
        return [first, str(os.getpid()).encode()]
    if first.startswith(b"gil "):
        # libc's sleep() through PyDLL, which keeps the GIL: the worker's heartbeat thread
        # cannot run, as in a long C call that does not release it.
        ctypes.PyDLL(None).sleep(int(first.split()[1]))
        return [first, str(os.getpid()).encode()]
    if first.startswith(b"die "):
        os._exit(9)
    if first.startswith(b"boom "):
        raise ValueError(f"boom requested by {first[5:].decode(errors='replace')}")
    delay = float(os.environ.get(SLEEP_ENV) or 0)
    if delay:
        time.sleep(delay)
    return payload


# -- process management (tests/integration/test_process.py) ---------------------------------------


def mark_then_sleep(payload: bytes | list[bytes]) -> list[bytes]:
    """``<seconds> <path>``: creates the file ``path`` (the job is now running), then sleeps.

    Replies ``[payload, pid]``. The file lets a test wait for jobs to be in flight, not guess.
    """
    assert isinstance(payload, bytes)
    seconds, path = payload.split(b" ", 1)
    with open(path, "wb"):
        pass
    time.sleep(float(seconds))
    return [payload, str(os.getpid()).encode()]


def whoami(payload: bytes | list[bytes]) -> bytes:
    """Replies ``<uid> <gid>`` of the worker process."""
    return b"%d %d" % (os.getuid(), os.getgid())


#: Hooks below append ``<hook> <pid> [details]`` lines to the file this variable names.
HOOKS_ENV = "ZS_TEST_HOOKS"


def _record_hook(*words: object) -> None:
    path = os.environ.get(HOOKS_ENV)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (" ".join(map(str, words)) + "\n").encode())
        finally:
            os.close(fd)


def on_starting(config: object) -> None:
    _record_hook("on_starting", os.getpid())


def post_fork(config: object) -> None:
    _record_hook("post_fork", os.getpid())


def pre_request(payload: bytes | list[bytes]) -> None:
    """Vetoes a job whose payload is ``veto``."""
    _record_hook("pre_request", os.getpid())
    if payload == b"veto":
        raise PermissionError("vetoed by pre_request")


def post_request(payload: bytes | list[bytes], status: object) -> None:
    _record_hook("post_request", os.getpid(), getattr(status, "name", status))


def worker_exit(config: object) -> None:
    _record_hook("worker_exit", os.getpid())


def on_exit(config: object) -> None:
    _record_hook("on_exit", os.getpid())


#: The process that imported this module: the master with preload_app, else each worker.
IMPORTED_BY = os.getpid()


def imported_by(payload: bytes | list[bytes]) -> bytes:
    """Replies ``<pid that imported the app> <pid of this worker>``."""
    return b"%d %d" % (IMPORTED_BY, os.getpid())


def their_key(payload: bytes | list[bytes]) -> str:
    """Replies with the authenticated client's CURVE key (``pass_client_key``), or ``anonymous``."""
    import zmqserver

    return zmqserver.client_key() or "anonymous"


# -- fork hygiene (tests/integration/test_fork_hygiene.py) ----------------------------------------


def fork_and_return(payload: bytes | list[bytes]) -> bytes:
    """``<path>``: forks; the child writes its pid to ``path`` and returns into the worker (an
    app bug: a child should exit or exec), the parent waits for the file and replies ``parent``.
    """
    assert isinstance(payload, bytes)
    if os.fork() == 0:
        tmp = payload + b".tmp"
        with open(tmp, "wb") as f:
            f.write(str(os.getpid()).encode())
        os.rename(tmp, payload)
        return b"child"
    deadline = time.monotonic() + 10
    while not os.path.exists(payload) and time.monotonic() < deadline:
        time.sleep(0.01)
    return b"parent"


def publish(payload: bytes | list[bytes]) -> bytes:
    """Publishes ``key=value`` (from a payload ``key=value[;ttl]``) through the server's pub-sub,
    from inside the worker; replies with the worker's pid."""
    import zmqserver

    text = payload if isinstance(payload, bytes) else b"".join(payload)
    item, _, ttl = text.partition(b";")
    key, _, value = item.partition(b"=")
    zmqserver.publish(key, value, float(ttl) if ttl else None)
    return str(os.getpid()).encode()


def logs(payload: bytes | list[bytes]) -> bytes:
    """Logs at INFO and WARNING with its own logger (as an app does), then echoes."""
    import logging

    logging.getLogger("tests.app").info("app info %r", payload)
    logging.getLogger("tests.app").warning("app warning")
    assert isinstance(payload, bytes)
    return payload


# -- durable jobs (tests/integration/test_durable.py) ---------------------------------------------


def durable(payload: bytes | list[bytes]) -> bytes:
    """Echo, recording ``<unix time> <payload>`` per run in :data:`RUNS_ENV`'s file.

    ``retry <tag>`` raises :class:`zmqserver.Retry` every time; ``later <seconds> <tag>`` raises
    it with ``after=seconds``; ``die <tag>`` kills its worker; ``boom <tag>`` raises ValueError.
    """
    import zmqserver

    first = payload[0] if isinstance(payload, list) else payload
    path = os.environ.get(RUNS_ENV)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"%r %s\n" % (time.time(), first))
        finally:
            os.close(fd)
    if first.startswith(b"retry "):
        raise zmqserver.Retry("not yet")
    if first.startswith(b"later "):
        raise zmqserver.Retry("wait for it", after=float(first.split()[1]))
    if first.startswith(b"die "):
        os._exit(9)
    if first.startswith(b"boom "):
        raise ValueError("boom")
    delay = float(os.environ.get(SLEEP_ENV) or 0)
    if delay:
        time.sleep(delay)
    return first


# -- request context (tests/integration/test_request_context.py) ----------------------------------


def context(payload: bytes | list[bytes]) -> str:
    """Replies with ``zmqserver.request()`` as JSON (the deadline rounded to whole seconds)."""
    import json

    import zmqserver

    ctx = zmqserver.request()
    fields = {
        "id": ctx.id,
        "request_id": ctx.request_id,
        "service": ctx.service,
        "attempt": ctx.attempt,
        "client_key": ctx.client_key,
        "client_address": ctx.client_address,
        "deadline": None if ctx.deadline is None else round(ctx.deadline),
    }
    return json.dumps(fields)
