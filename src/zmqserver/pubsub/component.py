"""Pub-sub as a component of the broker's master: the three CHP sockets and the cache.

Rule 1: glue and I/O. What to store, number, expire and answer is core.py's; how the server's
own events read is events.py's; this module reads and sends, and logs refusals (throttled).

Sockets, all in the broker's ZeroMQ context (its ZAP handler checks them like the frontend):

* snapshot ROUTER on P: ``ICANHAZ?`` -> KVSYNC... KTHXBAI. No send HWM: a snapshot is bounded
  by the cache's own bounds, and a partial one would be worse than a slow one.
* PUB on P+1: each update, and HUGZ once a second. Sends never block the master: at
  ``pubsub_hwm`` queued updates for a subscriber, libzmq drops that subscriber's updates (the
  subscriber sees the gap in ``prev`` and resyncs; libzmq does not tell the PUB side).
* collector SUB on P+2: KVSET from any PUB (or XPUB) socket. Bound a second time to
  ``pubsub`` in the broker's private 0700 directory, with the backend's rules (our user,
  the local workers' keys), for ``zmqserver.publish`` in the forked workers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import zmq

from .._io import Outbox, batch_receiver, batch_sender
from .._process import Credentials, ipc_path
from ..broker.events import Event
from ..broker.state import Job
from ..config import Config
from ..ha.fsm import State
from ..security import PortPolicy, apply_server, load_key_dir
from ..security.zap import ServerSecurity
from ..supervisor.broker_side import BrokerComponent
from ..supervisor.component import Handle, Host, StartError, WatchItem
from ..supervisor.workers import WorkerProcess
from . import publish
from .core import Bounds, Hashmap, Refused
from .events import Published, ServerEvents
from .frames import PEER_COPY_ID, FrameError, decode_icanhaz, hugz

if TYPE_CHECKING:
    from ..supervisor.ha_side import HaChange, HaComponent
    from .peer import PeerCopy

log = logging.getLogger("zmqserver.pubsub")


class DurableSource(Protocol):
    """What the pub-sub events need of durable jobs (supervisor/durable_side.py)."""

    on_dead: Callable[[str, bytes, str], None] | None

    def counts(self) -> dict[str, int]:
        """Jobs per state."""


class HaSource(Protocol):
    """What the pub-sub events need of a Binary Star server (supervisor/ha_side.py)."""

    listeners: list[Callable[[HaChange], None]]


#: HUGZ, and the job counters, once a second.
HEARTBEAT: Final = 1.0
#: Messages read from one socket in one go (the rest wait for the next call, after the
#: broker's own sockets have had a look).
BATCH: Final = 1000
#: A refused update is logged at once, then at most once per this many seconds, with a count.
REFUSAL_LOG_INTERVAL: Final = 10.0
#: The collector's file in the broker's private directory.
LOCAL_COLLECTOR: Final = "pubsub"
#: The server's own events kept while it is not active (the last of each key), at most.
MAX_HELD: Final = 10_000


def bounds_of(config: Config) -> Bounds:
    return Bounds(
        max_keys=config.pubsub_max_keys,
        max_bytes=config.pubsub_max_bytes,
        max_key_length=config.pubsub_max_key_length,
        max_value_size=config.pubsub_max_value_size,
    )


class _Throttle:
    """One log line per interval for a flood of refusals, naming the last one."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self.interval = interval
        self.until = -math.inf
        self.quiet = 0
        self.total = 0

    def note(self, what: str, now: float) -> None:
        self.total += 1
        if now < self.until:
            self.quiet += 1
            return
        more = f" ({self.quiet} more refused since the last report)" if self.quiet else ""
        log.warning("pub-sub: refused %s%s", what, more)
        self.quiet = 0
        self.until = now + self.interval


