"""Many requests in flight on one socket, matched by request id: the sans-IO core of pipelining.

Rule 1: no sockets, no clocks, no event loop. Each request is a
:class:`~zmqserver.client.state.RequestState` (the same Lazy Pirate policy the one-at-a-time
client uses: attempts, deadlines, which replies count, what an error status means); this module
only keeps many of them apart by request id and tells the driver what to send and when it next
needs to be woken. The asyncio client (aio.py) and the blocking client's ``submit``/``map``
(sync.py) both drive it, so retry and matching logic exists once.

One difference from the one-at-a-time Lazy Pirate client: a timed-out request is resent on the
*same* socket, because closing it would abandon every other request in flight. That is safe with
a zmqserver broker, which recognises the resend by (routing id, request id) and neither runs the
job twice nor answers twice; stale replies are told apart by their request id.

The driver sends without blocking; a send that would block is reported with
:meth:`Pipeline.on_send_blocked` and counts as a failed attempt (state.py says why). That matters
more here than for the one-at-a-time client: every attempt's copy stays queued on the one socket
while the server is down, so the queue (``SNDHWM``, 1,000 messages) fills whatever the window,
64 requests x 3 attempts filling it after about 333 requests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ZmqServerError
from ..protocol import parse_client_reply
from .state import RequestIds, RequestState, Response

log = logging.getLogger("zmqserver.client")


@dataclass(init=False)
class Event:
    """What happened to one request: a (partial) response, or the error that ended it.

    Read-only by convention; a plain slotted class for mypyc, as :class:`Response` is.
    """

    __slots__ = ("request_id", "response", "error")
    request_id: int
    response: Response | None
    error: ZmqServerError | None

    def __init__(
        self,
        request_id: int,
        response: Response | None = None,
        error: ZmqServerError | None = None,
    ) -> None:
        self.request_id = request_id
        self.response = response
        self.error = error

    @property
    def final(self) -> bool:
        return self.error is not None or (self.response is not None and self.response.final)


class Pipeline:
    """The requests one socket has in flight."""

    def __init__(
        self,
        *,
        service: bytes = b"",
        timeout: float = 5.0,
        retries: int = 3,
        flags: int = 0,
        peer: str = "the server",
        ids: RequestIds | None = None,
    ) -> None:
        self.service = service
        self.timeout = timeout
        self.retries = retries
        self.flags = flags
        self.peer = peer
        self._ids = ids if ids is not None else RequestIds()
        #: In flight, by request id, in the order of their deadlines (:meth:`_to_back`).
        self._states: dict[int, RequestState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def new_state(self, body: Sequence[bytes], service: bytes | None = None) -> RequestState:
        """A request with this pipeline's policy and the next id, not yet in flight here (the
        blocking client drives its one-at-a-time requests itself, with the same ids).
        ``service`` overrides the pipeline's (durable jobs' ``titanic.*`` requests)."""
        return RequestState(
            body,
            request_id=next(self._ids),
            service=self.service if service is None else service,
            timeout=self.timeout,
            retries=self.retries,
            flags=self.flags,
            peer=self.peer,
        )

    def submit(
        self, body: Sequence[bytes], now: float, service: bytes | None = None
    ) -> tuple[int, list[bytes]]:
        """Start a request; return its id and the frames to send now."""
        state = self.new_state(body, service)
        self._states[state.request_id] = state
        return state.request_id, state.start(now)

    def on_send_blocked(self, request_id: int, now: float) -> None:
        """The frames for ``request_id`` could not be sent without waiting: a failed attempt."""
        state = self._states.get(request_id)
        if state is not None:
            state.on_send_blocked(now)

    def cancel(self, request_id: int) -> None:
        """Forget a request whose caller stopped waiting (its late reply will be ignored)."""
        self._states.pop(request_id, None)

    def on_frames(self, frames: list[bytes], now: float) -> Event | None:
        """A message arrived; return what it means for which request, or None if for none."""
        try:
            reply = parse_client_reply(frames)
        except ZmqServerError as exc:
            # Not an answer anyone can be matched with: the peer is not a zmqserver broker.
            log.warning("ignoring a message that is not an MDP/0.2 reply: %s", exc)
            return None
        request_id = reply.request_id
        if request_id is None:
            # Only a broker that could not read our header answers without an id; with one
            # request in flight it can only be for that one, with more it cannot be placed.
            if len(self._states) != 1:
                log.warning("ignoring a reply without a request id")
                return None
            (request_id,) = self._states
        state = self._states.get(request_id)
        if state is None:
            return None  # late reply to a request that ended or was cancelled
        try:
            response = state.on_reply(reply, now)
        except ZmqServerError as exc:
            del self._states[request_id]
            return Event(request_id, error=exc)
        if response is None:
            return None
        if response.final:
            del self._states[request_id]
        else:
            self._to_back(request_id)  # a PARTIAL moved its deadline
        return Event(request_id, response=response)

    def next_deadline(self) -> float | None:
        """When :meth:`on_tick` next has work to do; None with nothing in flight.

        O(1): the first request in :attr:`_states` has the earliest deadline (see
        :meth:`_to_back`), so a driver may ask on every turn, as it should, without paying for
        the size of its window.
        """
        for state in self._states.values():
            return state.deadline
        return None

    def on_tick(self, now: float) -> tuple[list[tuple[int, list[bytes]]], list[Event]]:
        """Resend requests whose attempt timed out; end those that ran out of attempts.

        Returns the resends as (request id, frames), as :meth:`submit` does, so that a driver can
        report a resend that could not be sent, and the requests that ended. Only the expired
        requests are visited: they are at the front.
        """
        resend: list[tuple[int, list[bytes]]] = []
        ended: list[Event] = []
        states = self._states
        while states:
            request_id, state = next(iter(states.items()))
            if not state.expired(now):
                break
            try:
                frames = state.on_timeout(now)
            except ZmqServerError as exc:
                del states[request_id]
                ended.append(Event(request_id, error=exc))
            else:
                self._to_back(request_id)
                resend.append((request_id, frames))
        return resend, ended

    def _to_back(self, request_id: int) -> None:
        """Move a request whose deadline was just set to ``now + timeout`` behind the others.

        Every request of a pipeline has the same ``timeout``, and every deadline is set to
        ``now + timeout`` by a driver whose clock only goes forward (a new attempt, or a PARTIAL
        that proves the job alive), so the request whose deadline was set last has the latest
        deadline. Keeping :attr:`_states` (a dict: insertion-ordered) in the order the deadlines
        were set therefore keeps it sorted by deadline, with no heap and no scan.
        """
        self._states[request_id] = self._states.pop(request_id)
