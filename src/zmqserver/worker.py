"""A worker process: receive a job from the broker, call the app, send the reply, repeat.

The worker speaks MDP/0.2 (RFC 18) on a DEALER socket, so it is also a valid Majordomo worker for
any MDP/0.2 broker. It is started by the supervisor with ``os.fork()`` and builds everything
ZeroMQ-related afresh: a ZeroMQ context must never cross a fork (libzmq's I/O threads do not
survive it, and the child would share the parent's sockets).

Exit codes tell the supervisor what happened: 0 for an orderly exit (asked to stop, recycled after
``max_requests``, thrown out by the broker), :data:`BOOT_ERROR` when the app could not be loaded,
which stops the whole server instead of respawning into the same failure forever.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import random
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn, cast

import zmq

from ._io import receiver, send_frames, sender
from ._process import die_with_parent, endpoint_label, parent_alive, rss_bytes, set_title
from ._wakeup import WakeupSocketpair
from .bootreport import BootReports
from .config import App, Config
from .config.validate import split_endpoints
from .context import CURRENT
from .errors import AppLoadError, BadReply, ProtocolError, Retry, Status
from .hooks import WORKER_HOOKS, Hooks
from .loader import explain, load_app
from .logsetup import CONTEXT
from .protocol import (
    STATUS_OK,
    Disconnect,
    Heartbeat,
    JobRequest,
    encode_disconnect,
    encode_heartbeat,
    encode_ready,
    encode_worker_reply,
    parse_broker_message,
)
from .security.handshakes import Handshakes
from .security.sockets import ClientCredentials, apply_client
from .status import Report, StatusWriter

log = logging.getLogger("zmqserver.worker")

BOOT_ERROR = 3

#: Time a final reply may take to leave the socket when the worker exits.
EXIT_LINGER_MS = 2000


#: Longest extra wait between reconnection attempts to a silent broker.
MAX_RECONNECT_BACKOFF = 32.0


_CLIENT_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "zmqserver_client_key", default=None
)


class _ForkMark:
    """Whether this process is one the app forked rather than the worker (see
    :func:`watch_app_forks`). Attributes, not module globals: cheap to read when compiled."""

    def __init__(self) -> None:
        self.child = False
        self.hooked = False


_FORKED = _ForkMark()


def _mark_child() -> None:
    _FORKED.child = True


def watch_app_forks() -> None:
    """In the worker: mark every process forked from now on (by the app) as not the worker.

    An app that forks a child which returns instead of exiting sends that child into the
    worker's own code, where it once spun at 99% CPU forever, outliving the server, on the
    worker's socket and a heartbeat lock another thread may have held at the fork. The
    at-fork hook makes the mark; where the app's call comes back, one attribute read a job
    sends such a child to :func:`_leave_app_child`. Rejected: comparing ``os.getpid()`` there,
    a system call on every job. ``subprocess`` runs no at-fork hooks, and its child execs.
    """
    _FORKED.child = False  # we may be the child of a process that ran this (a test's)
    if not _FORKED.hooked:
        os.register_at_fork(after_in_child=_mark_child)
        _FORKED.hooked = True


def _leave_app_child() -> NoReturn:
    """End a process the app forked that came back into the worker's code: ``os._exit``, so
    nothing of the worker's runs in it (no reply, no hooks, no flush of shared buffers).

    Its status is 0 when the app returned, a ``sys.exit`` code, or 1 when it raised.
    """
    exc = sys.exc_info()[1]
    code = 0
    if isinstance(exc, SystemExit):
        code = exc.code if isinstance(exc.code, int) else 1
    elif exc is not None:
        code = 1
    log.warning(
        "process %d, forked by the app in worker %d, came back into the worker; it exits "
        "(a forked child should end with os._exit or exec)",
        os.getpid(),
        os.getppid(),
    )
    os._exit(code)


def client_key() -> str | None:
    """The CURVE public key (Z85) of the client whose job the app is running, or None.

    It is known only when the server runs with ``pass_client_key`` and the client connected
    with CURVE; the broker's ZAP handler vouched for it. Call it from the app (or a
    ``pre_request`` hook) to authorise per client without a token in the payload.
    """
    return _CLIENT_KEY.get()


class BusyHeartbeat:
    """Keeps heartbeats flowing from a thread while the main thread runs the app.

    The app runs in the main thread (so it may use signals, and a worker's stack traces look
    normal), where it can block for minutes; a broker that heard nothing for that long would take
    the worker for dead (RFC 6/PPP). So for the length of each job the socket is lent to this
    thread, under a lock: ZeroMQ sockets are not thread-safe, but may move between threads across
    a full memory barrier, which the lock provides. The thread touches the socket only while
    holding the lock and only while it is lent, so once :meth:`end` returns it no longer does.

    A job must not wake the thread: with a wake-up per job (the first design, a Condition
    notified by :meth:`begin`) the two threads handed the GIL back and forth on every job, which
    cost more than the job itself under load. So :meth:`begin` and :meth:`end` only take an
    uncontended lock and write two attributes, and the thread keeps its own clock: it sleeps a
    full interval while the worker is idle, and while a job runs it sleeps until one interval
    after the later of the job's start and its own last heartbeat, then heartbeats. A job
    shorter than an interval is never seen by the thread at all; a long one heartbeats every
    interval from its start, as the broker expects. The rejected alternative, an I/O thread that
    owns the socket and talks to the main thread over inproc, costs two socket hops a job.
    """

    def __init__(self, heartbeat: list[bytes], interval: float) -> None:
        self._heartbeat = heartbeat
        self._interval = interval
        self._lock = threading.Lock()
        # Both written under the lock, by begin()/end() and by the thread after a heartbeat.
        self._sock: zmq.Socket[bytes] | None = None
        self._since = 0.0  # start of the current job, or the thread's last heartbeat in it
        self._stop = threading.Event()
        #: More sockets to heartbeat during a job: a pair's other broker (worker_pair.py).
        self._also: list[zmq.Socket[bytes]] = []
        # Not "_thread": compiled (mypyc), that becomes a C field named __thread, a C keyword.
        self._beater: threading.Thread | None = None

    def begin(self, sock: zmq.Socket[bytes]) -> None:
        """Lend ``sock`` to the heartbeat thread until :meth:`end`."""
        now = time.monotonic()
        with self._lock:
            self._sock = sock
            self._since = now
        if self._beater is None:
            # Started on the first job, so a worker that never gets one runs no thread.
            self._beater = threading.Thread(target=self._run, name="heartbeat", daemon=True)
            self._beater.start()

    def end(self) -> None:
        """Take the socket back; once this returns the thread no longer touches it."""
        with self._lock:
            self._sock = None

    def also(self, socks: list[zmq.Socket[bytes]]) -> None:
        """Heartbeat ``socks`` too while a job runs (call between jobs): a broker of a pair
        that did not send the job must not take the worker for dead while it runs."""
        with self._lock:
            self._also = socks

    def send(self, frames: list[bytes]) -> None:
        """Send on the lent socket from the main thread (a streaming app's PARTIALs)."""
        with self._lock:
            assert self._sock is not None
            send_frames(self._sock, frames)

    def close(self) -> None:
        """Stop the thread (promptly: it waits on an Event, not a sleep)."""
        self._stop.set()
        if self._beater is not None:
            self._beater.join(timeout=1.0)

    def _run(self) -> None:
        interval = self._interval
        wait = interval
        while not self._stop.wait(wait):
            with self._lock:
                if self._sock is None:
                    wait = interval  # idle: one wake-up an interval, nothing sent
                else:
                    now = time.monotonic()
                    due = self._since + interval
                    if now >= due:
                        # NOBLOCK: with the broker gone a full pipe must not wedge the lock.
                        with contextlib.suppress(zmq.Again):
                            self._sock.send_multipart(self._heartbeat, zmq.NOBLOCK)
                        for other in self._also:
                            if other is not self._sock:
                                with contextlib.suppress(zmq.Again):
                                    other.send_multipart(self._heartbeat, zmq.NOBLOCK)
                        self._since = now
                        due = now + interval
                    wait = due - now


def to_frames(result: Any) -> list[bytes]:
    """Turn an app's return value into reply frames; raise :class:`BadReply` if it cannot."""
    if isinstance(result, bytes):
        return [result]
    if isinstance(result, str):
        return [result.encode()]
    if isinstance(result, bytearray | memoryview):
        return [bytes(result)]
    if isinstance(result, list | tuple):
        frames = []
        for item in result:
            if isinstance(item, bytes):
                frames.append(item)
            elif isinstance(item, str):
                frames.append(item.encode())
            elif isinstance(item, bytearray | memoryview):
                frames.append(bytes(item))
            else:
                raise BadReply(
                    f"app returned a list containing {type(item).__name__}; "
                    "expected bytes or str frames"
                )
        return frames
    raise BadReply(f"app returned {type(result).__name__}; expected bytes, str, or a list of them")


def payload_of(body: list[bytes]) -> bytes | list[bytes]:
    """What the app receives: bytes for a one-frame payload, the list of frames otherwise."""
    if len(body) == 1:
        return body[0]
    if not body:
        return b""
    return body


class Worker:
    """One worker's loop. All state lives on the instance (never on the class)."""

    def __init__(
        self,
        config: Config,
        app: App,
        identity: bytes,
        endpoint: str,
        master_pid: int,
        credentials: ClientCredentials | None = None,
        hooks: Hooks | None = None,
        status: StatusWriter | None = None,
    ) -> None:
        """``credentials`` make the worker a CURVE client of a CURVE backend; ``status``
        reports its state to a remote pool's supervisor (status.py)."""
        self.status = status
        self.config = config
        self.credentials = credentials
        self.hooks = hooks or Hooks()
        self.app = app
        self.identity = identity
        self.endpoint = endpoint
        self.master_pid = master_pid
        self.service = config.service.encode()
        self.stopping = False
        self.jobs_done = 0
        self.max_jobs = 0
        if config.max_requests:
            self.max_jobs = config.max_requests + random.randint(0, config.max_requests_jitter)
        self.ctx = zmq.Context()
        self.sock: zmq.Socket[bytes] | None = None
        #: Read (None: nothing waiting) and send a whole message on ``sock``; made with it.
        self._recv: Callable[[], list[bytes] | None]
        self._send: Callable[[list[bytes]], None]
        #: ``sock``'s ZMQ_FD, which run() polls (see the comment at its poll).
        self._sock_fd = -1
        self._handshakes: Handshakes | None = None
        self._wakeup = WakeupSocketpair()
        self._busy = BusyHeartbeat(encode_heartbeat(), config.heartbeat_interval)
        # Looked up once: most servers set no per-job hook, and then a job calls none.
        self._pre_request = self.hooks.get("pre_request")
        self._post_request = self.hooks.get("post_request")

    # -- set-up -----------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        # Handlers only set a flag; the write to the wakeup fd (done by CPython's C-level handler)
        # is what breaks zmq_poll out of its wait, so a stop request never waits for a timeout.
        self._wakeup.install()
        signal.signal(signal.SIGTERM, self._graceful)
        signal.signal(signal.SIGQUIT, self._graceful)
        signal.signal(signal.SIGINT, self._immediate)
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)  # these are the master's business

    def _graceful(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _immediate(self, signum: int, frame: Any) -> None:
        # Fast stop: the master answers our running job, if any, with an error.
        os._exit(0)

    def _connect(self, endpoint: str | None = None) -> zmq.Socket[bytes]:
        """A fresh socket to the broker (``endpoint``: one of a pair's, else ``self.endpoint``),
        with the READY sent; it becomes ``self.sock``."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, self.identity)
        if self.credentials is not None:
            apply_client(sock, self.credentials)
        sock.connect(endpoint or self.endpoint)
        self._recv, self._send = receiver(sock), sender(sock)
        self._sock_fd = cast(int, sock.getsockopt(zmq.FD))
        if self.status is not None:
            # A remote worker watches its handshakes, to tell a broker that refuses it (a CURVE
            # key it does not accept, a plain worker at a CURVE backend) from one that is down:
            # both are silence to the socket.
            self._handshakes = Handshakes(sock)
        # With credit, the READY is zmqserver's own already (a credit header): ask for compact
        # framing too, one frame instead of four per job each way, and for the client info
        # (a broker without pass_client_info ignores that). Credit 1 stays plain RFC 18, unless
        # the worker is told to ask for the client info.
        credit = self.config.worker_credit
        info = credit > 1 or self.config.pass_client_info
        ready = encode_ready(self.service, credit=credit, compact=credit > 1, client_info=info)
        # NOBLOCK: a connection whose handshake failed has no pipe to queue into; the READY is
        # sent again with the next connection (the silence below), never waited for.
        with contextlib.suppress(zmq.Again):
            sock.send_multipart(ready, zmq.NOBLOCK)
        self._report(Report.CONNECTING)
        return sock

    def _report(self, report: Report) -> None:
        if self.status is not None:
            self.status(report)

    # -- main loop --------------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        sock = self.sock = self._connect()
        # The wait is an OS poll on the socket's ZMQ_FD and the signal pipe, not zmq_poll: see
        # the comment at the poll below for why that is a complete wait, and what it saves.
        poller = select.poll()
        poller.register(self._sock_fd, select.POLLIN)
        wake_fd = self._wakeup.fileno()
        poller.register(wake_fd, select.POLLIN)
        interval = self.config.heartbeat_interval
        silence_limit = interval * self.config.heartbeat_liveness
        report = self.status
        now = time.monotonic()
        heartbeat_at = now + interval
        broker_seen = now
        backoff = 0.0  # extra patience after each reconnect that met silence again
        recv = self._recv
        while not self.stopping:
            # Under load (worker_credit > 1) the next job is usually here already: read it
            # without zmq_poll, which costs system calls even when a message waits.
            frames = recv()
            if frames is None:
                # The failed recv() just made libzmq process every command pending for the
                # socket and found no message; nothing else touches the socket until the next
                # recv() (the heartbeat thread only holds it during a job). From here on its
                # ZMQ_FD turns readable when anything arrives (libzmq's edge-triggered FD
                # contract), so polling that fd is a complete wait. zmq_poll would first check
                # the socket's events again, then again after the wake-up, each check a
                # getpid() and a poll() of libzmq's own: about 4 us a job at K=1. A wake-up that
                # brings no message (a command that is not one) just comes round again.
                # ``now`` was read after the last poll or the last job, whichever came later:
                # close enough for a timeout, and one clock read a turn fewer.
                events = poller.poll(int(max(0.0, heartbeat_at - now) * 1000) + 1)
                now = time.monotonic()
                for ready, _ in events:
                    if ready == wake_fd:
                        self._wakeup.drain()
                    elif not self.stopping:
                        # A stop signal that arrived with a message leaves it unread. With
                        # worker_credit > 1 it may be a job held for us, which the broker hands
                        # to another worker when our DISCONNECT arrives; running it first would
                        # only delay the stop.
                        frames = recv()
            from_broker = frames is not None
            if frames is not None:
                broker_seen = now
                backoff = 0.0
                if report is not None:
                    report(Report.IDLE)  # the broker answers: registered (or a job)
                if not self._on_message(frames):
                    return 0
                if self.max_jobs and self.jobs_done >= self.max_jobs:
                    log.info(
                        "worker %d served %d jobs (max_requests); exiting",
                        os.getpid(),
                        self.jobs_done,
                    )
                    break
                if self.config.max_worker_memory and self._over_memory():
                    break
                # The broker could not speak to us while the app ran; time starts now.
                now = broker_seen = time.monotonic()
            # The master-death check: on every wake-up but a job's (a poll timeout, a signal
            # such as die_with_parent's SIGTERM), and once an interval under load. getppid() is
            # a system call, too dear for every one of tens of thousands of jobs a second.
            if (not from_broker or now >= heartbeat_at) and self._master_gone():
                return 0
            if now >= heartbeat_at:
                # Dropped when there is no connection to queue it on (a refused handshake):
                # a missed heartbeat is what the broker's liveness check is for.
                with contextlib.suppress(zmq.Again):
                    sock.send_multipart(encode_heartbeat(), zmq.NOBLOCK)
                heartbeat_at = now + interval
            if now - broker_seen > silence_limit + backoff:
                # Paranoid Pirate: the broker went silent. Start over with a fresh connection
                # and READY, waiting longer after each attempt that meets silence again.
                self._log_silence(now - broker_seen)
                poller.unregister(self._sock_fd)
                if self._handshakes is not None:
                    self._handshakes.close()
                sock.close(linger=0)
                sock = self.sock = self._connect()
                recv = self._recv
                poller.register(self._sock_fd, select.POLLIN)
                broker_seen = now
                backoff = min(max(2 * backoff, interval), MAX_RECONNECT_BACKOFF)
        # A stop asked for during a job lands here without the check above. With the master gone
        # a DISCONNECT would wait out the exit linger in the socket, and keep this process, and
        # alive that long for nothing.
        # Strict: die_with_parent's SIGTERM comes while the master's last threads still exit.
        if self._master_gone(strict=True):
            return 0
        # Orderly exit between jobs: tell the broker, so it stops routing to us at once.
        sock.send_multipart(encode_disconnect(), zmq.NOBLOCK)
        return 0

    def _log_silence(self, silent: float) -> None:
        """Say why the broker went silent, as far as the handshakes tell."""
        refused = self._handshakes is not None and self._handshakes.refused()
        if refused:
            log.error(
                "worker %d: the broker at %s did not answer the handshake: check server_key / "
                "key_file / backend_allow (and the broker's curve_worker_keys_dir); retrying, "
                "less and less often",
                os.getpid(),
                self.endpoint,
            )
            return
        log.warning(
            "worker %d: no word from the broker in %.1fs; reconnecting", os.getpid(), silent
        )

    def _master_gone(self, strict: bool = False) -> bool:
        """``strict`` also sees a master that is still exiting (see :func:`parent_alive`): dearer
        than getppid() (a read of /proc), so only on the way out, where a mistake costs the
        exit linger; the loop's next wake-up corrects a loose answer anyway."""
        alive = parent_alive(self.master_pid) if strict else os.getppid() == self.master_pid
        if alive:
            return False
        log.warning("worker %d: master %d is gone; exiting", os.getpid(), self.master_pid)
        return True

    def _on_message(self, frames: list[bytes]) -> bool:
        """Handle one broker message; return False when the broker told us to go."""
        try:
            msg = parse_broker_message(frames)
        except ProtocolError as exc:
            log.warning("worker %d: ignoring malformed message from broker: %s", os.getpid(), exc)
            return True
        if isinstance(msg, JobRequest):
            self._run_job(msg)
        elif isinstance(msg, Disconnect):
            log.info("worker %d: broker sent DISCONNECT; exiting", os.getpid())
            return False
        else:
            assert isinstance(msg, Heartbeat)
        return True

    def _run_job(self, job: JobRequest) -> None:
        # The per-job path: everything here runs once a job, so what is not needed is skipped
        # (status reports without a status pipe, unset hooks, the client key of a keyless job).
        sock = self.sock
        assert sock is not None
        self.jobs_done += 1
        report = self.status
        payload = payload_of(job.body)
        # While the app runs, the heartbeat thread owns the socket (heartbeats, and PARTIALs
        # via its send()); the main thread takes it back before sending the FINAL.
        busy = self._busy
        busy.begin(sock)
        if report is not None:
            report(Report.BUSY)
        # Set only when the job carries a key: the reset below puts back the default (None),
        # so a keyless job after a keyed one still reads None, without a set/reset of its own.
        key = job.client_key
        token = _CLIENT_KEY.set(key.decode("ascii", "replace")) if key else None
        CONTEXT.job = job.address  # the request id of the app's log lines (log_format json)
        CURRENT.job = job  # zmqserver.request() (context.py)
        if job.info:
            CURRENT.taken = time.monotonic()  # the client info's time left counts from here
        try:
            if self._pre_request is not None:
                self._pre_request(payload)  # raising vetoes the job
            frames = self._call(job, payload, busy)
            status = STATUS_OK
        except Retry as exc:
            # Not a failure to log: the app asks for the job to run again (durable jobs do).
            if _FORKED.child:
                _leave_app_child()
            frames = [exc.reply_text().encode()]
            status = Status.RETRY
        except Exception as exc:
            if _FORKED.child:
                _leave_app_child()
            log.exception("worker %d: app raised on a job", os.getpid())
            frames = [f"{type(exc).__name__}: {exc}".encode()]
            status = Status.APP_ERROR
        finally:
            if _FORKED.child:  # the app forked, and the child returned (or sys.exit'ed)
                _leave_app_child()
            if token is not None:
                _CLIENT_KEY.reset(token)
            CONTEXT.job = CURRENT.job = None
            busy.end()
        self._send(encode_worker_reply(job.address, frames, status=status, compact=job.compact))
        if report is not None:
            report(Report.IDLE)
        if self._post_request is not None:
            self.hooks.run_logged("post_request", payload, status)

    def _over_memory(self) -> bool:
        """max_worker_memory: True (time to exit, between jobs) once RSS is over the limit."""
        rss = rss_bytes()
        if rss <= self.config.max_worker_memory * 1024 * 1024:
            return False
        log.info(
            "worker %d uses %.1f MiB (max_worker_memory %d MiB); exiting",
            os.getpid(),
            rss / (1024 * 1024),
            self.config.max_worker_memory,
        )
        return True

    def _call(
        self, job: JobRequest, payload: bytes | list[bytes], busy: BusyHeartbeat
    ) -> list[bytes]:
        result = self.app(payload)
        if isinstance(result, bytes):
            return [result]  # the common reply, ahead of the dearer iterator checks (ABCs)
        if not _is_stream(result):
            return to_frames(result)
        if _FORKED.child:  # before the stream goes out on the worker's socket
            _leave_app_child()
        for part in result:
            busy.send(
                encode_worker_reply(job.address, to_frames(part), final=False, compact=job.compact)
            )
        return []

    def close(self) -> None:
        self._busy.close()
        if self._handshakes is not None:
            self._handshakes.close()
        self._wakeup.close()  # puts back the wake-up fd the worker had before (none)
        if self.sock is not None:
            # Let the last reply and DISCONNECT leave before the process goes; but not for a
            # dead master (a local worker's master is its broker): whatever is queued (READY, a
            # heartbeat) has no reader, and lingering only keeps this orphan alive. (It holds
            # none of the master's sockets: Flock.drop_master_fds closed them at the fork.)
            alive = parent_alive(self.master_pid)
            self.sock.close(linger=EXIT_LINGER_MS if alive else 0)
        self.ctx.term()


def _is_stream(result: Any) -> bool:
    """Generators and other iterators stream; bytes, str and lists are whole replies."""
    return isinstance(result, Iterator) or (
        isinstance(result, Iterable)
        and not isinstance(result, bytes | str | bytearray | memoryview | list | tuple)
    )


def worker_main(
    config: Config,
    app: App | None,
    identity: bytes,
    endpoint: str,
    master_pid: int,
    credentials: ClientCredentials | None = None,
    status: StatusWriter | None = None,
    boot_reports: BootReports | None = None,
) -> int:
    """Body of a freshly forked worker; returns the exit code (the caller ``os._exit``s it).

    ``app`` is the callable when it was loaded before the fork (given as an object, or
    preloaded); otherwise the worker imports ``config.app`` itself, so each worker gets its own
    copy of the module state and an import error is reported as :data:`BOOT_ERROR`, with its
    traceback sent to the master on ``boot_reports`` (which logs it once for all workers).
    """
    die_with_parent()
    watch_app_forks()
    # Where it takes jobs from: the backend's port, or "local" when the broker listens only on
    # its private ipc:// socket (the port in the config then has nothing behind it).
    where = endpoint_label(config.backend_endpoint) if config.public_backend else "local"
    title = f"{config.proc_name} worker {where}"
    # The service is named where it is not the one default: `zmq worker 6661 upper`.
    set_title(title if config.service == "default" else f"{title} {config.service}")
    CONTEXT.service = CURRENT.service = config.service
    try:
        # Hooks load here, like the app, so HUP reloads them; a post_fork that fails would
        # fail in every worker, so it halts the server like an app that does not import.
        hooks = Hooks.load(config, WORKER_HOOKS)
        hooks.run("post_fork", config)
        if app is None:
            app = load_app(config.app)
    except AppLoadError as exc:
        return _boot_failed(explain(exc), boot_reports)
    except Exception as exc:
        trace = "".join(traceback.format_exception(exc)).rstrip("\n")
        return _boot_failed(f"post_fork {config.post_fork!r} raised\n{trace}", boot_reports)
    worker = Worker(config, app, identity, endpoint, master_pid, credentials, hooks, status)
    try:
        # A remote pool (it has a status pipe) may be given a Binary Star pair (docs/ha.md).
        brokers = split_endpoints(endpoint) if status is not None else [endpoint]
        if len(brokers) > 1:
            from .worker_pair import run_pair

            return run_pair(worker, brokers)
        return worker.run()
    finally:
        hooks.run_logged("worker_exit", config)
        worker.close()


def _boot_failed(report: str, boot_reports: BootReports | None) -> int:
    """Tell the master why this worker cannot start (or log it, if that fails)."""
    if boot_reports is None or not boot_reports.send(report):
        log.error("worker %d could not start: %s", os.getpid(), report)
    return BOOT_ERROR
