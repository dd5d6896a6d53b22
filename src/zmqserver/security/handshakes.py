"""Whether a connecting socket's handshakes succeed: libzmq's monitor events, read on demand.

A ZeroMQ socket hides its connections: a peer that is down, one that refuses our CURVE key
and one that wants CURVE from a plain socket all look like silence. The socket monitor tells
them apart: no connection at all (down), or connections whose ZMTP/CURVE handshake failed or
never finished (refused). A remote worker asks when its broker has been silent too long, and
``zmq-client`` after a timeout, so each can say which it is instead of "no reply".

Read on demand, never waited on: the events queue in the monitor's socket meanwhile (a few
per reconnect attempt, which libzmq makes at most every ``reconnect_ivl``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

__all__ = ["Handshakes"]

_FAILED = (
    getattr(zmq, "EVENT_HANDSHAKE_FAILED_NO_DETAIL", 0)
    | getattr(zmq, "EVENT_HANDSHAKE_FAILED_PROTOCOL", 0)
    | getattr(zmq, "EVENT_HANDSHAKE_FAILED_AUTH", 0)
)
_SUCCEEDED = getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", 0)
_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | _FAILED | _SUCCEEDED


class Handshakes:
    """What one socket's connections met so far (set it up before ``connect``)."""

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self._sock = sock
        self._monitor: zmq.Socket[Any] | None = sock.get_monitor_socket(_EVENTS)
        self.connected = False
        self.succeeded = False
        self.failed = False

    def read(self, wait: float = 0.0) -> None:
        """Take in the events that came; wait up to ``wait`` seconds for a verdict."""
        monitor = self._monitor
        if monitor is None:
            return
        deadline = time.monotonic() + wait
        while True:
            left = max(0.0, deadline - time.monotonic())
            if not monitor.poll(int(left * 1000)):
                return
            event = recv_monitor_message(monitor)["event"]
            if event & _SUCCEEDED:
                self.succeeded = True
            elif event == zmq.EVENT_CONNECTED:
                self.connected = True
            elif event & _FAILED:
                self.failed = True
            if wait and (self.succeeded or self.failed):
                return

    def refused(self) -> bool:
        """A connection was made but no handshake ever succeeded on it."""
        self.read()
        return (self.connected or self.failed) and not self.succeeded

    def close(self) -> None:
        if self._monitor is None:
            return
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._monitor = None
