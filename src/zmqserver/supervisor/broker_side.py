"""The broker as a component of the master: both ROUTER sockets, the routing core, ZAP.

Rule 1: this is glue between the master's contracts (component.py) and the broker (broker/shell.py,
broker/dispatch.py, security/); it decides nothing about routing or security itself.

It plays three roles. As a :class:`~.component.Component` it binds the frontend, the backend and
the private ipc:// socket local workers connect to, starts the ZAP handler, and kills the
workers the routing core gave up on. As the :class:`~.component.WorkerView` it tells the master
which workers are idle, busy or registered, from the routing core. As the
:class:`~.component.Waiter` it runs the master's wait inside the compiled broker
(:meth:`Broker.serve <zmqserver.broker.Broker.serve>`), which returns only when the master has
work: the wake flag set by a signal, a readable socket of another component, a deadline, hung
workers to kill, or the autoscaler's inputs moving (the routing core flags that itself, against
the snapshot the master last planned on: :meth:`watch_scale`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

import zmq

from .._process import Credentials, endpoint_label, ipc_path, proc_state, set_title
from .._wakeup import Wake
from ..broker import Broker, Dispatcher, Limits
from ..config import Config
from ..errors import Status
from ..scaling import State
from ..security import ClientCredentials, ServerSecurity
from ..status import StatusWriter
from .accesslog import AccessLog
from .component import Handle, Host, StartError, StateOf, WatchItem
from .fdwatch import FdWatch
from .workers import Pool, WorkerProcess

log = logging.getLogger("zmqserver")

#: Process states (``/proc/<pid>/stat``) of a worker that is alive and running: running,
#: sleeping (a C call, a lock, I/O), in uninterruptible disk wait. Not "T"/"t" (stopped:
#: SIGSTOP, a debugger) nor "Z" (exited, not reaped yet).
_RUNNING = frozenset((b"R", b"S", b"D"))


class BrokerComponent:
    """The broker's master side: both ROUTER sockets, the routing core, ZAP, hung-worker kills."""

    def __init__(self, config: Config) -> None:
        """``config`` is validated. Key files are read and checked here, so a bad one stops the
        server before anything binds."""
        #: A Binary Star member (ha_side.py): on stop, queued jobs go unanswered, to the peer.
        self.leaving_pair = False
        self.security = ServerSecurity.load(config)
        self.ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self.broker: Broker | None = None
        self.dispatcher: Dispatcher | None = None
        self.host: Host | None = None
        self._bound: list[str] = []
        #: Where workers connect (the private ipc:// socket), and their CURVE keys.
        self.endpoint = ""
        self.credentials: ClientCredentials | None = None
        #: One line per job (``access_log``), or None.
        self.access_log: AccessLog | None = None
        #: For :meth:`handle` outside :meth:`wait` (never set: nothing to interrupt there).
        self._no_wake = Wake()
        #: The ZAP socket, waited on by its ZMQ_FD (fdwatch.py: asked once a connection).
        self._zap: FdWatch | None = None
        #: Told of each worker that is gone for good, with the reason (pub-sub's events).
        self.on_gone: Callable[[bytes, str], None] | None = None
        #: Other components' sockets the broker's wait handles itself (Broker.serve's
        #: ``inline``): the handler reads what is waiting, returns its next deadline.
        self.inline: dict[zmq.Socket[bytes], Callable[[float], float]] = {}

    # -- Component --------------------------------------------------------------------------------

    def open(self, host: Host) -> None:
        self.host = host
        config = host.config
        self.ctx = zmq.Context()
        self.dispatcher = Dispatcher(
            config.default_service_name.encode(),
            services=tuple(name.encode() for name in host.pools),
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_liveness=config.heartbeat_liveness,
            limits=Limits.from_config(config),
            service_limits=self._service_limits(),
            now=time.monotonic(),
        )
        self.dispatcher.process_running = self._process_running
        if config.access_log is not None:
            try:
                self.access_log = AccessLog(config.access_log)
            except OSError as exc:
                raise StartError(f"cannot open the access log {config.access_log}: {exc}") from exc
            self.dispatcher.metrics.access = self.access_log.write
        self.dispatcher.forked = self._forked
        self.dispatcher.drop_plain_errors = config.plain_errors == "drop"
        self.dispatcher.pass_client_info = config.pass_client_info
        # Local workers always connect to a private ipc:// socket (docs/security.md); the
        # configured backend endpoint is bound as well only when it is open to remote pools.
        security = self.security
        try:
            security.start(self.ctx)  # the ZAP handler, before any socket binds
            local = security.local_endpoint()
            self.broker = Broker(
                self.ctx,
                self.dispatcher,
                config.frontend_endpoint,
                security.public_backend or local,
                max_message_size=config.max_message_size,
                max_frames=config.max_frames,
                secure=security.apply,
                pass_client_key=config.pass_client_key,
                max_client_inflight=config.max_client_inflight,
                pass_client_info=config.pass_client_info,
            )
            front, back = self.broker.endpoints()
            if security.public_backend is not None:
                security.bind_local(self.broker.backend)
        except OSError as exc:
            raise StartError(exc.strerror or str(exc)) from exc
        self.endpoint = local
        self.credentials = security.worker_credentials
        self._bound = [front, back, local]
        back_label = endpoint_label(back) if security.public_backend is not None else "local"
        set_title(f"{config.proc_name} broker {endpoint_label(front)}-{back_label}")
        pools = host.pools
        if len(pools) == 1 and config.default_service is None:
            services = f"service {next(iter(pools))!r}"
        else:
            names = ", ".join(repr(name) for name in pools)
            services = f"services {names} (plain clients: {config.default_service_name!r})"
        log.info("zmqserver %d: clients on %s, workers on %s, %s", host.pid, front, back, services)

    def watch(self) -> list[WatchItem]:
        assert self.broker is not None
        items: list[WatchItem] = [
            (self.broker.frontend, zmq.POLLIN),
            (self.broker.backend, zmq.POLLIN),
        ]
        zap = self.security.zap_socket
        if zap is not None:
            if self._zap is None or self._zap.sock is not zap:
                self._zap = FdWatch(zap)
            items.append(self._zap.item())
        return items

    def next_deadline(self) -> float:
        assert self.dispatcher is not None
        assert self.broker is not None
        if self._zap is not None and self._zap.more:
            return 0.0
        return min(self.dispatcher.next_deadline(), self.broker.next_deadline())

    def handle(self, ready: Collection[Handle], now: float) -> None:
        dispatcher, broker = self.dispatcher, self.broker
        assert dispatcher is not None
        assert broker is not None
        zap = self._zap
        if zap is not None and zap.sock is self.security.zap_socket and zap.due(ready):
            zap.read(self.security.handle_zap())  # handshakes waiting for a yes or no
        # Only without the waiter (wait() drains them itself and never reports them).
        backend, frontend = broker.backend in ready, broker.frontend in ready
        if backend or frontend:
            broker.drain(backend, frontend, now, self._no_wake)
        dispatcher.on_tick(now)
        broker.on_tick(now)
        broker.flush()
        self._kill_hung(dispatcher.take_kills())
        if self.access_log is not None:
            self.access_log.flush()

    def on_stop(self, graceful: bool) -> None:
        assert self.dispatcher is not None
        assert self.broker is not None
        self.dispatcher.shutdown(answer=not self.leaving_pair)
        if not graceful:
            self.dispatcher.fail_running(
                Status.SHUTTING_DOWN, "server stopped before the job ended"
            )
        self.broker.flush()

    def on_reload(self) -> None:
        self.security.reload()

    def on_config(self, config: Config) -> None:
        if self.dispatcher is not None and self.broker is not None:
            self.dispatcher.set_limits(Limits.from_config(config), self._service_limits())
            self.dispatcher.drop_plain_errors = config.plain_errors == "drop"
            self.broker.flush()

    def owned_paths(self) -> list[str]:
        return [path for path in map(ipc_path, self._bound) if path is not None]

    def admit_user(self, creds: Credentials) -> None:
        self.security.admit_local_user(creds.uid, creds.gid)

    def close(self) -> None:
        if self.dispatcher is not None and self.broker is not None:
            self.dispatcher.shutdown()
            self.dispatcher.fail_running(Status.SHUTTING_DOWN, "server stopped")
            self.broker.flush()
            self.broker.close()
        self.security.close()
        if self.access_log is not None:
            self.access_log.close()
        if self.ctx is not None:
            self.ctx.term()

    # -- Waiter -----------------------------------------------------------------------------------

    def wait(self, items: list[WatchItem], until: float, wake: Wake) -> list[Handle]:
        broker = self.broker
        assert broker is not None
        front, back = broker.frontend, broker.backend
        # The broker polls its own two sockets first, then those it handles inline; the
        # others are what it hands back.
        inline = self.inline
        others = [
            (handle, events)
            for handle, events in items
            if handle not in (front, back) and handle not in inline
        ]
        return broker.serve(others, until, wake, list(inline.items()) if inline else None)

    # -- WorkerView -------------------------------------------------------------------------------

    def service_configs(self, config: Config) -> dict[str, Config]:
        return config.service_configs()

    def identity(self, pid: int) -> bytes:
        return b"pid:%d" % pid

    def child_status(self) -> StatusWriter | None:
        return None

    def state_of(self, pool: Pool) -> StateOf:
        assert self.dispatcher is not None
        idle = set(self.dispatcher.idle_workers(pool.name.encode()))
        registered = self.dispatcher.workers

        def state(proc: WorkerProcess) -> State:
            if proc.identity in idle:
                return State.IDLE
            if proc.identity in registered:
                return State.BUSY
            return State.BOOTING

        return state

    def backlog(self, pool: Pool) -> tuple[int, float | None]:
        assert self.dispatcher is not None
        name = pool.name.encode()
        return self.dispatcher.waiting(name), self.dispatcher.oldest_queued(name)

    def registered(self, identity: bytes) -> bool:
        return self.dispatcher is not None and identity in self.dispatcher.workers

    def gone(self, identity: bytes, reason: str) -> None:
        assert self.dispatcher is not None
        assert self.broker is not None
        self.dispatcher.worker_gone(identity, reason)
        self.broker.flush()  # its jobs may have gone to other workers
        if self.on_gone is not None:
            self.on_gone(identity, reason)

    def scale_inputs(self) -> tuple[int, ...]:
        return () if self.dispatcher is None else self.dispatcher.scale_inputs()

    def watch_scale(self, seen: tuple[int, ...], load: bool) -> None:
        dispatcher = self.dispatcher
        assert dispatcher is not None
        dispatcher.scale_seen = seen
        dispatcher.watch_load = load

    # -- helpers ----------------------------------------------------------------------------------

    def _service_limits(self) -> dict[bytes, Limits]:
        assert self.host is not None
        return {
            name.encode(): Limits.from_config(pool.config) for name, pool in self.host.pools.items()
        }

    def _forked(self, identity: bytes) -> bool:
        """Whether ``identity`` is one of the workers this master forked: ours heartbeat while
        busy even when their READY is plain RFC 18 (worker_credit 1), asked once a READY."""
        return self._worker_of(identity) is not None

    def _worker_of(self, identity: bytes) -> WorkerProcess | None:
        assert self.host is not None
        if not identity.startswith(b"pid:"):
            return None
        try:
            pid = int(identity[4:])
        except ValueError:
            return None
        proc = self.host.workers.get(pid)
        return proc if proc is not None and proc.identity == identity else None

    def _process_running(self, identity: bytes) -> bool:
        """Whether ``identity`` is one of our workers and its process is alive and running:
        in ``/proc``, running, sleeping or in disk wait; not stopped (SIGSTOP, a debugger) and
        not a zombie. The dispatcher asks this only of busy workers silent past their expiry,
        so a read of ``/proc`` a heartbeat tick at most, per such worker. False for any other
        identity: remote workers keep heartbeat-based detection."""
        proc = self._worker_of(identity)
        return proc is not None and proc_state(proc.pid) in _RUNNING

    def _kill_hung(self, identities: list[bytes]) -> None:
        """SIGKILL the local workers the dispatcher gave up on (silent, or past a job's deadline).

        The dispatcher has already answered or rerouted their jobs; reaping starts a replacement.
        Workers that are not ours (remote pools) were sent DISCONNECT, which is all we can do.
        """
        assert self.host is not None
        for identity in identities:
            self.host.kill_worker(identity, "hung")
