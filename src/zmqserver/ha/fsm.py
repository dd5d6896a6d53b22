"""Binary Star's finite-state machine: which server of a pair serves clients (sans-IO).

Rule 1: no sockets, no clocks. Time is passed in (``now``, monotonic seconds); the caller
(supervisor/ha_side.py) feeds in what the peer said and when a client request arrived, and
applies what comes out: a new state, and whether the request that arrived may be served.

The machine is the ZeroMQ guide's (chapter 4, "Binary Star"): two servers, a *primary* and a
*backup*, each publish their state to the other once a heartbeat. The primary is active at start
once it has heard from the backup; the backup takes over only when the primary has been silent
for two heartbeats **and** a client request arrives. The second condition is the guard against
split brain: if only the link between the two servers broke, clients still reach the primary and
never knock on the backup, so the backup stays passive.

Two cells differ from the guide, which aborts the process in both: two active servers (the link
healed after a split brain) and two passive ones. A job server that exits takes its running
jobs and its workers with it, so the pair settles instead, the same way on both sides without
another message: the primary takes (or keeps) the active role, the backup steps down. Both
report it as an error (:attr:`Outcome.error`), which the server logs and counts.

docs/ha.md has the whole table; tests/unit/test_ha_fsm.py walks every cell of it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = [
    "HEARTBEATS_TO_EXPIRY",
    "BinaryStar",
    "Event",
    "Outcome",
    "Role",
    "State",
    "peer_event",
    "table",
]

#: The peer is taken for dead after this many heartbeats without a word from it.
HEARTBEATS_TO_EXPIRY: Final = 2


class Role(enum.Enum):
    """What a server was configured as (``ha_role``); it never changes while it runs."""

    PRIMARY = "primary"
    BACKUP = "backup"


class State(enum.IntEnum):
    """A server's state, as it publishes it to its peer (the guide's numbering)."""

    PRIMARY = 1  # primary, waiting to hear from the peer
    BACKUP = 2  # backup, waiting to hear from the peer
    ACTIVE = 3  # serving clients
    PASSIVE = 4  # not serving; takes over if the peer dies and a client asks


class Event(enum.IntEnum):
    """What can happen to a server: its peer said its state, or a client sent a request."""

    PEER_PRIMARY = 1
    PEER_BACKUP = 2
    PEER_ACTIVE = 3
    PEER_PASSIVE = 4
    CLIENT_REQUEST = 5


#: Both servers claim one role: a mistake in ha_role, or ha_peer pointing back at ourselves.
_SAME_ROLE = (
    "the peer is a %s too: check ha_role on both servers, and that ha_peer is the other "
    "server's ha_bind"
)


def peer_event(state: State) -> Event:
    """The event of hearing that the peer is in ``state`` (the same number, as in the guide)."""
    return Event(int(state))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one event did: the state before and after, whether a client request may be served,
    and what to tell the operator (``error``: a condition the pair should never be in)."""

    before: State
    after: State
    #: For CLIENT_REQUEST: serve it (True) or drop it unanswered (False). False for peer events.
    serve: bool = False
    #: Why the state changed, or what is wrong (for the log); "" if nothing worth a line.
    note: str = ""
    #: The pair is in a state it should never be in (two actives, two passives, two primaries).
    error: bool = False

    @property
    def changed(self) -> bool:
        return self.after is not self.before


