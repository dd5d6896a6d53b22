"""Binary Star's state machine, cell by cell, without sockets (src/zmqserver/ha/fsm.py).

EXPECTED is the table of docs/ha.md written out: for each role, state and event (and, for a
client request, whether the peer has been silent for two heartbeats), the next state and
whether the request is served. Every cell is checked twice: through the pure table and through
a live :class:`BinaryStar` brought into that state.
"""

from __future__ import annotations

import pytest

from zmqserver.ha import fsm
from zmqserver.ha.fsm import BinaryStar, Event, Role, State
from zmqserver.ha.wire import decode_state, encode_state

P, B, A, S = State.PRIMARY, State.BACKUP, State.ACTIVE, State.PASSIVE
PP, PB, PA, PS, CR = (
    Event.PEER_PRIMARY,
    Event.PEER_BACKUP,
    Event.PEER_ACTIVE,
    Event.PEER_PASSIVE,
    Event.CLIENT_REQUEST,
)

#: (role, state, event) -> next state, for peer events (the silence flag does not matter).
PEER_CELLS = {
    # A primary waiting for its peer.
    (Role.PRIMARY, P, PP): P,  # misconfigured pair: logged as an error
    (Role.PRIMARY, P, PB): A,
    (Role.PRIMARY, P, PA): S,
    (Role.PRIMARY, P, PS): P,
    # A backup waiting for its peer.
    (Role.BACKUP, B, PP): B,
    (Role.BACKUP, B, PB): B,  # misconfigured pair
    (Role.BACKUP, B, PA): S,
    (Role.BACKUP, B, PS): B,
    # Active: only a split brain moves it; the backup steps down.
    (Role.PRIMARY, A, PP): A,
    (Role.PRIMARY, A, PB): A,
    (Role.PRIMARY, A, PA): A,
    (Role.PRIMARY, A, PS): A,
    (Role.BACKUP, A, PP): A,
    (Role.BACKUP, A, PB): A,
    (Role.BACKUP, A, PA): S,
    (Role.BACKUP, A, PS): A,
    # Passive: the peer restarting makes us active; two passives: the primary takes over.
    (Role.PRIMARY, S, PP): A,
    (Role.PRIMARY, S, PB): A,
    (Role.PRIMARY, S, PA): S,
    (Role.PRIMARY, S, PS): A,
    (Role.BACKUP, S, PP): A,
    (Role.BACKUP, S, PB): A,
    (Role.BACKUP, S, PA): S,
    (Role.BACKUP, S, PS): S,
}

#: (state, peer silent) -> (next state, served), for a client request (either role).
REQUEST_CELLS = {
    (P, False): (P, False),  # maybe a failback: the backup may be active
    (P, True): (A, True),
    (B, False): (B, False),  # a backup never serves before it has seen a primary
    (B, True): (B, False),
    (A, False): (A, True),
    (A, True): (A, True),
    (S, False): (S, False),  # the split-brain guard: the peer is alive
    (S, True): (A, True),  # failover
}

#: The cells that report an error (a pair that should never be so).
ERRORS = {
    (Role.PRIMARY, P, PP),
    (Role.BACKUP, B, PB),
    (Role.PRIMARY, A, PA),
    (Role.BACKUP, A, PA),
    (Role.PRIMARY, S, PS),
    (Role.BACKUP, S, PS),
}

HB = 1.0


def in_state(role: Role, state: State, now: float = 0.0) -> BinaryStar:
    """A machine of ``role`` in ``state``, set there by the field (every state is reachable;
    test_reachable shows how), having heard from its peer at ``now``."""
    star = BinaryStar(role, HB, now)
    star.state = state
    return star


def test_the_tables_cover_every_cell() -> None:
    for role in Role:
        starts = (P, A, S) if role is Role.PRIMARY else (B, A, S)
        for state in starts:
            for event in (PP, PB, PA, PS):
                assert (role, state, event) in PEER_CELLS
    assert {state for state, _ in REQUEST_CELLS} == set(State)


@pytest.mark.parametrize(("cell", "after"), sorted(PEER_CELLS.items(), key=str))
def test_peer_event(cell: tuple[Role, State, Event], after: State) -> None:
    role, state, event = cell
    for expired in (False, True):
        assert fsm.table(role)[state, event, expired] == (after, False)
    star = in_state(role, state)
    outcome = star.on_peer(State(int(event)), now=5.0)
    assert (outcome.before, outcome.after, star.state) == (state, after, after)
    assert outcome.serve is False
    assert outcome.error is (cell in ERRORS)
    assert star.peer_state is State(int(event))
    assert star.peer_alive(5.0 + 2 * HB - 0.001)  # heard from: alive two heartbeats more
    assert not star.peer_alive(5.0 + 2 * HB)


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(("cell", "result"), sorted(REQUEST_CELLS.items(), key=str))
def test_client_request(role: Role, cell: tuple[State, bool], result: tuple[State, bool]) -> None:
    state, expired = cell
    assert fsm.table(role)[state, CR, expired] == result
    star = in_state(role, state, now=0.0)
    now = 2 * HB if expired else 2 * HB - 0.001
    before = star.state
    outcome = star.on_client_request(now)
    assert (outcome.before, outcome.after, outcome.serve) == (before, *result)
    assert outcome.error is False