class PubSubComponent:
    """The CHP server: snapshot ROUTER (P), PUB (P+1), collector SUB (P+2), in the master."""

    def __init__(self, config: Config, broker: BrokerComponent) -> None:
        """``broker`` opens first: its context holds the ZAP handler these sockets use."""
        assert config.pubsub_port is not None
        self.port = config.pubsub_port
        self.broker = broker
        self.hashmap = Hashmap(bounds_of(config))
        self.events: ServerEvents | None = ServerEvents() if config.pubsub_events else None
        self.job_events = config.pubsub_job_events if config.pubsub_events else "none"
        self.job_events_per_second = config.pubsub_job_events_per_second
        self.hwm = config.pubsub_hwm
        self.host_address = config.host
        self.publishers_keys_dir = config.pubsub_publishers_keys_dir
        self.snapshot: zmq.Socket[bytes] | None = None
        self.publisher: zmq.Socket[bytes] | None = None
        self.collector: zmq.Socket[bytes] | None = None
        self._recv_updates: Callable[[int], list[Any]] | None = None
        self._send_batch: Callable[[Outbox], object] | None = None
        self.refusals = _Throttle()
        self.published = 0
        self._beat_at = math.inf
        self._known: dict[int, WorkerProcess] = {}  # the master's workers at the last look
        self._host: Host | None = None
        self._bound: list[str] = []
        #: Durable jobs' counts per state, when a store is configured (see watch_durable).
        self._durable_counts: Callable[[], Mapping[str, int]] | None = None
        #: In a Binary Star pair (attach_ha): the pair's component, the peer's pub-sub port,
        #: the copy of its map while we are not active, and our own events kept meanwhile.
        self.ha: HaComponent | None = None
        self.peer_endpoint = ""
        self.copy: PeerCopy | None = None
        self._held: dict[bytes, Published] = {}

    def attach_ha(self, ha: HaComponent, peer_endpoint: str) -> None:
        """Be one server of a Binary Star pair (docs/ha.md): while not active, copy the peer's
        map and publish nothing; answer a snapshot request only if the pair's machine says so
        (the guide's clonesrv6: a subscriber that asks is a client that votes)."""
        self.ha = ha
        self.peer_endpoint = peer_endpoint
        ha.state_listeners.append(self._on_ha_state)

    @property
    def passive(self) -> bool:
        """One of a pair, and not the one serving: no updates, no HUGZ, no snapshots."""
        return self.ha is not None and not self.ha.serving

    # -- Component --------------------------------------------------------------------------------

    def open(self, host: Host) -> None:
        self._host = host
        ctx = self.broker.ctx
        security = self.broker.security
        assert ctx is not None, "the broker component opens first"
        timeout = host.config.handshake_timeout
        try:
            self.snapshot = self._bind(ctx, zmq.ROUTER, 0, security)
            self.snapshot.setsockopt(zmq.SNDHWM, 0)
            self.publisher = self._bind(ctx, zmq.PUB, 1, security, hwm=self.hwm)
            self.collector = ctx.socket(zmq.SUB)
            self.collector.setsockopt(zmq.LINGER, 0)
            self.collector.setsockopt(zmq.SUBSCRIBE, b"")
            domain = self._publishers_domain(security)
            if domain is None:
                security.apply(self.collector, "frontend")
            else:
                apply_server(
                    self.collector,
                    keys=security.frontend_keys,
                    zap_domain=domain,
                    handshake_timeout=timeout,
                )
            self._bound.append(self._do_bind(self.collector, 2))
            # The forked workers' way in: the backend's rules, in the private directory.
            security.apply(self.collector, "backend")
            security.local_endpoint()  # makes the directory if the broker has not
            assert security.local_dir is not None
            local = f"ipc://{security.local_dir / LOCAL_COLLECTOR}"
            self.collector.bind(local)
            self._bound.append(local)
        except (zmq.ZMQError, OSError) as exc:
            raise StartError(f"pub-sub: {exc}") from exc
        publish.route = publish.Route(local, self.broker.credentials)
        self._recv_updates = batch_receiver(self.collector)
        self._send_batch = batch_sender((self.publisher,))
        # The collector is read inside the broker's wait (Broker.serve's ``inline``): an update
        # then costs a call, not a turn of the master's loop.
        self.broker.inline[self.collector] = self._collect_inline
        self._beat_at = time.monotonic() + HEARTBEAT
        bridge = self.broker.broker
        if self.events is not None and bridge is not None:
            bridge.events.tap = self._on_event
            self.broker.on_gone = self._on_gone
        dispatcher = self.broker.dispatcher
        if self.job_events != "none" and dispatcher is not None:
            # Sampled by the routing core (compiled): a job past the budget costs no call.
            dispatcher.metrics.jobs = self._on_job
            sample = self.job_events == "sample"
            dispatcher.metrics.jobs_per_second = self.job_events_per_second if sample else 0
        log.info(
            "pub-sub: snapshots on %s, updates on %s, collector on %s",
            *self._bound[:3],
        )
        if self.ha is not None:
            self.ha.link.admit_peer()  # the peer's copy of our map comes through P and P+1
            if not self.ha.serving:
                self._start_copy(time.monotonic())

    def _publishers_domain(self, security: ServerSecurity) -> bytes | None:
        """With ``pubsub_publishers_keys_dir``: a ZAP domain of its own for the collector."""
        if self.publishers_keys_dir is None:
            return None
        keys = load_key_dir(self.publishers_keys_dir, "pubsub_publishers_keys_dir")
        domain = security.frontend_domain + b".publishers"
        front = security.policies[security.frontend_domain]
        security.policies[domain] = PortPolicy(
            "pub-sub collector", curve=True, keys=keys, addresses=front.addresses
        )
        return domain

    def _bind(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        kind: int,
        offset: int,
        security: ServerSecurity,
        hwm: int | None = None,
    ) -> zmq.Socket[bytes]:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if hwm is not None:
            sock.setsockopt(zmq.SNDHWM, hwm)
        security.apply(sock, "frontend")
        try:
            self._bound.append(self._do_bind(sock, offset))
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    def _do_bind(self, sock: zmq.Socket[bytes], offset: int) -> str:
        endpoint = f"tcp://{self.host_address}:{self.port + offset}"
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise OSError(exc.errno, f"cannot bind to {endpoint}: {exc}") from exc
        return str(sock.getsockopt_string(zmq.LAST_ENDPOINT))

    def watch(self) -> list[WatchItem]:
        assert self.snapshot is not None
        assert self.collector is not None
        items: list[WatchItem] = [(self.snapshot, zmq.POLLIN), (self.collector, zmq.POLLIN)]
        if self.copy is not None:
            items += self.copy.watch()
        return items

    def next_deadline(self) -> float:
        if self.copy is not None:  # not active: the peer expires keys, we copy its deletes
            return min(self._beat_at, self.copy.next_deadline())
        if self.passive:
            return self._beat_at
        return min(self._beat_at, self.hashmap.next_deadline())

    def handle(self, ready: Collection[Handle], now: float) -> None:
        if self.copy is not None:
            self.copy.handle(ready, now)
        if self.collector in ready:
            self._collect(now)
        if self.snapshot in ready:
            self._answer(now)
        if not self.passive:
            for frames in self.hashmap.expire(now):
                self._send(frames)
        if self.events is not None:
            self._watch_workers()
        if now >= self._beat_at:
            self._beat_at = now + HEARTBEAT
            self._heartbeat(now)

    def on_stop(self, graceful: bool) -> None:
        pass  # subscribers keep their state; the sockets close with the server

    def on_reload(self) -> None:
        if self.publishers_keys_dir is None:
            return
        security = self.broker.security
        domain = security.frontend_domain + b".publishers"
        try:
            keys = load_key_dir(self.publishers_keys_dir, "pubsub_publishers_keys_dir")
        except Exception as exc:  # a bad directory keeps the keys already loaded
            log.error("HUP: keeping the publishers' keys already loaded: %s", exc)
            return
        security.policies[domain] = dataclasses.replace(security.policies[domain], keys=keys)

    def on_config(self, config: Config) -> None:
        pass  # its options need a restart

    def owned_paths(self) -> list[str]:
        return [path for path in map(ipc_path, self._bound) if path is not None]

    def admit_user(self, creds: Credentials) -> None:
        pass  # the broker's admit_user lets that user's workers through the backend's rules

    def close(self) -> None:
        publish.route = None
        if self.copy is not None:
            self.copy.close()
            self.copy = None
        if self.collector is not None:
            self.broker.inline.pop(self.collector, None)
        for sock in (self.snapshot, self.publisher, self.collector):
            if sock is not None:
                sock.close(linger=0)
        self.snapshot = self.publisher = self.collector = None

    # -- I/O --------------------------------------------------------------------------------------

    def _send(self, frames: list[bytes]) -> None:
        assert self.publisher is not None
        self.published += 1
        # A PUB never blocks: at a subscriber's HWM libzmq drops for that subscriber only.
        self.publisher.send_multipart(frames, zmq.NOBLOCK)

    def _collect(self, now: float) -> None:
        """Take what publishers sent (up to :data:`BATCH` updates, one read) and publish the
        lot with one send call."""
        recv, send, hashmap = self._recv_updates, self._send_batch, self.hashmap
        assert recv is not None
        assert send is not None
        outbox: list[tuple[int, bytes, list[bytes]]] = []
        copy = self.copy
        if copy is not None:  # not active: pending until the peer publishes it (replica.py)
            for frames in recv(BATCH):
                copy.collect(frames, now)
            return
        if self.passive:
            recv(BATCH)  # leaving the pair: the peer takes them (publishers send to both)
            return
        for frames in recv(BATCH):
            try:
                out = hashmap.collect(frames, now)
            except Refused as exc:
                self.refusals.note(str(exc), now)
                continue
            if out is not None:
                outbox.append((0, out[0], out[1:]))
        if outbox:
            self.published += len(outbox)
            send(outbox)  # a PUB drops for a subscriber at its HWM: no failures to handle

    def _collect_inline(self, now: float) -> float:
        """:meth:`_collect`, from inside the broker's wait; the next deadline (a ttl)."""
        self._collect(now)
        return self.next_deadline()

    def _answer(self, now: float) -> None:
        sock = self.snapshot
        assert sock is not None
        for _ in range(BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                subtree = decode_icanhaz(frames[1:])
            except FrameError as exc:
                self.refusals.note(f"snapshot request: {exc}", now)
                continue
            if self.passive:
                assert self.ha is not None
                if frames[0].startswith(PEER_COPY_ID):
                    continue  # the peer's copy, while neither is active: it asks again
                if not self.ha.vote(now):
                    continue  # unanswered: the subscriber moves to the other server
            identity = frames[0]
            for message in self.hashmap.snapshot(subtree, now):
                try:
                    sock.send_multipart([identity, *message], zmq.NOBLOCK)
                except zmq.ZMQError:
                    break  # the client left

    def watch_durable(self, durable: DurableSource) -> None:
        """Publish the durable jobs' counts, and each dead-lettered job (events on only)."""
        if self.events is None:
            return
        self._durable_counts = durable.counts
        durable.on_dead = self._on_dead

    def watch_ha(self, ha: HaSource) -> None:
        """Publish the Binary Star pair's state changes and errors (events on only)."""
        if self.events is not None:
            ha.listeners.append(self._on_ha)

    def _on_ha(self, change: HaChange) -> None:
        assert self.events is not None
        self._publish(self.events.ha_changed(change), time.monotonic())

    def _on_dead(self, ticket: str, service: bytes, error: str) -> None:
        assert self.events is not None
        self._publish(self.events.dead_lettered(ticket, service, error), time.monotonic())

    def _heartbeat(self, now: float) -> None:
        """HUGZ, every second (not only when idle: a subscriber of a quiet subtree hears
        nothing of the busy others, and must still know the server is there); the job
        counters that moved. None while not active: its subscribers hear silence and move to
        the active server."""
        if not self.passive:
            self._send(hugz(self.hashmap.sequence))
        if self.events is not None:
            dispatcher = self.broker.dispatcher
            if dispatcher is not None:
                for item in self.events.job_counts(dispatcher.stats, now):
                    self._publish(item, now)
            if self._durable_counts is not None:
                for item in self.events.durable_counts(self._durable_counts()):
                    self._publish(item, now)

    # -- the server's events ----------------------------------------------------------------------

    def _publish(self, item: Published, now: float) -> None:
        if self.passive:
            # Our own events are ours, not the peer's map's: kept, published on takeover.
            if len(self._held) < MAX_HELD or item[0] in self._held:
                self._held[item[0]] = item
            return
        key, value, ttl = item
        if self._held:
            # Newer than what was held for the key (the takeover's own event, published
            # before the held ones are): the held one must not overwrite it.
            self._held.pop(key, None)
        props = {b"ttl": b"%g" % ttl} if ttl is not None else None
        try:
            out = self.hashmap.set(key, value, props, now)
        except Refused as exc:
            self.refusals.note(str(exc), now)
            return
        if out is not None:
            self._send(out)

    def _on_event(self, event: Event, now: float) -> None:
        assert self.events is not None
        item = self.events.on_event(event)
        if item is not None:
            self._publish(item, now)

    def _on_job(self, service: bytes, job: Job, status: int, wait: float, run: float) -> None:
        assert self.events is not None
        self._publish(self.events.finished(service, job, status, wait, run), time.monotonic())

    def _on_gone(self, identity: bytes, reason: str) -> None:
        """A worker the routing core forgot: a remote one's end (the master's own workers are
        reported by :meth:`_watch_workers`, with how they ended)."""
        assert self.events is not None
        if any(proc.identity == identity for proc in self._known.values()):
            return
        self._publish(self.events.exited(identity, reason), time.monotonic())

    def _watch_workers(self) -> None:
        """Workers the master started or reaped since the last turn (a key compare: the
        master's loop turns only when something happened, never per job)."""
        host, events = self._host, self.events
        assert host is not None
        assert events is not None
        workers = host.workers
        known = self._known
        if workers.keys() == known.keys():
            return
        now = time.monotonic()
        for pid in known.keys() - workers.keys():
            self._publish(events.ended(known[pid]), now)
        for pid in workers.keys() - known.keys():
            proc = workers[pid]
            self._publish(events.started(proc.identity, pid, proc.pool.name), now)
        self._known = dict(workers)

    # -- a Binary Star pair -----------------------------------------------------------------------

    def _start_copy(self, now: float) -> None:
        from .peer import PeerCopy

        ctx = self.broker.ctx
        assert ctx is not None
        assert self.ha is not None
        self.copy = PeerCopy(
            ctx,
            self.peer_endpoint,
            self.hashmap,
            now,
            retry=self.ha.heartbeat,
            credentials=self.ha.link.credentials(),
        )
        log.info("pub-sub: not active: copying the peer's map from %s", self.peer_endpoint)

    def _on_ha_state(self, state: State, now: float) -> None:
        """The pair's state changed: take over (publish what the peer never did), or copy."""
        if state is not State.ACTIVE:
            if self.copy is None and self.snapshot is not None:
                self._start_copy(now)
            return
        copy, self.copy = self.copy, None
        if copy is not None:
            replica = copy.replica
            owed = copy.takeover(now)
            for frames in owed:
                self._send(frames)
            log.warning(
                "pub-sub: active: %d keys at sequence %d%s, %d pending updates published",
                len(self.hashmap),
                self.hashmap.sequence,
                "" if replica.synced else " (never synced with the peer)",
                len(owed),
            )
        held, self._held = self._held, {}
        for item in held.values():
            self._publish(item, now)
