"""The signal wake-up socketpair, shared by the master and the workers (after trio's).

Rule 1: only the wake-up mechanism lives here: no handlers, no policy about which signal does what.

A Python-level signal handler runs between bytecodes, so a process blocked in ``zmq_poll`` or
``poll`` would not see a signal until its timeout. CPython's C-level handler also writes the
signal number to the fd given to :func:`signal.set_wakeup_fd`; with the read end of a socketpair
in the same wait as everything else, a signal ends the wait at once.

Why a socketpair and not a pipe: both ends can be made non-blocking with ``setblocking``, and on
Linux a socket's buffer is large enough that a burst of signals never fills it (a full buffer
only loses bytes, never signals: the handlers still run; ``warn_on_full_buffer=False`` keeps the
warning that would otherwise print out of the way). Why restore the previous fd on close: the
process may be an embedding program's (``zmqserver.run()``), which may have had its own wake-up
fd, say an asyncio loop's; leaving ours installed, or -1, would break it silently.

:class:`Wake` is the other half of "the master has work": a flag the signal handler sets. The
broker's compiled loop reads it once a turn (an attribute read), and returns to the master.
"""

from __future__ import annotations

import contextlib
import signal
import socket


class Wake:
    """Set when the master's loop has work the broker's inner loop must return for.

    Set by the master's signal handlers, cleared by the master before it handles what set it.
    A plain attribute, not a callback: the broker reads it on each of tens of thousands of
    turns a second.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = False


class WakeupSocketpair:
    """A non-blocking socketpair whose write end is the process's signal wake-up fd.

    :meth:`install` makes it the wake-up fd (remembering the previous one); :meth:`drain` empties
    the read end after a wake-up; :meth:`close` puts the previous fd back, then closes both ends.
    Not installed, it is still a socketpair a thread could :meth:`wakeup` the loop with.
    """

    def __init__(self) -> None:
        self.wakeup_sock, self.write_sock = socket.socketpair()
        self.wakeup_sock.setblocking(False)
        self.write_sock.setblocking(False)
        #: What set_wakeup_fd returned: the fd to put back on close (None: not installed).
        self.old_wakeup_fd: int | None = None

    def fileno(self) -> int:
        """The read end: wait for it to become readable."""
        return self.wakeup_sock.fileno()

    def install(self) -> None:
        """Make the write end the wake-up fd (main thread only, as ``set_wakeup_fd`` requires)."""
        fd = self.write_sock.fileno()
        self.old_wakeup_fd = signal.set_wakeup_fd(fd, warn_on_full_buffer=False)

    def wakeup(self) -> None:
        """Make the read end readable, from anywhere (a full buffer means it already is)."""
        with contextlib.suppress(BlockingIOError):
            self.write_sock.send(b"\x00")

    def drain(self) -> None:
        """Read everything waiting, so the next wait blocks until the next wake-up."""
        try:
            while True:
                if not self.wakeup_sock.recv(2**16):
                    return  # the other end is closed (only in close()'s aftermath)
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Put the previous wake-up fd back (if :meth:`install` ran), then close both ends."""
        if self.old_wakeup_fd is not None:
            signal.set_wakeup_fd(self.old_wakeup_fd)
            self.old_wakeup_fd = None
        self.wakeup_sock.close()
        self.write_sock.close()

    def forget(self) -> None:
        """In a forked child: uninstall and close without restoring (the fd was the parent's
        business; the child starts with no wake-up fd)."""
        signal.set_wakeup_fd(-1)
        self.old_wakeup_fd = None
        self.wakeup_sock.close()
        self.write_sock.close()
