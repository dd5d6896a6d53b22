"""Fakes of the master's contracts (supervisor/component.py), backed by real file descriptors."""

from __future__ import annotations

import math
import socket
from collections.abc import Collection

import zmq

from zmqserver._process import Credentials
from zmqserver.config import Config
from zmqserver.scaling import State
from zmqserver.security import ClientCredentials
from zmqserver.status import StatusWriter
from zmqserver.supervisor import Flock, Host, Pool, StateOf
from zmqserver.supervisor.component import Handle, WatchItem


class FakeView:
    """A WorkerView with no workers: nothing registered, nothing queued."""

    def __init__(self) -> None:
        self.endpoint = "inproc://nowhere"
        self.credentials: ClientCredentials | None = None
        self.gone_: list[tuple[bytes, str]] = []

    def service_configs(self, config: Config) -> dict[str, Config]:
        return config.service_configs()

    def identity(self, pid: int) -> bytes:
        return b"pid:%d" % pid

    def child_status(self) -> StatusWriter | None:
        return None

    def state_of(self, pool: Pool) -> StateOf:
        return lambda proc: State.BOOTING

    def backlog(self, pool: Pool) -> tuple[int, float | None]:
        return 0, None

    def registered(self, identity: bytes) -> bool:
        return False

    def gone(self, identity: bytes, reason: str) -> None:
        self.gone_.append((identity, reason))

    def scale_inputs(self) -> tuple[int, ...]:
        return (0,)

    def watch_scale(self, seen: tuple[int, ...], load: bool) -> None:
        pass


class NoForkFlock(Flock):
    """A flock that counts the workers it is asked for and starts none (no processes)."""

    asked = 0

    def spawn(self, pool: Pool) -> None:
        self.asked += 1


class PipeComponent:
    """A component that waits on one end of a real socketpair and records every call.

    ``log`` is shared between components, so a test sees the order of calls across them.
    ``deadlines`` are handed out by next_deadline, one per turn (then infinity); ``on_handle``
    runs on each handle() call with what was read (b"" if its fd was not ready).
    """

    def __init__(self, name: str, log: list[tuple[str, str]]) -> None:
        self.name = name
        self.log = log
        self.inside, self.outside = socket.socketpair()
        self.inside.setblocking(False)
        self.deadlines: list[float] = []
        self.handled: list[tuple[bool, float, bytes]] = []
        self.on_handle = lambda data, now: None
        self.host: Host | None = None

    def _note(self, what: str) -> None:
        self.log.append((self.name, what))

    def open(self, host: Host) -> None:
        self.host = host
        self._note("open")

    def watch(self) -> list[WatchItem]:
        return [(self.inside.fileno(), zmq.POLLIN)]

    def next_deadline(self) -> float:
        return self.deadlines.pop(0) if self.deadlines else math.inf

    def handle(self, ready: Collection[Handle], now: float) -> None:
        readable = self.inside.fileno() in ready
        data = self.inside.recv(4096) if readable else b""
        self.handled.append((readable, now, data))
        self.on_handle(data, now)

    def on_stop(self, graceful: bool) -> None:
        self._note(f"on_stop graceful={graceful}")

    def on_reload(self) -> None:
        self._note("on_reload")

    def on_config(self, config: Config) -> None:
        self._note("on_config")

    def owned_paths(self) -> list[str]:
        return []

    def admit_user(self, creds: Credentials) -> None:
        self._note("admit_user")

    def close(self) -> None:
        self._note("close")
        self.inside.close()
        self.outside.close()
