"""The signal wake-up socketpair: installs, drains, wakes a wait, and puts back what was there."""

from __future__ import annotations

import os
import select
import signal
import socket
from collections.abc import Iterator

import pytest

from zmqserver._wakeup import Wake, WakeupSocketpair


@pytest.fixture
def no_wakeup_fd() -> Iterator[None]:
    """Run with no wake-up fd installed, and leave the process as it was found."""
    before = signal.set_wakeup_fd(-1)
    try:
        yield
    finally:
        signal.set_wakeup_fd(before)


@pytest.mark.usefixtures("no_wakeup_fd")
def test_close_restores_the_previous_wakeup_fd():
    theirs_r, theirs_w = socket.socketpair()
    theirs_w.setblocking(False)
    try:
        signal.set_wakeup_fd(theirs_w.fileno())
        pair = WakeupSocketpair()
        pair.install()
        assert pair.old_wakeup_fd == theirs_w.fileno()
        assert signal.set_wakeup_fd(pair.write_sock.fileno()) == pair.write_sock.fileno()
        pair.close()
        assert signal.set_wakeup_fd(-1) == theirs_w.fileno()
    finally:
        theirs_r.close()
        theirs_w.close()


@pytest.mark.usefixtures("no_wakeup_fd")
def test_close_without_install_leaves_the_wakeup_fd_alone():
    pair = WakeupSocketpair()
    pair.close()
    assert signal.set_wakeup_fd(-1) == -1


def test_drain_empties_the_read_end():
    pair = WakeupSocketpair()
    try:
        for _ in range(1000):
            pair.wakeup()
        assert select.select([pair.fileno()], [], [], 0)[0]
        pair.drain()
        assert not select.select([pair.fileno()], [], [], 0)[0]
        pair.drain()  # nothing to read: returns at once
    finally:
        pair.close()


@pytest.mark.usefixtures("no_wakeup_fd")
def test_a_signal_wakes_a_wait_on_the_read_end():
    pair = WakeupSocketpair()
    got: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: got.append(signum))
    try:
        pair.install()
        # Blocked, the signal stays pending; the C-level handler writes the byte when it is
        # delivered (on unblocking), and the Python handler runs at the next bytecode.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        os.kill(os.getpid(), signal.SIGUSR2)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
        ready, _, _ = select.select([pair.fileno()], [], [], 10.0)
        assert ready == [pair.fileno()]
        assert got == [signal.SIGUSR2]
        pair.drain()
        assert not select.select([pair.fileno()], [], [], 0)[0]
    finally:
        signal.signal(signal.SIGUSR2, previous)
        pair.close()


def test_wake_is_a_plain_flag():
    wake = Wake()
    assert wake.pending is False
    wake.pending = True
    assert wake.pending is True
