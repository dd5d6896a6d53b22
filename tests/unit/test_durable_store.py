"""The durable store (SQLite, on a temp file) and the TSP frames, without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from zmqserver.client.durable import ResultWait
from zmqserver.durable import tsp
from zmqserver.durable.sqlite import SqliteStore
from zmqserver.durable.store import (
    JobState,
    NewJob,
    StoreError,
    pack_frames,
    retry_delay,
    unpack_frames,
)
from zmqserver.errors import BadRequest, JobPending, Retry, parse_retry


def job(ticket: str, delay: float = 0.0) -> NewJob:
    return NewJob(ticket, b"echo", [b"a", b"", b"c"], tsp.JobOptions(delay=delay, retries=2))


def test_frames_round_trip() -> None:
    frames = [b"", b"x" * 70000, b"\x00\x01"]
    assert unpack_frames(pack_frames(frames)) == frames
    with pytest.raises(ValueError, match="truncated"):
        unpack_frames(pack_frames(frames)[:-1])


def test_options_round_trip_and_rfc9_bodies() -> None:
    options = tsp.JobOptions("ab" * 16, 1.5, 1e9, 5, 0.25)
    body = tsp.encode_request(b"svc", [b"x"], options)
    assert tsp.parse_request(body) == (options, b"svc", [b"x"])
    assert tsp.parse_request([b"svc", b"x", b"y"]) == (tsp.JobOptions(), b"svc", [b"x", b"y"])
    for bad in ([b"\x00retries=-1", b"s", b"x"], [b"\x00nope=1", b"s", b"x"], [b"s"]):
        with pytest.raises(tsp.TspError):
            tsp.parse_request(bad)
    assert options.start_at(0.0) == 1e9


def test_backoff_doubles_and_retry_after_wins() -> None:
    assert [retry_delay(0.5, n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert retry_delay(0.5, 500) == tsp.MAX_BACKOFF
    assert retry_delay(0.5, 3, after=7.0) == 7.0
    assert parse_retry(Retry("later", after=2).reply_text()) == (2.0, "later")
    assert parse_retry("plain words") == (None, "plain words")


def test_store_lifecycle_and_recovery(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    store = SqliteStore(path)
    (first, start), later = store.add([job("a" * 32), job("b" * 32, delay=60)], 100.0)
    assert start == 100.0
    assert later is not None
    assert later[1] == 160.0
    assert store.add([job("a" * 32)], 101.0) == [None]  # a resend
    (running,) = store.start([first])
    assert (running.body, running.attempts) == ([b"a", b"", b"c"], 1)
    store.commit()
    store.close()
    store = SqliteStore(path)  # as after kill -9: the running job is pending again
    recovered = store.recover()
    assert (recovered.ready, recovered.interrupted) == ([first], 1)
    assert recovered.scheduled == [(160.0, later[0])]
    (running,) = store.start([first])
    assert running.attempts == 1  # the interrupted run is not held against it
    store.reschedule(first, 200.0, "retry: x", attempt=True)
    outcome = store.outcome("a" * 32)
    assert outcome is not None
    assert (outcome.state, outcome.error) == (JobState.SCHEDULED, "retry: x")
    store.start([first])
    assert store.finish(first, [b"done"], 300.0)
    outcome = store.outcome("a" * 32)
    assert outcome is not None
    assert (outcome.state, outcome.result) == (JobState.DONE, [b"done"])
    assert store.counts()[JobState.DONE] == 1
    assert store.expire(250.0) == 300.0  # not yet
    assert store.expire(301.0) is None
    assert store.outcome("a" * 32) is None
    store.close()


def test_bad_stores_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x01" * 4096)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        SqliteStore(str(garbage))
    with pytest.raises(StoreError, match="does not exist"):
        SqliteStore(str(tmp_path / "no" / "such.db"))
    held = SqliteStore(str(tmp_path / "held.db"))
    try:
        with pytest.raises(StoreError, match="locked by another"):
            SqliteStore(str(tmp_path / "held.db"))
    finally:
        held.close()


def test_counts_in_memory_follow_every_write(tmp_path: Path) -> None:
    """counts() is kept in memory (asked per status request); it must match count(*) after
    each kind of write, across a restart too."""
    path = str(tmp_path / "jobs.db")
    store = SqliteStore(path)

    def check() -> dict[JobState, int]:
        assert store.counts() == store.count_rows()
        return store.counts()

    tickets = [f"{n:032x}" for n in range(6)]
    placed = store.add([job(t, delay=60 if n == 5 else 0) for n, t in enumerate(tickets)], 100.0)
    ids = [p[0] for p in placed if p is not None]
    assert check()[JobState.PENDING] == 5
    store.add([job(tickets[0])], 100.0)  # a resend counts nothing
    store.start(ids)  # the scheduled one too: woken by the component
    assert check()[JobState.RUNNING] == 6
    store.finish(ids[0], [b"r"], 110.0)
    store.reschedule(ids[1], 200.0, "retry", attempt=True)
    assert store.bury(ids[2], "boom", 120.0)
    assert not store.bury(ids[2], "again", 120.0)  # no longer running
    store.forget(tickets[3])
    store.forget("f" * 32)  # unknown: nothing moves
    assert check() == {
        JobState.PENDING: 0,
        JobState.SCHEDULED: 1,
        JobState.RUNNING: 2,
        JobState.DONE: 1,
        JobState.DEAD: 1,
    }
    store.expire(115.0)  # the done one finished at 110
    assert check()[JobState.DONE] == 0
    store.close()
    store = SqliteStore(path)
    store.recover()
    assert check()[JobState.PENDING] == 2  # the running ones, after a stop
    store.close()


def test_reply_options_frame_asks_for_a_long_poll() -> None:
    ticket = "ab" * 16
    assert tsp.parse_reply([ticket.encode()]) == (0.0, ticket)  # RFC 9's body
    assert tsp.parse_reply(tsp.encode_reply_request(ticket, 2.5)) == (2.5, ticket)
    assert tsp.parse_reply(tsp.encode_reply_request(ticket, 1e6)) == (tsp.MAX_WAIT, ticket)
    assert tsp.encode_reply_request(ticket, 0) == [ticket.encode()]
    for bad in ([b"\x00delay=1", ticket.encode()], [b"\x00wait=-1", ticket.encode()], []):
        with pytest.raises(tsp.TspError):
            tsp.parse_reply(bad)


def test_result_wait_holds_inside_the_client_timeout() -> None:
    """The client's side of a long poll, step by step (no sockets, no sleeping)."""
    ticket = "cd" * 16
    poll = ResultWait(ticket, wait=30.0, timeout=5.0, now=0.0, long_poll=True)
    assert tsp.parse_reply(poll.request(0.0)) == (4.0, ticket)  # inside the 5 s timeout
    assert poll.reply([b"300"], 4.0) == (False, b"", 0.0)  # held to the end: ask again
    assert tsp.parse_reply(poll.request(4.0))[0] == 4.0
    _, _, pause = poll.reply([b"300"], 4.01)  # not held (too many held): back off
    assert pause == pytest.approx(0.02)
    assert tsp.parse_reply(poll.request(29.0))[0] == pytest.approx(1.0)  # what is left
    assert poll.reply([b"200", b"x"], 29.5) == (True, b"x", 0.0)
    with pytest.raises(JobPending):
        poll.reply([b"300"], 30.0)
    # A server that refuses the options frame (older): asked without it from then on.
    old = ResultWait(ticket, wait=3.0, timeout=5.0, now=0.0, long_poll=True)
    old.request(0.0)
    assert old.reply([b"400", b"titanic.reply takes one frame, the ticket"], 0.01)[0] is False
    assert not old.long_poll
    assert old.request(0.01) == [ticket.encode()]
    with pytest.raises(BadRequest):
        old.reply([b"400", b"a ticket is 32 hexadecimal digits"], 0.02)
