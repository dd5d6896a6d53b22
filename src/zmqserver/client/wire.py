"""One client socket's three calls: queue a message without waiting, take a queued one, wait.

A request's own handling (state.py, pipeline.py) costs a few microseconds; moving its frames
through pyzmq's Python layer cost more than that (a call and an ``IntFlag`` per frame, a
``getsockopt(RCVMORE)`` per frame received, a ``zmq.Poller`` per wait). Where the server's
compiled socket I/O is built (``zmqserver._io`` over ``_fastio``: one C call per message, bound
to pyzmq's own libzmq) the client uses it too; otherwise pyzmq's calls with plain int flags.
``ZMQSERVER_PURE_PYTHON=1`` selects the second, as it does for the server.

``_io`` is imported when the first socket is made, not with the package: ``import zmqserver``
loads no socket code beyond pyzmq (tests/unit/test_imports.py).
"""

from __future__ import annotations

from collections.abc import Callable

import zmq

__all__ = ["Wire"]


class Wire:
    """A connected DEALER and the fastest calls this build has for it."""

    __slots__ = ("socket", "send", "recv", "_poll")

    def __init__(self, socket: zmq.Socket[bytes]) -> None:
        from .. import _io

        self.socket = socket
        #: ``send(frames)``: True if the whole message was queued, False if the queue was full
        #: (``EAGAIN``: nothing of it was), never a wait.
        self.send: Callable[[list[bytes]], bool] = _io.try_sender(socket)
        #: ``recv()``: the next whole message, every frame ``bytes``, or None at once.
        self.recv: Callable[[], list[bytes] | None] = _io.receiver(socket)
        self._poll = _io.poller((socket,), ())

    def recv_within(self, milliseconds: int) -> list[bytes] | None:
        """The next message, waiting at most ``milliseconds``; None if none came.

        The wait is libzmq's ``zmq_poll``; a signal ends it and its handler runs (so Ctrl-C
        raises ``KeyboardInterrupt`` at once), and the caller then looks at its deadline again.
        """
        frames = self.recv()
        if frames is not None or not self._poll(max(milliseconds, 0)):
            return frames
        return self.recv()

    def wait(self, milliseconds: int) -> bool:
        """Wait at most ``milliseconds`` for a message; True if one is there (signals: above)."""
        return bool(self._poll(max(milliseconds, 0)))

    def close(self) -> None:
        self.socket.close(linger=0)
