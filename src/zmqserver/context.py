"""The request context: what an app may know about the job it is running, and its client.

``zmqserver.request()``, called by the app (or a ``pre_request`` hook) while a job runs, returns
a :class:`Request`: the job's ids, service, attempt, time left, and the client's CURVE key and
address. The worker keeps the job it runs in :data:`CURRENT` (two attribute writes a job); the
object is built only when the app asks, so a job whose app never asks pays nothing more.

What the broker tells (docs/protocol.md §3.4b): the client's address, request id, attempt and
time left come in the client info header, sent only on a server with ``pass_client_info`` to a
worker that asked for it (ours do); the client's key in the key header (``pass_client_key``).
Without them those fields are None.

Not compiled (the worker, which is, only writes :data:`CURRENT`), and imported by nothing of the
client's: ``zmqserver.request`` is resolved on first use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .protocol import decode_client_info

if TYPE_CHECKING:
    from .protocol import JobRequest


class OutsideJob(RuntimeError):
    """``zmqserver.request()`` was called where no job runs (outside a worker, or between
    jobs, or from a thread the app started)."""


class Current:
    """The job the worker runs now, and when it took it (read only for the time left)."""

    __slots__ = ("job", "taken", "service")

    def __init__(self) -> None:
        self.job: JobRequest | None = None
        #: time.monotonic() when the worker took the job; set only for a job with client info.
        self.taken = 0.0
        self.service = ""


#: One per process: the worker writes it around each app call.
CURRENT = Current()


@dataclass(frozen=True)
class Request:
    """One job, as its app sees it. A value: it does not change while the job runs, and may be
    kept after it (``deadline`` is then negative, or None)."""

    #: The broker's job token, in hex: what the access log shows as ``job=`` and JSON log lines
    #: as ``request_id``. The same for every attempt of the job.
    id: str
    #: The client's request id (the zmqserver header's; the client libraries send one), or None.
    request_id: int | None
    #: The service the job was sent to (this worker's).
    service: str
    #: Which worker this is to get the job: 1, or more after a worker was lost (a retry).
    attempt: int | None
    #: The client's CURVE public key (Z85) under ``pass_client_key``, else None.
    client_key: str | None
    #: The client's address as libzmq saw the connection: its IP address for tcp (``127.0.0.1``,
    #: ``::1``); for ipc, what libzmq makes of the peer's credentials. None when not passed.
    client_address: str | None
    #: time.monotonic() at the job's deadline, as the broker counted it; None: no deadline.
    deadline_at: float | None

    @property
    def deadline(self) -> float | None:
        """Seconds left until the job's deadline (negative once past it), or None: none, or
        not passed. The broker counted them when it sent the job; the time the job then spent
        in the worker's pipe behind others counts too, from when the worker took it."""
        if self.deadline_at is None:
            return None
        return self.deadline_at - time.monotonic()


def request() -> Request:
    """The context of the job this worker is running; raises :class:`OutsideJob` elsewhere.

    Call it from the app while it handles a job (or from a ``pre_request`` hook). The client's
    address, request id, attempt and deadline need ``pass_client_info`` on the server, the
    client's key ``pass_client_key``; without them those fields are None.
    """
    current = CURRENT
    job = current.job
    if job is None:
        raise OutsideJob(
            "zmqserver.request() is only available while a job runs, in the worker that runs it"
        )
    key = job.client_key.decode("ascii", "replace") if job.client_key else None
    if not job.info:
        return Request(job.address.hex(), None, current.service, None, key, None, None)
    request_id, attempt, left_ms, address = decode_client_info(job.info)
    deadline_at = None if left_ms is None else current.taken + left_ms / 1000
    return Request(
        job.address.hex(),
        request_id,
        current.service,
        attempt,
        key,
        address or None,
        deadline_at,
    )
