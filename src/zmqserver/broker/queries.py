"""What the dispatcher's readers ask it: queue lengths, idle workers, the autoscaler's inputs.

Rule 1: read-only. :class:`Queries` is a base of :class:`~zmqserver.broker.dispatch.Dispatcher`,
apart so that the routing core's module holds what changes its state; every answer here is
computed from the services and counters the dispatcher keeps (declared below, set by its
``__init__``). The master's loop, the autoscaler, the status document and the tests read them.
"""

from __future__ import annotations

from .state import Service


class Queries:
    """Read-only views of a dispatcher's services and counters."""

    #: The service plain and MDP clients get when they name none.
    default_service: bytes
    services: dict[bytes, Service]
    #: Registrations and removals so far: a change the autoscaler sees even when one worker
    #: came and another went between two looks (the count alone would not move).
    membership: int
    #: The autoscaler's last look (scale_inputs) and whether load changes matter to it yet:
    #: set by the master, compared by scale_moved.
    scale_seen: tuple[int, ...]
    watch_load: bool

    def queued(self) -> int:
        return sum(s.waiting for s in self.services.values())

    def scale_inputs(self) -> tuple[int, int, int]:
        """(registrations and removals so far, idle workers, queued jobs): what the autoscaler
        watches, read on every turn of the event loop, so compiled here rather than summed in
        the loop. The first moves with every worker that comes or goes, which the count of
        registered workers would not when one came and another went between two looks."""
        idle = waiting = 0
        for service in self.services.values():
            idle += len(service.idle)
            waiting += service.waiting
        return (self.membership, idle, waiting)

    def scale_moved(self) -> bool:
        """Whether :meth:`scale_inputs` moved from :attr:`scale_seen` (what the autoscaler last
        planned on): a registration or removal at all, idle workers or queued jobs only while
        :attr:`watch_load`. The broker's loop asks on every turn, so the common answer needs no
        tuple and no look at the services."""
        seen = self.scale_seen
        if len(seen) != 3 or seen[0] != self.membership:
            return True
        return self.watch_load and self.scale_inputs() != seen

    def waiting(self, service: bytes | None = None) -> int:
        """Live jobs queued for ``service`` (default: the default service)."""
        found = self.services.get(service or self.default_service)
        return found.waiting if found is not None else 0

    def oldest_queued(self, service: bytes | None = None) -> float | None:
        """When the longest-waiting live job of ``service`` arrived; None if none waits.

        Read-only (:meth:`Service.oldest`): a look at the service's queued jobs.
        """
        found = self.services.get(service or self.default_service)
        return None if found is None else found.oldest()

    def idle_workers(self, service: bytes | None = None) -> list[bytes]:
        """Idle worker ids of ``service`` (default: the default service), in dispatch order.
        Idle means holding no job: a worker with credit to spare but a job is busy."""
        found = self.services.get(service or self.default_service)
        return list(found.idle) if found is not None else []
