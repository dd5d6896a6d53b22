"""The component contract: a master composed with fake components on real socketpairs.

No processes (the flock forks nothing) and no ZeroMQ sockets; the loop, its wait, the signal
wake-up fd and the deadlines are the real ones.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from zmqserver.config import Config
from zmqserver.supervisor import Master, StartError
from zmqserver.supervisor.signals import HANDLED_SIGNALS

from .fake_components import FakeView, NoForkFlock, PipeComponent


@pytest.fixture(autouse=True)
def keep_signal_handlers() -> Iterator[None]:
    """The master installs handlers and leaves SIG_DFL behind: put pytest's back."""
    saved = {sig: signal.getsignal(sig) for sig in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def make_master(*components: PipeComponent) -> Master:
    view = FakeView()
    master = Master(Config(app="examples.echo:app"), view, list(components))
    master.flock = NoForkFlock(master.pools, view, master.pid)
    return master


def test_handle_is_called_when_the_components_fd_is_readable():
    log: list[tuple[str, str]] = []
    comp = PipeComponent("pipe", log)
    master = make_master(comp)
    comp.on_handle = lambda data, now: master.stop(graceful=True) if data else None
    comp.outside.send(b"hello")
    assert master.run() == 0
    assert [(readable, data) for readable, _, data in comp.handled] == [(True, b"hello")]
    assert log == [("pipe", "open"), ("pipe", "on_stop graceful=True"), ("pipe", "close")]


def test_a_components_deadline_ends_the_wait():
    log: list[tuple[str, str]] = []
    comp = PipeComponent("timer", log)
    master = make_master(comp)
    due = time.monotonic() + 0.05
    comp.deadlines = [due]
    comp.on_handle = lambda data, now: master.stop(graceful=True) if now >= due else None
    assert master.run() == 0
    readable, now, _ = comp.handled[-1]
    assert not readable
    assert now >= due


def test_a_signal_wakes_the_loop_and_stops_every_component_in_order():
    """SIGTERM reaches handle_term through the wake-up fd; on_stop runs in the components'
    order, close in reverse."""
    log: list[tuple[str, str]] = []
    first, second = PipeComponent("first", log), PipeComponent("second", log)
    master = make_master(first, second)
    first.deadlines = [0.0]  # a first turn at once, which sends the signal
    sent: list[bool] = []

    def kill_once(data: bytes, now: float) -> None:
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)

    first.on_handle = kill_once
    assert master.run() == 0
    assert log == [
        ("first", "open"),
        ("second", "open"),
        ("first", "on_stop graceful=True"),
        ("second", "on_stop graceful=True"),
        ("second", "close"),
        ("first", "close"),
    ]
    # The master restored the wake-up fd it found (none).
    assert signal.set_wakeup_fd(-1) == -1


def test_a_component_that_cannot_start_stops_the_master_and_is_closed():
    log: list[tuple[str, str]] = []
    first, second, third = (PipeComponent(name, log) for name in ("first", "second", "third"))

    def refuse(host: object) -> None:
        log.append(("second", "open"))
        raise StartError("cannot bind the control socket to ipc:///nowhere")

    second.open = refuse  # type: ignore[method-assign]
    master = make_master(first, second, third)
    assert master.run() == 1
    assert log == [("first", "open"), ("second", "open"), ("second", "close"), ("first", "close")]
    third.close()


def test_hup_reaches_every_component():
    log: list[tuple[str, str]] = []
    comp = PipeComponent("pipe", log)
    master = make_master(comp)
    try:
        master.handle_hup()
        assert log == [("pipe", "on_reload")]
        assert all(pool.generation == 1 for pool in master.pools.values())
    finally:
        comp.close()
