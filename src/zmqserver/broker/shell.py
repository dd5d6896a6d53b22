"""The broker's I/O shell: two ROUTER sockets feeding the dispatch core.

All decisions live in dispatch.py; this module only moves frames between sockets and the
:class:`~.dispatch.Dispatcher`, turns send failures into calls the dispatcher understands, and
logs the events it reports (:class:`EventLog`: the core itself has no logger). The event loop
that calls it belongs to the master (one loop, one thread, one poller).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any, Final

import zmq

from .._io import batch_receiver, batch_sender, poller
from .._wakeup import Wake
from .dispatch import Dispatcher
from .events import Event, ReplyDropped
from .state import Port

log = logging.getLogger("zmqserver.broker")

#: Messages read from one socket before the loop looks at the other one and at signals, so a
#: flood on one port cannot starve the other.
BATCH: Final = 256

#: Messages the broker may read in one :meth:`Broker.drain`, from both ports, before the event
#: loop looks at signals and the autoscaler again. While messages keep coming it reads on without
#: asking zmq_poll (a recv that finds nothing is cheaper than a poll); this bounds the wait for
#: the rest. A due dispatcher deadline also ends the drain.
DRAIN_BUDGET: Final = 1024

#: How long queued replies may take to leave when the broker closes.
CLOSE_LINGER_MS: Final = 1000

#: TCP keepalive on the backend (seconds idle, between probes, probes): a remote worker's host
#: that vanishes without a FIN (power, network) has its connection closed after about a
#: minute, and the HEARTBEAT the broker sends a busy RFC worker then fails (liveness.py).
#: The OS default waits two hours. No effect on ipc://.
BACKEND_KEEPALIVE: Final = (30, 10, 3)

#: Repeated events are logged one line per this many seconds at most (see :class:`EventLog`):
#: the first at once, then a count. A crowd of clients that time out and go away (or one that
#: stops reading, or sends garbage in a loop) must not turn every message into a log line on the
#: broker's hot path.
REPEAT_LOG_INTERVAL: Final = 10.0

#: Throttled subjects the event log may remember before it forgets those whose interval is over.
_WINDOWS_SWEEP: Final = 1024

#: Replies held for clients whose pipe was full are retried when the frontend polls writable, and
#: on a timer from this many seconds, doubled after each retry that sent nothing up to
#: :data:`HELD_RETRY_MAX`. A ROUTER under ROUTER_MANDATORY polls writable when *any* peer's pipe
#: has room, so with other clients connected POLLOUT says little; the broker stops watching it
#: after a wake-up that sent nothing, and the timer takes over: a client that never reads costs a
#: failed send per this interval, never a busy loop.
HELD_RETRY_MIN: Final = 0.002
HELD_RETRY_MAX: Final = 0.05

#: Held messages and queued jobs a client that left must have freed for the broker to give
#: memory back to the OS (malloc_trim), and the least time between two trims: a trim walks
#: the heap (a few ms for a large one), which a crowd of REQ clients leaving one by one must not
#: cost on every departure.
TRIM_AFTER: Final = 64
TRIM_INTERVAL: Final = 1.0

#: The frontend's send high-water mark: messages libzmq queues for one client before a send to
#: it fails with EAGAIN (and the broker holds the reply itself, see :func:`frontend_sndhwm`).
SNDHWM_MAX: Final = 1000


def frontend_sndhwm(max_client_inflight: int) -> int:
    """The frontend's SNDHWM for ``max_client_inflight``: a tenth of it, between 16 and
    :data:`SNDHWM_MAX` (libzmq's default, for no limit).

    A client that does not read costs the broker its pipe (SNDHWM replies, in libzmq) and its
    held replies (up to max_client_inflight outcomes, in the dispatcher). The pipe only has to
    keep the connection busy (libzmq's I/O thread empties it into the kernel's socket buffer as
    fast as the client reads), so a tenth of the inflight bound is plenty for a client that
    reads, and keeps what one that does not read costs close to the inflight bound.
    """
    if not max_client_inflight:
        return SNDHWM_MAX
    return max(16, min(SNDHWM_MAX, max_client_inflight // 10))


class _Window:
    """One throttled (kind, subject): until when repeats are counted, and how many were."""

    __slots__ = ("until", "unlogged", "last")

    def __init__(self, until: float, last: Event) -> None:
        self.until = until
        self.unlogged = 0
        self.last = last


class EventLog:
    """Logs events (the dispatcher's, and the shell's own reply drops), throttling repeats.

    An event about a subject (:meth:`.events.Event.subject`: a worker, a client, or ``b""`` for
    a kind throttled across all peers: bad requests, reply drops) is logged at once
    unless one of its kind about the same subject was logged less than ``interval`` ago; then it
    is only counted, and when the interval is over the count is logged as one line (which starts
    another interval: a flood that goes on costs a line per interval). Events about no subject
    (a job's retry or quarantine) are always logged. Events whose level is off cost a count.
    """

    def __init__(self, logger: logging.Logger, interval: float = REPEAT_LOG_INTERVAL) -> None:
        self._log = logger
        self.interval = interval
        self._windows: dict[tuple[type, bytes], _Window] = {}
        self._sweep_above = _WINDOWS_SWEEP
        #: Events of each kind, since the start (logged or not).
        self.totals: dict[type, int] = {}
        self._due = math.inf  # the earliest end of a window with repeats to report
        #: Also given every event, logged or not (pub-sub publishes some: pubsub/events.py).
        #: Events are rare (workers coming and going, faults), never one per job.
        self.tap: Callable[[Event, float], None] | None = None

    def record(self, event: Event, now: float) -> None:
        kind = type(event)
        self.totals[kind] = self.totals.get(kind, 0) + 1
        tap = self.tap
        if tap is not None:
            tap(event, now)
        level = event.level
        if not self._log.isEnabledFor(level):
            return
        subject = event.subject()
        if subject is None:
            self._log.log(level, "%s", event.message())
            return
        key = (kind, subject)
        window = self._windows.get(key)
        if window is not None and (now < window.until or window.unlogged):
            window.unlogged += 1
            window.last = event
            if window.until < self._due:
                self._due = window.until
            return
        self._log.log(level, "%s", event.message())
        if window is not None:
            window.until = now + self.interval
            return
        self._windows[key] = _Window(now + self.interval, event)
        if len(self._windows) > self._sweep_above:
            self._report(now, everything=False)
            self._sweep_above = max(_WINDOWS_SWEEP, 2 * len(self._windows))

    def next_deadline(self) -> float:
        """When :meth:`on_tick` has a count to log (infinity: none)."""
        return self._due

    def on_tick(self, now: float) -> None:
        if now >= self._due:
            self._report(now, everything=False)

    def close(self, now: float) -> None:
        """Log every count not logged yet."""
        self._report(now, everything=True)

    def _report(self, now: float, *, everything: bool) -> None:
        """Log the counts of the intervals that are over (all of them, if ``everything``);
        forget the subjects that were quiet through theirs."""
        due = math.inf
        interval = self.interval
        for key, window in list(self._windows.items()):
            if window.unlogged and (everything or now >= window.until):
                last = window.last
                since = now - window.until + interval
                total = self.totals.get(key[0], 0)
                self._log.log(last.level, "%s", last.repeated(window.unlogged, since, total))
                window.unlogged = 0
                window.until = now + interval
            elif not window.unlogged and now >= window.until:
                del self._windows[key]
            elif window.unlogged and window.until < due:
                due = window.until
        self._due = due


class Broker:
    """Binds the frontend and backend ROUTERs and shuttles frames to and from ``dispatcher``."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        dispatcher: Dispatcher,
        frontend: str,
        backend: str,
        *,
        max_message_size: int = 0,
        max_frames: int = 0,
        secure: Callable[[zmq.Socket[bytes], str], None] | None = None,
        pass_client_key: bool = False,
        max_client_inflight: int = 0,
        pass_client_info: bool = False,
    ) -> None:
        """``secure(socket, "frontend" | "backend")`` sets security options before each bind.

        ``max_frames`` (0: none) bounds what is kept of a client's message: its routing id and
        ``max_frames`` + 1 frames, so the dispatcher sees that it was too long and answers
        too_large, while the rest (a million empty frames, say) is discarded as it is read,
        never made into objects.
        """
        self.dispatcher = dispatcher
        #: Read each request's ZAP User-Id (the client's CURVE key) and hand it to the dispatcher.
        self.pass_client_key = pass_client_key
        #: Read each request's Peer-Address too, for the client info header (pass_client_info).
        self.pass_client_info = pass_client_info
        self.frontend = self._router_socket(
            ctx,
            frontend,
            "frontend",
            max_message_size,
            secure,
            frontend_sndhwm(max_client_inflight),
        )
        #: Whether libzmq tells of a client's disconnection (ZMQ_ROUTER_NOTIFY: a message of its
        #: routing id and one empty frame). A draft option: a libzmq built without the draft
        #: API (pyzmq's wheels) refuses it, and a client is then known to be gone at the first
        #: message to it that fails with EHOSTUNREACH (see _undeliverable).
        self.notify = _notify_disconnect(self.frontend)
        try:
            self.backend = self._router_socket(ctx, backend, "backend", secure=secure)
        except BaseException:
            self.frontend.close(linger=0)
            raise
        # Indexed by Port, for send_batch.
        self.sockets = (self.frontend, self.backend)
        assert (Port.FRONTEND, Port.BACKEND) == (0, 1)
        self._send_batch = batch_sender(self.sockets)
        keep = max_frames + 2 if max_frames else 0
        self._recv_frontend = batch_receiver(
            self.frontend, pass_client_key, keep, with_peer_address=pass_client_info
        )
        self._recv_backend = batch_receiver(self.backend)
        #: Replies dropped because their client was gone, since the start.
        self.dropped_replies = 0
        #: Held replies (clients.py): when to retry them, the back-off, and whether the wait
        #: watches the frontend for POLLOUT (see HELD_RETRY_MIN).
        self._held_due = math.inf
        self._held_delay = HELD_RETRY_MIN
        self.watch_writable = False
        self._trim_at = 0.0  # when _trim may run again
        self._trim_due = math.inf  # when it will (infinity: nothing to give back)
        #: Where the dispatcher's events and the reply drops are logged.
        self.events = EventLog(log)

    @staticmethod
    def _router_socket(
        ctx: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        name: str,
        max_message_size: int = 0,
        secure: Callable[[zmq.Socket[bytes], str], None] | None = None,
        sndhwm: int = 0,
    ) -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.ROUTER)
        if sndhwm:
            sock.setsockopt(zmq.SNDHWM, sndhwm)
        # ROUTER_MANDATORY turns "peer gone" into EHOSTUNREACH instead of a silent drop, so a
        # reply to a vanished client is logged and a job for a vanished worker is rerouted.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # HANDOVER lets a client that reconnects with its routing id (our Lazy Pirate client
        # does) take over from its dead connection, so a resend reaches the same pending job.
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if max_message_size:
            # The dispatcher answers a request over max_message_size with a clear too_large error.
            # libzmq's own limit, per frame, is a backstop four times higher: a peer that sends a
            # frame that big is disconnected before the broker buffers all of it.
            sock.setsockopt(zmq.MAXMSGSIZE, 4 * max_message_size)
        sock.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        if name == "backend":
            idle, interval, count = BACKEND_KEEPALIVE
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, idle)
            sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, interval)
            sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, count)
        if secure is not None:
            secure(sock, name)  # CURVE, ZAP domain: a listener copies the options at bind time
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise OSError(exc.errno, f"cannot bind the {name} to {endpoint}: {exc}") from exc
        return sock

    def endpoints(self) -> tuple[str, str]:
        """The endpoints actually bound (with real port numbers when bound to port 0)."""
        return (
            self.frontend.getsockopt_string(zmq.LAST_ENDPOINT),
            self.backend.getsockopt_string(zmq.LAST_ENDPOINT),
        )

    def read_frontend(self, now: float) -> int:
        """Feed the dispatcher what clients sent (up to :data:`BATCH` messages); how many."""
        # dispatcher.on_client(...) each time, not a bound method kept in a local: compiled, that
        # is a direct native call, where the local would be a generic Python call.
        dispatcher = self.dispatcher
        if self.pass_client_info:
            return self._read_with_info(now)
        if self.pass_client_key:
            batch = self._recv_frontend(BATCH)
            for frames, user_id in batch:
                if self.notify and len(frames) == 2 and not len(frames[1]):
                    self._client_gone(frames[0])
                else:
                    dispatcher.on_client(frames[0], frames[1:], now, user_id)
            return len(batch)
        messages = self._recv_frontend(BATCH)
        if self.notify:
            for frames in messages:
                if len(frames) == 2 and not len(frames[1]):  # [routing id, ""]: it left
                    self._client_gone(frames[0])
                else:
                    dispatcher.on_client(frames[0], frames[1:], now)
            return len(messages)
        for frames in messages:
            dispatcher.on_client(frames[0], frames[1:], now)
        return len(messages)

    def _read_with_info(self, now: float) -> int:
        """:meth:`read_frontend` with pass_client_info: each request's Peer-Address (and its
        User-Id, passed on under pass_client_key) goes to the dispatcher with it."""
        dispatcher = self.dispatcher
        keys = self.pass_client_key
        batch = self._recv_frontend(BATCH)
        for frames, user_id, peer in batch:
            if self.notify and len(frames) == 2 and not len(frames[1]):
                self._client_gone(frames[0])
            else:
                dispatcher.on_client(frames[0], frames[1:], now, user_id if keys else None, peer)
        return len(batch)

    def read_backend(self, now: float) -> int:
        """Feed the dispatcher what workers sent (up to :data:`BATCH` messages); how many."""
        dispatcher = self.dispatcher
        messages = self._recv_backend(BATCH)
        for frames in messages:
            dispatcher.on_worker(frames[0], frames[1:], now)
        return len(messages)

    def serve(
        self,
        others: list[tuple[Any, int]],
        until: float,
        wake: Wake,
        inline: list[tuple[zmq.Socket[bytes], Callable[[float], float]]] | None = None,
    ) -> list[Any]:
        """Turns of the event loop that only move messages, run here until the master has
        something to do; which of ``others`` became readable.

        ``others`` are the master's other sockets and fds (the signal wake-up fd, the ZAP
        socket...), polled after the frontend and the backend. The turns end when one of those
        is readable, ``wake.pending`` is set (a signal came), the dispatcher has workers to
        kill, ``until`` (the master's next deadline) has come, or the dispatcher flags that the
        autoscaler's inputs moved (:meth:`~zmqserver.broker.dispatch.Dispatcher.scale_moved`).
        Under load a turn is one or two messages: here each costs a compiled call or two, where
        the interpreted loop spent microseconds of bytecode and a zmq.Poller round trip a turn.
        ``wake`` is an attribute read a turn, not a callback. The wait is
        :func:`~zmqserver._io.poller`'s: zmq_poll from C, answered with a bit mask.

        ``inline`` are other components' sockets that are handled here, without a return to
        the master: each ``(socket, handle)`` is polled after the frontend and the backend,
        and ``handle(now)`` is called when it is readable; it reads what is waiting and returns
        its component's next deadline, which may bring ``until`` forward. Pub-sub's collector
        is one: an update costs a call, where a turn of the master's loop cost ~100 us.
        """
        dispatcher = self.dispatcher
        # Bits 0 and 1: the frontend and the backend; then the inline sockets; then the
        # master's sockets and fds.
        handlers = [handle for _, handle in inline] if inline else []
        sockets = [self.frontend, self.backend]
        if inline:
            sockets += [sock for sock, _ in inline]
        sockets += [item for item, _ in others if isinstance(item, zmq.Socket)]
        fds = [item for item, _ in others if not isinstance(item, zmq.Socket)]
        watched = sockets + fds
        poll = poller(sockets, fds)
        # The frontend watched for POLLOUT too, while replies wait for a full pipe (rare).
        poll_out = poller(sockets, fds, out=1)
        writable = 1 << len(watched)
        handled = (1 << (2 + len(handlers))) - 1  # the bits handled here
        while True:
            now = time.monotonic()
            dispatcher.on_tick(now)
            self.on_tick(now)
            self.flush()
            if wake.pending or dispatcher.kills or dispatcher.intake or now >= until:
                return []  # intake: durable jobs' requests, for their component (not ours)
            if dispatcher.standby:
                return []  # requests while not active: the HA component decides (ha_side.py)
            if dispatcher.scale_moved():
                return []
            # Not min(): compiled, that boxes three floats and makes a generic call, every turn.
            deadline = dispatcher.next_deadline()
            if until < deadline:
                deadline = until
            mine = self.next_deadline()
            if mine < deadline:
                deadline = mine
            if self.watch_writable:
                ready = poll_out(poll_timeout_ms(deadline - now))
                if ready & writable:
                    ready ^= writable
                    self.send_held(time.monotonic())
            else:
                ready = poll(poll_timeout_ms(deadline - now))
            if ready & 3:
                self.drain(ready & 2 != 0, ready & 1 != 0, time.monotonic(), wake)
            if ready & handled > 3:
                for i in range(len(handlers)):
                    if ready >> (2 + i) & 1:
                        due = handlers[i](time.monotonic())
                        if due < until:
                            until = due
            if ready > handled:  # drain has sent what it produced
                return [watched[i] for i in range(2, len(watched)) if ready >> i & 1]

    def drain(self, backend_ready: bool, frontend_ready: bool, now: float, wake: Wake) -> None:
        """Read and answer until both ports are empty, the budget is spent, a dispatcher deadline
        is due or ``wake.pending`` (the master has work: a signal came).

        Under load, replies and requests keep arriving while a round is handled: reading on
        costs a failed recv per port, where going back to zmq_poll would cost a turn of the
        event loop and a system call for each message or two. The first round reads only the
        ports zmq_poll named (a failed read is system calls too). Here rather than in the event
        loop because this module is compiled: the loop's per-turn work runs native.
        """
        dispatcher = self.dispatcher
        budget = DRAIN_BUDGET
        count = (self.read_backend(now) if backend_ready else 0) + (
            self.read_frontend(now) if frontend_ready else 0
        )
        while True:
            self.flush()
            budget -= count
            # A round of one message is a light load: more is unlikely to be waiting, and the
            # failed reads that would say so cost a system call each. zmq_poll will see it.
            if count < 2 or budget <= 0 or wake.pending or dispatcher.kills:
                return
            now = time.monotonic()
            if now >= dispatcher.next_deadline():
                return  # a job's deadline or the heartbeat is due: on_tick first
            count = self.read_backend(now) + self.read_frontend(now)

    def flush(self) -> None:
        """Send everything the dispatcher wants sent; route around peers that are gone; log
        what it reported.

        One send_batch call per round. A worker that is gone hands its job back to the
        dispatcher, which may queue more to send: hence the loop.
        """
        dispatcher = self.dispatcher
        if dispatcher.events:
            self._log_events()
        while dispatcher.outbox:
            outbox = dispatcher.outbox
            failed = self._send_batch(outbox)
            if not failed:
                # Emptied in place: the list keeps its room, so the next turn's appends neither
                # allocate a list nor grow one.
                outbox.clear()
                break
            dispatcher.outbox = []  # what the failures below add goes out on the next round
            for index, err in failed:
                port, identity, frames = outbox[index]
                if port is Port.FRONTEND and err == errno.EAGAIN:
                    # A client's pipe is full: it is connected, only slow to read. The reply
                    # waits in the dispatcher, with whatever follows for that client.
                    dispatcher.clients.hold(identity, frames)
                else:
                    self._undeliverable(port, identity, err)
        if dispatcher.clients.holding and self._held_due == math.inf:
            self._held_due = time.monotonic() + HELD_RETRY_MIN
            self.watch_writable = True
        if dispatcher.events:  # from the failures: workers gone
            self._log_events()

    def _log_events(self) -> None:
        now = time.monotonic()
        for event in self.dispatcher.take_events():
            self.events.record(event, now)

    def _undeliverable(self, port: Port, identity: bytes, err: int) -> None:
        reason = os.strerror(err)
        if port is Port.FRONTEND:
            # The client disconnected before its reply (EHOSTUNREACH): the job's one outcome is
            # this logged drop (counted here; see REPEAT_LOG_INTERVAL). Its jobs still queued
            # are dropped unrun, and what was held for it.
            self.dropped_replies += 1
            self.events.record(ReplyDropped(identity, reason), time.monotonic())
            self._client_gone(identity)
        else:
            # The worker vanished before taking the message: whatever job it carried was never
            # delivered, so it can go to another worker.
            self.dispatcher.worker_gone(identity, f"unreachable: {reason}", undelivered=True)

    def _client_gone(self, client: bytes) -> None:
        """Drop what the dispatcher keeps for ``client``; give a large amount back to the OS."""
        stats = self.dispatcher.stats
        abandoned = stats.abandoned
        held = self.dispatcher.client_gone(client)
        self.dropped_replies += held
        if held + stats.abandoned - abandoned >= TRIM_AFTER:
            self._trim_due = min(self._trim_due, self._trim_at)

    def _trim(self, now: float) -> None:
        """``malloc_trim(0)``, due after a client that left freed much, at most once per
        :data:`TRIM_INTERVAL`: glibc keeps freed heap pages for reuse, so the replies and
        requests of clients that left stayed in the broker's RSS (measured: 103 MiB after four
        slow readers left, 36 MiB with the trim)."""
        self._trim_at = now + TRIM_INTERVAL
        self._trim_due = math.inf
        if _MALLOC_TRIM is not None:
            _MALLOC_TRIM(0)

    def send_held(self, now: float) -> None:
        """Send what the dispatcher holds for clients whose pipe was full, each client's in
        order, until its pipe is full again; then arm the next retry (HELD_RETRY_MIN)."""
        clients = self.dispatcher.clients
        send = self._send_batch
        sent = False
        for client in list(clients.holding):
            held = clients.held_for(client)
            while held:
                failed = send(((Port.FRONTEND, client, held[0]),))
                if not failed:
                    sent = True
                    clients.delivered(client)
                    continue
                if failed[0][1] != errno.EAGAIN:
                    self._undeliverable(Port.FRONTEND, client, failed[0][1])
                break
        if not clients.holding:
            self._held_due, self._held_delay, self.watch_writable = math.inf, HELD_RETRY_MIN, False
            return
        if sent:
            self._held_delay = HELD_RETRY_MIN
        else:  # the frontend was writable for another client, or the timer found no room
            self._held_delay = min(HELD_RETRY_MAX, 2 * self._held_delay)
        self.watch_writable = sent
        self._held_due = now + self._held_delay

    def next_deadline(self) -> float:
        """When :meth:`on_tick` has a log line to write, held replies to retry or memory to
        give back (infinity: nothing pending)."""
        due = self.events.next_deadline()
        if self._held_due < due:
            due = self._held_due
        return due if due < self._trim_due else self._trim_due

    def on_tick(self, now: float) -> None:
        """Log the counts of repeated events, once their interval is over; retry held
        replies when their timer is due."""
        self.events.on_tick(now)
        if now >= self._held_due:
            self.send_held(now)
        if now >= self._trim_due:
            self._trim(now)

    def close(self) -> None:
        if self.dispatcher.clients.holding:
            self.send_held(time.monotonic())  # a last try: the linger below sends what fits
        if self.dispatcher.events:
            self._log_events()
        self.events.close(time.monotonic())
        self.frontend.close()
        self.backend.close()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (musl, macOS)."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM: Final = _malloc_trim()


def _notify_disconnect(sock: zmq.Socket[bytes]) -> bool:
    """Ask ``sock`` (a ROUTER) to tell of peers that disconnect; False if libzmq cannot."""
    try:
        sock.setsockopt(zmq.ROUTER_NOTIFY, zmq.NOTIFY_DISCONNECT)
    except (zmq.ZMQError, AttributeError):
        return False  # libzmq without the draft API (EINVAL), or pyzmq without the constant
    return True


def poll_timeout_ms(seconds: float) -> int:
    """A poll timeout in whole milliseconds, rounded up so the loop never wakes early and spins.

    -1 (wait until something happens) when nothing is due: a remote pool at rest has no timer.
    """
    if seconds == math.inf:
        return -1
    return max(0, math.ceil(seconds * 1000))
