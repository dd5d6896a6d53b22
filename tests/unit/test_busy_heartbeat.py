"""BusyHeartbeat: heartbeats from a thread while the app runs, with no wake-up per job.

The socket is a fake that records what the thread sends and when, and fails the test if it is
touched while it is not lent (the invariant that makes lending a ZeroMQ socket safe). The "jobs"
here are the test's own sleeps: a long job is exactly a main thread that does not come back.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from typing import Any, cast

import pytest
import zmq

from zmqserver.worker import BusyHeartbeat

HEARTBEAT = [b"MDPW02", b"\x05"]


class FakeSocket:
    """Records sends; ``lent`` is set by the test around begin()/end()."""

    def __init__(self) -> None:
        self.lent = False
        self.sent: list[tuple[float, list[bytes]]] = []
        self.misuse: list[str] = []
        self.pending: list[bytes] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        if not self.lent:
            self.misuse.append(threading.current_thread().name)
        self.sent.append((time.monotonic(), frames))

    def send(self, frame: bytes, flags: int = 0) -> None:
        """One frame of a multipart message, as worker.send_frames sends them."""
        self.pending.append(frame)
        if not flags & zmq.SNDMORE:
            frames, self.pending = self.pending, []
            self.send_multipart(frames)

    def heartbeats(self) -> list[float]:
        return [when for when, frames in self.sent if frames == HEARTBEAT]


class CountingEvent(threading.Event):
    """Counts the heartbeat thread's wake-ups (each is one ``wait``)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def make(interval: float) -> tuple[BusyHeartbeat, FakeSocket, CountingEvent]:
    busy = BusyHeartbeat(HEARTBEAT, interval)
    stop = CountingEvent()
    busy._stop = stop  # before the thread exists, so it waits on this one
    return busy, FakeSocket(), stop


def lend(busy: BusyHeartbeat, sock: FakeSocket) -> None:
    sock.lent = True
    busy.begin(cast(zmq.Socket[bytes], sock))


def take_back(busy: BusyHeartbeat, sock: FakeSocket) -> None:
    busy.end()
    sock.lent = False  # from here on any send by the thread is recorded as misuse


@pytest.fixture
def closing() -> Any:
    made: list[BusyHeartbeat] = []
    yield made.append
    for busy in made:
        busy.close()


def test_a_long_job_heartbeats_every_interval_from_its_start(closing: Any) -> None:
    interval = 0.05
    busy, sock, _ = make(interval)
    closing(busy)
    # The job starts when the socket is lent: begin() stamps it before it starts the thread,
    # and starting a thread can take milliseconds on a busy machine (CI saw 3.5 ms), so the
    # clock is read before lend(), never after it.
    started = time.monotonic()
    lend(busy, sock)
    time.sleep(12 * interval)  # the app, busy for twelve intervals
    take_back(busy, sock)
    beats = sock.heartbeats()
    assert sock.misuse == []
    assert 8 <= len(beats) <= 12, beats
    # Not at the start of the job (short jobs must cost nothing), but one interval into it.
    assert beats[0] - started >= interval * 0.99  # (float rounding only)
    assert beats[0] - started < 3 * interval
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    assert interval * 0.9 <= statistics.median(gaps) <= interval * 1.5, gaps


def test_short_jobs_neither_wake_the_thread_nor_heartbeat(closing: Any) -> None:
    interval = 0.1
    busy, sock, stop = make(interval)
    closing(busy)
    started = time.monotonic()
    jobs = 0
    while time.monotonic() - started < 5 * interval:
        lend(busy, sock)
        take_back(busy, sock)
        jobs += 1
    elapsed = time.monotonic() - started
    assert jobs > 1000
    assert sock.sent == []
    # One wake-up an interval at most (plus the first wait), however many jobs ran.
    assert stop.waits <= elapsed / interval + 2


def test_an_idle_worker_sends_nothing_and_wakes_once_an_interval(closing: Any) -> None:
    interval = 0.05
    busy, sock, stop = make(interval)
    closing(busy)
    lend(busy, sock)
    take_back(busy, sock)  # the thread now exists; the worker goes idle
    time.sleep(10 * interval)
    assert sock.sent == []
    assert 5 <= stop.waits <= 12


def test_after_end_returns_the_thread_never_touches_the_socket(closing: Any) -> None:
    """Jobs of random lengths around a tiny interval, so heartbeats race with end()."""
    interval = 0.001
    busy, sock, _ = make(interval)
    closing(busy)
    rng = random.Random(7)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        lend(busy, sock)
        time.sleep(rng.choice([0, 0.0005, 0.001, 0.003]))
        take_back(busy, sock)
    sent = len(sock.sent)
    time.sleep(20 * interval)
    assert sock.misuse == []
    assert len(sock.sent) == sent
    assert sent > 50  # the race was really run: heartbeats did go out during jobs


def test_partials_go_out_on_the_lent_socket(closing: Any) -> None:
    busy, sock, _ = make(10.0)
    closing(busy)
    lend(busy, sock)
    busy.send([b"part"])
    take_back(busy, sock)
    assert [frames for _, frames in sock.sent] == [[b"part"]]
    assert sock.misuse == []


def test_close_stops_an_idle_thread_promptly() -> None:
    interval = 60.0
    busy, sock, _ = make(interval)
    lend(busy, sock)
    take_back(busy, sock)
    thread = busy._beater
    assert thread is not None
    assert thread.is_alive()
    started = time.monotonic()
    busy.close()
    assert not thread.is_alive()
    # Promptly: it does not wait out its interval (a tenth of it leaves room for a loaded box).
    assert time.monotonic() - started < interval / 10
