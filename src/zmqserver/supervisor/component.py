"""What the master's loop composes: components, and the one that tells it about its workers.

Rule 1: only contracts live here (Protocols and the small types they use), so that every other
module of the package, and every component, can import them without importing each other.

The master (:class:`~zmqserver.supervisor.master.Master`) owns the loop, the signals and the
worker processes. Everything else a server does is a :class:`Component` it composes: the broker
(both ROUTER sockets, the routing core, ZAP), a remote pool's status pipe, and tomorrow a
pub-sub proxy, a control endpoint, a metrics endpoint or a job store. A component registers the
sockets and fds it waits on and the time it next has work; the loop waits on all of them at
once (plus the signal wake-up fd) and hands each component what became readable.

Exactly one component is also the :class:`WorkerView`: where workers connect, and how the master
learns their states. The broker knows them from its routing core; a remote pool from a pipe its
workers write to. One component may also be the :class:`Waiter`, when its sockets are so busy
that the wait itself must run in its compiled code (the broker's does).

docs/architecture.md draws the processes and sockets, and says how to add a component.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..scaling import State

if TYPE_CHECKING:
    from .._process import Credentials
    from .._wakeup import Wake
    from ..config import Config
    from ..security import ClientCredentials
    from ..status import StatusWriter
    from .workers import Pool, WorkerProcess

#: What a component waits on: a ZeroMQ socket, or anything with a file descriptor (an int, a
#: socket, an object with ``fileno()``), as :class:`zmq.Poller` takes it.
Handle = Any

#: ``(handle, events)``: the events are zmq.POLLIN and/or zmq.POLLOUT.
WatchItem = tuple[Handle, int]

#: How a worker looks from outside this turn: booting, idle, busy or detached.
StateOf = Callable[["WorkerProcess"], State]


class StartError(Exception):
    """A component could not start (an endpoint in use, a file it cannot open).

    The message is the whole story, ready for the log: the master logs it and exits with 1.
    """


class Host(Protocol):
    """What a component may ask of the master that runs it."""

    #: The master's pid (the one in the pid file, the workers' parent).
    pid: int

    @property
    def config(self) -> Config:
        """The current config (HUP replaces it; see :meth:`Component.on_config`)."""

    @property
    def pools(self) -> Mapping[str, Pool]:
        """The pools, one per service, in the config's order, each with its own config."""

    @property
    def workers(self) -> Mapping[int, WorkerProcess]:
        """The live worker processes, by pid."""

    def kill_worker(self, identity: bytes, why: str) -> bool:
        """SIGKILL our worker with routing id ``identity``; False if none of ours has it."""


class Component(Protocol):
    """One part of the server that the master's loop hosts.

    The loop calls, in this order: :meth:`open` once; then each turn :meth:`watch` and
    :meth:`next_deadline` before it waits, and :meth:`handle` after (with what became
    readable, possibly nothing: a deadline or a signal ended the wait); the lifecycle calls
    when they happen; :meth:`close` once at the end, after the workers are gone. A component
    finishes its own I/O in each call (sends what it queued), so nothing waits on a later turn.
    """

    def open(self, host: Host) -> None:
        """Bind or open what the component waits on; raise :class:`StartError` if it cannot.

        Runs before the pid file is written and before privileges are dropped: a component
        that binds a privileged port does it here.
        """

    def watch(self) -> list[WatchItem]:
        """The sockets and fds to wait on this turn (asked each turn: the list may change)."""

    def next_deadline(self) -> float:
        """When :meth:`handle` next has work with nothing readable (``math.inf``: never)."""

    def handle(self, ready: Collection[Handle], now: float) -> None:
        """Read what became readable (``ready``: handles from :meth:`watch`) and do what is
        due at ``now``. Called every turn; keep the empty case cheap."""

    def on_stop(self, graceful: bool) -> None:
        """The server is stopping (TERM/QUIT: ``graceful``, INT: not): stop taking new work."""

    def on_reload(self) -> None:
        """HUP: reload what the config does not hold (key directories, say)."""

    def on_config(self, config: Config) -> None:
        """The config changed (HUP, or a failed HUP rolled back)."""

    def owned_paths(self) -> list[str]:
        """Files (ipc:// sockets) to hand to ``user`` before privileges are dropped."""

    def admit_user(self, creds: Credentials) -> None:
        """The master is about to become ``creds``: let that user's workers in."""

    def close(self) -> None:
        """Release what :meth:`open` made. Called even when :meth:`open` failed part-way."""


class WorkerView(Protocol):
    """Where workers connect, and how the master learns their states.

    The master forks the workers; this role knows what they do once they run. The autoscaler
    reads it (:meth:`state_of`, :meth:`backlog`, :meth:`scale_inputs`), the reaper tells it of
    deaths (:meth:`registered`, :meth:`gone`), and each new worker is given :attr:`endpoint`,
    :attr:`credentials`, its :meth:`identity` and :meth:`child_status`.
    """

    #: Where workers connect.
    endpoint: str
    #: The CURVE keys a worker presents to the backend (None: no CURVE).
    credentials: ClientCredentials | None

    def service_configs(self, config: Config) -> dict[str, Config]:
        """Each pool's config, by service name (HUP calls it again)."""

    def identity(self, pid: int) -> bytes:
        """A worker's routing id, known from its pid alone (no handshake)."""

    def child_status(self) -> StatusWriter | None:
        """In a new worker, after the fork: its status reporter, if the master reads one."""

    def state_of(self, pool: Pool) -> StateOf:
        """How each of the pool's workers looks this turn (one snapshot per turn)."""

    def backlog(self, pool: Pool) -> tuple[int, float | None]:
        """Jobs queued for the pool's service, and when the oldest arrived (None: none)."""

    def registered(self, identity: bytes) -> bool:
        """Whether ``identity`` is still counted among the live workers."""

    def gone(self, identity: bytes, reason: str) -> None:
        """A worker is dead for good (its goodbye, if any, has come or never will)."""

    def scale_inputs(self) -> tuple[int, ...]:
        """A cheap summary of what the autoscaler sees: ``(registrations and removals so far,
        then anything else)``. A change in the first number is acted on at once, in the others
        within ``SCALE_CHECK`` (see the master's loop)."""

    def watch_scale(self, seen: tuple[int, ...], load: bool) -> None:
        """The autoscaler has planned on ``seen``: end the wait when the first number moves,
        and when the others do only if ``load``. A view whose changes arrive on a watched fd
        anyway (the status pipe) does nothing here."""


class Waiter(Protocol):
    """A component that runs the loop's wait itself (at most one per master).

    The broker's does: under load its sockets are ready tens of thousands of times a second,
    and turns that only move messages run inside its compiled code instead of coming back to
    the master each time.
    """

    def wait(self, items: list[WatchItem], until: float, wake: Wake) -> list[Handle]:
        """Wait on ``items`` until one is readable, ``until`` has come or ``wake.pending``
        (checked each turn) is set; the handles of ``items`` that became readable. Work of its
        own it may do meanwhile, and return only when the master has something to do."""
