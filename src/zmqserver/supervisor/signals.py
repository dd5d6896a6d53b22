"""The master's signals: a trivial handler, a queue, and ``handle_<name>`` dispatch in the loop.

Rule 1: no signal is acted on here; a handler only records it. What each one does is a
``handle_<name>`` method of the master (master.py), run by its loop.

The handler appends the signal number to a queue and sets the :class:`~zmqserver._wakeup.Wake`
flag; CPython's C-level handler has already written a byte to the wake-up socketpair, which sits
in the loop's wait, so a signal ends the wait at once. Nothing else happens in the handler: no
logging (it could re-enter the logging lock the loop holds), no reaping, no I/O.
"""

from __future__ import annotations

import signal
from collections import deque
from typing import Any

from .._wakeup import Wake, WakeupSocketpair

HANDLED_SIGNALS = (
    signal.SIGHUP,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
    signal.SIGUSR1,
)

#: The master's business alone; their default actions (end, stop, end) would hit a worker that
#: got one meant for its process group, so a worker ignores them.
MASTER_ONLY = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1)


class SignalQueue:
    """The signals received and not handled yet, and the wake-up set-up that goes with them."""

    def __init__(self) -> None:
        self.queue: deque[int] = deque()
        self.wake = Wake()
        self.wakeup: WakeupSocketpair | None = None

    def install(self) -> WakeupSocketpair:
        """Install the handlers and the wake-up fd; the socketpair the loop must wait on."""
        self.wakeup = WakeupSocketpair()
        self.wakeup.install()
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self._on_signal)
        return self.wakeup

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.queue.append(signum)
        self.wake.pending = True

    def dispatch(self, target: object) -> bool:
        """Call ``target.handle_<name>()`` for each signal received, in order; whether any was.

        The flag is cleared first: a signal that comes while these run sets it again.
        """
        self.wake.pending = False
        queue = self.queue
        if not queue:
            return False
        while queue:
            name = signal.Signals(queue.popleft()).name
            handler = getattr(target, f"handle_{name[3:].lower()}", None)
            if handler is not None:
                handler()
        return True

    def uninstall(self) -> None:
        """Default handlers back, and the wake-up fd that was there before ours."""
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        if self.wakeup is not None:
            self.wakeup.close()
            self.wakeup = None

    def reset_in_child(self) -> None:
        """In a freshly forked worker: nothing of the master's signal set-up survives.

        The worker installs its own; the signals stay blocked until the caller unblocks them.
        """
        if self.wakeup is not None:
            self.wakeup.forget()
            self.wakeup = None
        else:
            signal.set_wakeup_fd(-1)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN if sig in MASTER_ONLY else signal.SIG_DFL)
        self.queue.clear()
