"""The broker: the sans-IO dispatch core and the socket shell that feeds it.

- :mod:`.dispatch`: :class:`Dispatcher`, every routing decision (services, LRU workers, queues,
  credit, retries, deadlines, heartbeats), frames and ``now`` in, frames out. No sockets.
- :mod:`.liveness`: who is dead: heartbeat expiry, and the silences that are not death (a stall
  of the broker itself, a busy local worker whose process runs).
- :mod:`.shell`: :class:`Broker`, the two ROUTER sockets that feed the dispatcher and send what it
  produces.
"""

from __future__ import annotations

from .dispatch import Dispatcher
from .shell import Broker, poll_timeout_ms
from .state import Limits, Port

__all__ = ["Broker", "Dispatcher", "Limits", "Port", "poll_timeout_ms"]
