"""One server of a Binary Star pair, as a component of the broker's master (docs/ha.md).

Rule 1: glue. Which server serves is decided by :class:`~zmqserver.ha.fsm.BinaryStar`
(sans-IO); this module owns the two sockets of the peer link and applies the decisions to the
broker through one hook, :attr:`Dispatcher.standby <zmqserver.broker.Dispatcher.standby>`.

The peer link: a PUB bound on ``ha_bind`` publishes our state once a heartbeat (and at once
when it changes); a SUB connected to ``ha_peer`` hears the peer's. No polling: the SUB is one
of the master's watched sockets, and the next heartbeat is :meth:`next_deadline`.

While this server is not active, the dispatcher keeps each client request unread in
``standby`` and the broker's wait returns; :meth:`handle` then asks the machine about each one
(the guide's CLIENT_REQUEST event). If the peer has been silent for two heartbeats, the server
becomes active and the requests are handed to the dispatcher as if they had just arrived;
otherwise they are dropped *unanswered*. Unanswered, not refused with an error status, because
silence is what every client already treats as "try elsewhere": a Lazy Pirate client (ours, or
a plain REQ client written after the guide's bstarcli) times out and moves to the other
endpoint, where an error reply would be taken as the answer by a client that knows nothing of
the pair. The cost is one client timeout per failover, which is also what a dead server costs.

The worker pool is the master's and is forked whatever the state: a passive server's workers
connect to its own broker and register, so it is warm when it becomes active.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zmq

from ..config import Config
from ..ha.fsm import BinaryStar, Outcome, Role, State
from ..ha.wire import decode_state, encode_state
from .component import Handle, Host, StartError, WatchItem
from .ha_link import PeerLinkSecurity

if TYPE_CHECKING:
    from .._process import Credentials
    from .broker_side import BrokerComponent

log = logging.getLogger("zmqserver.ha")

#: Seconds between two log lines of the same pair error (each is still counted).
ERROR_LOG_INTERVAL = 60.0
#: Peer messages read in one turn at most (the peer sends one a heartbeat; more is a flood).
_READ_BUDGET = 64


@dataclass(frozen=True, slots=True)
class HaChange:
    """A state change of this server of the pair, or a pair error (``error``; the state may
    be unchanged), as the server's events tell it (pubsub/events.py)."""

    role: str
    state: str
    before: str
    reason: str
    error: bool
    peer: str | None
    takeovers: int


