"""A remote pool as a component of the master: its workers' states come from a status pipe.

Rule 1: glue between the master's contracts (component.py) and the status pipe (status.py); a
remote pool has no broker, so this is all it composes.

A remote pool (``zmqserver worker --connect tcp://BROKER:6661``) has the same pools, signals and
options as a broker's master, minus the broker: no frontend, no backend binding, no ZAP. Workers
connect to ``config.connect`` (with CURVE when ``server_key`` is set) and reconnect with backoff
when the broker goes silent; a worker the broker sends DISCONNECT (a restarted broker does not
know it) exits and is replaced, and the replacement registers afresh. With several endpoints (a
Binary Star pair), each worker registers with every broker and serves the active one
(worker_pair.py). Each worker reports
idle/busy/cut off through a pipe, so spare-server autoscaling works as on the broker's host,
minus scaling on queue wait (the queue is on the broker).
"""

from __future__ import annotations

import logging
import math
import secrets
import socket
from collections.abc import Collection

import zmq

from .._process import Credentials, set_title
from ..config import Config
from ..config.validate import split_endpoints
from ..errors import ConfigError
from ..scaling import State
from ..security import ClientCredentials
from ..status import Report, StatusChannel, StatusWriter
from .component import Handle, Host, StateOf, WatchItem
from .workers import Pool, WorkerProcess

log = logging.getLogger("zmqserver")

#: A remote worker's report, as the autoscaler sees it.
_REPORTED = {Report.CONNECTING: State.DETACHED, Report.IDLE: State.IDLE, Report.BUSY: State.BUSY}


def check_connect(config: Config) -> None:
    """A remote pool needs its broker's backend endpoint."""
    if config.connect is None:
        raise ConfigError(
            "connect: a remote pool needs its broker's backend endpoint "
            "(--connect tcp://BROKER:6661)"
        )


class StatusComponent:
    """A remote pool's view of its workers: the broker's backend they connect to, and the
    status pipe they report their states on."""

    def __init__(self, config: Config) -> None:
        """``config`` is validated and has ``connect`` (:func:`check_connect`); a bad key file
        stops the pool here, before it forks."""
        assert config.connect is not None
        self.endpoint = config.connect
        self.credentials: ClientCredentials | None = None
        if config.server_key is not None:
            self.credentials = ClientCredentials.load(config.server_key, config.key_file)
        # Routing ids must be unique among every pool of the broker, on every host: the pid,
        # the host, and a random tag per pool process (pids repeat across hosts and restarts).
        tag = f"{socket.gethostname()}.{secrets.token_hex(4)}"
        self._tag = tag.encode("ascii", "replace")
        self.status: StatusChannel | None = None
        self.reports: dict[bytes, Report] = {}
        self._reports_read = 0
        self.host: Host | None = None

    # -- Component --------------------------------------------------------------------------------

    def open(self, host: Host) -> None:
        self.host = host
        config = host.config
        self.status = StatusChannel()
        brokers = ",".join(e.removeprefix("tcp://") for e in split_endpoints(self.endpoint))
        set_title(f"{config.proc_name} pool {brokers}")
        log.info(
            "zmqserver pool %d: workers connect to %s%s, service(s) %s",
            host.pid,
            " and ".join(split_endpoints(self.endpoint)),
            " with CURVE" if self.credentials is not None else "",
            ", ".join(repr(name) for name in host.pools),
        )

    def watch(self) -> list[WatchItem]:
        assert self.status is not None
        return [(self.status.fileno(), zmq.POLLIN)]

    def next_deadline(self) -> float:
        return math.inf

    def handle(self, ready: Collection[Handle], now: float) -> None:
        assert self.status is not None
        assert self.host is not None
        if self.status.fileno() not in ready:
            return
        workers = self.host.workers
        for pid, report in self.status.read():
            proc = workers.get(pid)
            if proc is not None:
                self.reports[proc.identity] = report
                self._reports_read += 1

    def on_stop(self, graceful: bool) -> None:
        pass  # the workers stop by signal; the broker hears their DISCONNECTs

    def on_reload(self) -> None:
        pass

    def on_config(self, config: Config) -> None:
        pass

    def owned_paths(self) -> list[str]:
        return []

    def admit_user(self, creds: Credentials) -> None:
        pass

    def close(self) -> None:
        if self.status is not None:
            self.status.close()

    # -- WorkerView -------------------------------------------------------------------------------

    def service_configs(self, config: Config) -> dict[str, Config]:
        # A worker's title shows its backend: here, the broker it connects to.
        return {
            name: service.replace(backend=config.connect)
            for name, service in config.service_configs().items()
        }

    def identity(self, pid: int) -> bytes:
        return b"pid:%d@%s" % (pid, self._tag)

    def child_status(self) -> StatusWriter | None:
        assert self.status is not None
        return self.status.writer()

    def state_of(self, pool: Pool) -> StateOf:
        reports = self.reports

        def state(proc: WorkerProcess) -> State:
            report = reports.get(proc.identity)
            return State.BOOTING if report is None else _REPORTED[report]

        return state

    def backlog(self, pool: Pool) -> tuple[int, float | None]:
        return 0, None  # the queue is on the broker

    def registered(self, identity: bytes) -> bool:
        return False  # no goodbye to wait for: the broker, not this process, reads it

    def gone(self, identity: bytes, reason: str) -> None:
        self.reports.pop(identity, None)

    def scale_inputs(self) -> tuple[int, ...]:
        # Workers heard from (a first report is a registration), and reports since.
        return (len(self.reports), self._reports_read)

    def watch_scale(self, seen: tuple[int, ...], load: bool) -> None:
        pass  # reports arrive on the pipe, which the loop watches anyway