def test_reachable() -> None:
    """The usual life of a pair, each side fed what the other publishes."""
    primary, backup = BinaryStar(Role.PRIMARY, HB, 0.0), BinaryStar(Role.BACKUP, HB, 0.0)
    assert (primary.state, backup.state) == (P, B)
    backup.on_peer(primary.state, 0.1)  # backup hears PRIMARY: still waiting
    primary.on_peer(backup.state, 0.2)
    assert primary.state is A
    backup.on_peer(primary.state, 0.3)
    assert backup.state is S
    # The primary dies (kill -9): silence. A request before two heartbeats is dropped...
    assert not backup.on_client_request(2.2).serve
    # ...one after is served, and the backup is active.
    outcome = backup.on_client_request(2.3)
    assert outcome.serve
    assert backup.state is A
    assert outcome.changed
    # The primary restarts: it waits, hears ACTIVE, goes passive (no flapping).
    primary = BinaryStar(Role.PRIMARY, HB, 10.0)
    assert not primary.on_client_request(10.5).serve  # the backup may be active: wait
    backup.on_peer(primary.state, 10.6)
    assert backup.state is A
    primary.on_peer(backup.state, 10.7)
    assert primary.state is S
    backup.on_peer(primary.state, 10.8)
    assert backup.state is A
    assert not primary.on_client_request(11.0).serve


def test_a_primary_alone_serves_after_two_heartbeats_and_a_request() -> None:
    star = BinaryStar(Role.PRIMARY, HB, 100.0)
    assert not star.on_client_request(100.0 + 2 * HB - 0.001).serve
    assert star.state is P
    assert star.on_client_request(100.0 + 2 * HB).serve
    assert star.state is A


def test_a_backup_alone_never_serves() -> None:
    star = BinaryStar(Role.BACKUP, HB, 0.0)
    for now in (0.0, 10.0, 1000.0):
        assert not star.on_client_request(now).serve
    assert star.state is B


def test_split_brain_guard_peer_heartbeats_keep_the_backup_passive() -> None:
    """Requests keep coming to the backup (clients that timed out on a slow job) while the
    primary keeps publishing: the backup never takes over."""
    star = in_state(Role.BACKUP, S)
    now = 0.0
    for _ in range(100):
        now += HB
        star.on_peer(A, now)
        assert not star.on_client_request(now + 1.9 * HB).serve
    assert star.state is S


def test_silence_alone_changes_nothing() -> None:
    star = in_state(Role.BACKUP, S)
    star.on_peer(A, 0.0)
    for now in (5.0, 50.0):
        assert star.due(now)
    assert star.state is S  # no request: no takeover


def test_heartbeat_schedule() -> None:
    star = BinaryStar(Role.PRIMARY, 0.5, 10.0)
    assert star.next_deadline() == 10.0
    assert star.due(10.0)
    assert star.next_deadline() == 10.5
    assert not star.due(10.4)
    assert star.due(12.0)
    assert star.next_deadline() == 12.5
    star.on_peer(B, 12.1)  # a change is published at once
    assert star.next_deadline() == 12.1


def test_a_change_is_published_at_once_and_no_change_is_not() -> None:
    star = BinaryStar(Role.BACKUP, HB, 0.0)
    star.due(0.0)
    star.on_peer(P, 0.2)
    assert star.next_deadline() == 1.0
    star.on_peer(A, 0.3)
    assert star.next_deadline() == 0.3


def test_bad_heartbeat() -> None:
    with pytest.raises(ValueError, match="positive"):
        BinaryStar(Role.PRIMARY, 0, 0.0)


@pytest.mark.parametrize("state", list(State))
def test_wire_round_trip(state: State) -> None:
    assert decode_state(encode_state(state)) is state


@pytest.mark.parametrize(
    "frames", [[], [b"ZQHA1"], [b"ZQHA1", b"ACTIVE", b""], [b"X", b"ACTIVE"], [b"ZQHA1", b"\xff"]]
)
def test_wire_garbage(frames: list[bytes]) -> None:
    assert decode_state(frames) is None