class BinaryStar:
    """One server's side of the pair: its state, and when it last heard from its peer.

    ``heartbeat`` (seconds) is how often each server publishes its state. The peer counts as
    silent :data:`HEARTBEATS_TO_EXPIRY` heartbeats after it was last heard from, and after start
    until it has been heard from once (so a primary started alone serves once that time has
    passed and a client asks, as in the guide's ``bstarsrv``).
    """

    def __init__(self, role: Role, heartbeat: float, now: float) -> None:
        if heartbeat <= 0:
            raise ValueError(f"the heartbeat must be positive, not {heartbeat!r}")
        self.role = role
        self.heartbeat = heartbeat
        self.state = State.PRIMARY if role is Role.PRIMARY else State.BACKUP
        #: When the peer will be taken for dead if it says nothing more.
        self.peer_expiry = now + HEARTBEATS_TO_EXPIRY * heartbeat
        #: The peer's last state (None: not heard from yet), and when it was heard.
        self.peer_state: State | None = None
        self.peer_seen: float | None = None
        #: When our state is next due to be published.
        self.send_at = now

    # -- time -------------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When the caller next has to publish our state (a peer that goes silent changes
        nothing by itself: only a client request acts on it)."""
        return self.send_at

    def due(self, now: float) -> bool:
        """Whether our state is due to be published at ``now``; if so, the next one is set."""
        if now < self.send_at:
            return False
        # From now, not from send_at: a loop that woke late does not send a burst to catch up.
        self.send_at = now + self.heartbeat
        return True

    def peer_alive(self, now: float) -> bool:
        """Whether the peer has been heard from within the last two heartbeats."""
        return now < self.peer_expiry

    @property
    def active(self) -> bool:
        return self.state is State.ACTIVE

    # -- events -----------------------------------------------------------------------------------

    def on_peer(self, peer: State, now: float) -> Outcome:
        """The peer published ``peer``: it is alive; act on its state."""
        self.peer_state = peer
        self.peer_seen = now
        self.peer_expiry = now + HEARTBEATS_TO_EXPIRY * self.heartbeat
        return self.execute(peer_event(peer), now)

    def on_client_request(self, now: float) -> Outcome:
        """A client request arrived while we are not active: may we serve it?"""
        return self.execute(Event.CLIENT_REQUEST, now)

    def execute(self, event: Event, now: float) -> Outcome:
        """Apply ``event`` at ``now`` (the transition table of docs/ha.md)."""
        before = self.state
        after, serve, note, error = _transition(
            before, event, self.role, expired=now >= self.peer_expiry
        )
        self.state = after
        if after is not before:
            self.send_at = now  # tell the peer at once, not a heartbeat later
        return Outcome(before, after, serve, note, error)


def _transition(
    state: State, event: Event, role: Role, *, expired: bool
) -> tuple[State, bool, str, bool]:
    """One cell of the table: (next state, serve the request, note, error)."""
    request = event is Event.CLIENT_REQUEST
    if state is State.ACTIVE:
        # The only way out of ACTIVE is death, or a split brain found (below).
        if event is Event.PEER_ACTIVE:
            if role is Role.BACKUP:
                return (
                    State.PASSIVE,
                    False,
                    "both servers active (split brain): backup steps down",
                    True,
                )
            return (
                State.ACTIVE,
                False,
                "both servers active (split brain): primary stays active",
                True,
            )
        return (State.ACTIVE, request, "", False)
    if state is State.PRIMARY:
        if event is Event.PEER_BACKUP:
            return (State.ACTIVE, False, "connected to backup (passive), ready active", False)
        if event is Event.PEER_ACTIVE:
            return (State.PASSIVE, False, "connected to backup (active), ready passive", False)
        if event is Event.PEER_PRIMARY:
            return (State.PRIMARY, False, _SAME_ROLE % "primary", True)
        if request and expired:
            # Waited long enough to believe the backup is not active (a failover ago).
            return (State.ACTIVE, True, "request from a client, ready active", False)
        return (State.PRIMARY, False, "", False)
    if state is State.BACKUP:
        if event is Event.PEER_ACTIVE:
            return (State.PASSIVE, False, "connected to primary (active), ready passive", False)
        if event is Event.PEER_BACKUP:
            return (State.BACKUP, False, _SAME_ROLE % "backup", True)
        return (State.BACKUP, False, "", False)  # a backup never serves before a primary
    # PASSIVE
    if event is Event.PEER_PRIMARY:
        return (State.ACTIVE, False, "the peer restarted (it says primary), ready active", False)
    if event is Event.PEER_BACKUP:
        return (State.ACTIVE, False, "the peer restarted (it says backup), ready active", False)
    if event is Event.PEER_PASSIVE:
        if role is Role.PRIMARY:
            return (State.ACTIVE, False, "both servers passive: primary takes over", True)
        return (State.PASSIVE, False, "both servers passive: waiting for the primary", True)
    if request and expired:
        return (State.ACTIVE, True, "failover: peer silent and a client asked, ready active", False)
    return (State.PASSIVE, False, "", False)


def table(role: Role) -> dict[tuple[State, Event, bool], tuple[State, bool]]:
    """Every cell of the machine for a server of ``role`` (the peer-silent flag matters only
    to CLIENT_REQUEST; both values are listed for every event so that the table is total)."""
    return {
        (state, event, expired): _transition(state, event, role, expired=expired)[:2]
        for state in State
        for event in Event
        for expired in (False, True)
    }