class HaComponent:
    """The peer link of a Binary Star pair, and the switch between serving and not."""

    def __init__(self, config: Config, broker: BrokerComponent) -> None:
        assert config.ha_role is not None
        assert config.ha_bind
        assert config.ha_peer
        self.role = Role(config.ha_role)
        self.bind = config.ha_bind
        self.peer = config.ha_peer
        self.heartbeat = float(config.ha_heartbeat)
        self.broker = broker
        #: CURVE, ZAP and allow/deny on the two sockets below (ha_link.py); reads ha_peer_key.
        self.link = PeerLinkSecurity(config, broker.security)
        self.star: BinaryStar | None = None
        self.pub: zmq.Socket[bytes] | None = None
        self.sub: zmq.Socket[bytes] | None = None
        #: Since the start: requests dropped unanswered while not active; times we took over;
        #: conditions the pair should never be in (split brain, two passives, two primaries).
        self.dropped = 0
        self.takeovers = 0
        self.errors = 0
        self._said: dict[str, tuple[float, int]] = {}  # pair error -> (last logged, since)
        #: State changes since the start (the metrics' transitions counter).
        self.transitions = 0
        #: Told of each state change and pair error (pub-sub's ``$zmqserver/ha`` event).
        self.listeners: list[Callable[[HaChange], None]] = []
        #: When the state last changed (monotonic), for the status document.
        self.since = 0.0
        #: The server is stopping: out of the pair, requests dropped (:meth:`on_stop`).
        self.stopping = False
        #: Called with (the new state, now) at each change, after the broker was switched:
        #: pub-sub takes over (or starts copying its peer) there (pubsub/component.py).
        self.state_listeners: list[Callable[[State, float], None]] = []

    @property
    def serving(self) -> bool:
        """Whether this server answers clients now (active, and not leaving the pair)."""
        return self.star is not None and self.star.active and not self.stopping

    def vote(self, now: float) -> bool:
        """A client that is not a job's (a pub-sub snapshot request, as in the guide's
        clonesrv6) asked while we are not active: the machine's CLIENT_REQUEST event. True:
        serve it (we are active now, a failover if the peer was silent)."""
        star, dispatcher = self.star, self.broker.dispatcher
        assert star is not None
        if self.serving:
            return True
        if self.stopping:
            self.dropped += 1
            return False
        if dispatcher is not None and dispatcher.standby:
            self._decide(dispatcher.standby, now)  # the same decision serves the jobs kept
        else:
            self._apply(star.on_client_request(now), now)
        if not star.active:
            self.dropped += 1
        return star.active

    # -- Component --------------------------------------------------------------------------------

    def open(self, host: Host) -> None:
        ctx = self.broker.ctx
        dispatcher = self.broker.dispatcher
        assert ctx is not None
        assert dispatcher is not None
        now = time.monotonic()
        self.star = BinaryStar(self.role, self.heartbeat, now)
        self.since = now
        dispatcher.standby = []  # not active until the machine says so
        # On TERM, jobs still queued are dropped unanswered: a shutting_down reply would be
        # taken for the answer, silence sends their clients to the peer (the jobs never ran).
        self.broker.leaving_pair = True
        pub = self.pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, 10)  # a state older than the next one is worth nothing
        self.link.secure_pub(pub)
        try:
            pub.bind(self.bind)
        except zmq.ZMQError as exc:
            raise StartError(f"cannot bind ha_bind to {self.bind}: {exc}") from exc
        sub = self.sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RECONNECT_IVL_MAX, max(100, int(self.heartbeat * 1000)))
        self.link.secure_sub(sub)
        try:
            sub.connect(self.peer)
        except zmq.ZMQError as exc:
            raise StartError(f"cannot connect ha_peer to {self.peer}: {exc}") from exc
        log.info(
            "zmqserver %d: %s of a Binary Star pair, state on %s, peer %s (heartbeat %gs%s)",
            host.pid,
            self.role.value,
            self.bind,
            self.peer,
            self.heartbeat,
            ", CURVE" if self.link.curve else "",
        )

    def watch(self) -> list[WatchItem]:
        return [] if self.sub is None else [(self.sub, zmq.POLLIN), *self.link.watch()]

    def next_deadline(self) -> float:
        assert self.star is not None
        return math.inf if self.stopping else self.star.next_deadline()

    def handle(self, ready: Collection[Handle], now: float) -> None:
        star = self.star
        assert star is not None
        if self.sub is not None and self.sub in ready:
            self._read_peer(now)
        self.link.handle(ready, now)
        dispatcher = self.broker.dispatcher
        assert dispatcher is not None
        if self.stopping:
            if dispatcher.standby:
                self.dropped += len(dispatcher.standby)
                dispatcher.standby.clear()
            return
        if dispatcher.standby:
            self._decide(dispatcher.standby, now)
        if star.due(now):
            self._publish()

    def on_stop(self, graceful: bool) -> None:
        """Leave the pair: answer no new request (a stopping broker would refuse them with
        shutting_down, which a client takes as the answer; silence sends it to the peer) and
        fall silent, so that the peer takes over two heartbeats from now, while our running
        jobs finish."""
        self.stopping = True
        dispatcher = self.broker.dispatcher
        if dispatcher is not None:
            dispatcher.standby = []
        self.close()

    def on_reload(self) -> None:
        pass

    def on_config(self, config: Config) -> None:
        pass  # every ha_* option needs a restart

    def owned_paths(self) -> list[str]:
        return []

    def admit_user(self, creds: Credentials) -> None:
        pass

    def close(self) -> None:
        self.link.close()
        for sock in (self.pub, self.sub):
            if sock is not None:
                sock.close(linger=0)
        self.pub = self.sub = None

    # -- what the status document shows -----------------------------------------------------------

    def pair_status(self, now: float) -> dict[str, object]:
        """The pair as ``zmqserver status`` shows it."""
        star = self.star
        assert star is not None
        peer = star.peer_state
        return {
            "role": self.role.value,
            "state": star.state.name.lower(),
            "since": round(now - self.since, 3),
            "peer": None if peer is None else peer.name.lower(),
            "peer_alive": star.peer_alive(now),
            "peer_heard": None if star.peer_seen is None else round(now - star.peer_seen, 3),
            "transitions": self.transitions,
            "dropped": self.dropped,
            "takeovers": self.takeovers,
            "errors": self.errors,
        }

    # -- helpers ----------------------------------------------------------------------------------

    def _read_peer(self, now: float) -> None:
        sub, star = self.sub, self.star
        assert sub is not None
        assert star is not None
        for _ in range(_READ_BUDGET):
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            peer = decode_state(frames)
            if peer is None:
                log.warning("ignoring a message on the peer link that is not a state message")
                continue
            self._apply(star.on_peer(peer, now), now)

    def _decide(self, standby: list[tuple[bytes, list[bytes], Any, Any]], now: float) -> None:
        """Serve the requests kept while not active, or drop them (the module docstring)."""
        star, dispatcher, broker = self.star, self.broker.dispatcher, self.broker.broker
        assert star is not None
        assert dispatcher is not None
        assert broker is not None
        outcome = star.on_client_request(now)
        self._apply(outcome, now)
        if not outcome.serve:
            self.dropped += len(standby)
            standby.clear()
            return
        for client, frames, key, peer in standby:
            dispatcher.on_client(client, frames, now, key, peer)
        broker.flush()

    def _apply(self, outcome: Outcome, now: float) -> None:
        """Log what the machine did, switch the broker between serving and not, tell the peer."""
        if outcome.error:
            self.errors += 1
            # Once a minute per cause: a misconfigured pair repeats it at every heartbeat.
            said, quiet = self._said.get(outcome.note, (-math.inf, 0))
            if now - said >= ERROR_LOG_INTERVAL:
                more = f"; {quiet} more since the last report" if quiet else ""
                log.error("Binary Star: %s (we are %s%s)", outcome.note, self.role.value, more)
                self._said[outcome.note] = (now, 0)
            else:
                self._said[outcome.note] = (said, quiet + 1)
        if outcome.changed:
            self.transitions += 1
            if outcome.before is State.PASSIVE and outcome.after is State.ACTIVE:
                self.takeovers += 1
        if (outcome.changed or outcome.error) and self.listeners:
            change = self._change(outcome)
            for listener in self.listeners:
                listener(change)
        if not outcome.changed:
            return
        if not outcome.error:
            log.warning(
                "Binary Star: %s -> %s: %s",
                outcome.before.name.lower(),
                outcome.after.name.lower(),
                outcome.note,
            )
        self.since = now
        dispatcher = self.broker.dispatcher
        assert dispatcher is not None
        if outcome.after is State.ACTIVE:
            if dispatcher.standby is not None and not outcome.serve:
                # Requests that came with no decision yet (a peer message decided): serve them.
                kept, dispatcher.standby = dispatcher.standby, None
                for client, frames, key, peer in kept:
                    dispatcher.on_client(client, frames, now, key, peer)
                assert self.broker.broker is not None
                self.broker.broker.flush()
            dispatcher.standby = None
        elif dispatcher.standby is None:
            dispatcher.standby = []  # stepped down: new requests are kept for a decision
        for on_state in self.state_listeners:
            on_state(outcome.after, now)
        self._publish()

    def _change(self, outcome: Outcome) -> HaChange:
        star = self.star
        assert star is not None
        peer = star.peer_state
        return HaChange(
            role=self.role.value,
            state=outcome.after.name.lower(),
            before=outcome.before.name.lower(),
            reason=outcome.note,
            error=outcome.error,
            peer=None if peer is None else peer.name.lower(),
            takeovers=self.takeovers,
        )

    def _publish(self) -> None:
        if self.pub is not None and self.star is not None:
            # A PUB never blocks: with no peer yet, or a slow one, the message is dropped, and
            # the next heartbeat says it again.
            self.pub.send_multipart(encode_state(self.star.state), zmq.NOBLOCK)
