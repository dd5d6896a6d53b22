"""The requests the broker answers itself instead of making them jobs: refusals, and MMI.

Rule 1: pure functions of a request and what the dispatcher knows about its service; they say
what to answer (None: accept the request as a job), and the dispatcher sends it. The order of
the checks is the order in which a request meets them: a resend of a known request (answered by
the dispatcher from its pending jobs and reply cache) first, then MMI, then these refusals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ..errors import Status
from ..protocol import ClientRequest, Form, Frame, encode_client_reply
from .state import FRAME_OVERHEAD, Limits, Service, frames_size


def refusal(
    request: ClientRequest,
    name: bytes,
    service: Service | None,
    limits: Limits,
    closing: bool,
    frames: int,
    size: int,
) -> tuple[Status, str] | None:
    """Why the request for service ``name`` (known as ``service``, None if it is not known) is
    refused, as the status and message of its error reply; None if it becomes a job (for an
    unknown service, one that waits ``unknown_service_wait`` for a worker; 0: refused).

    ``frames`` is how many frames its message had as the broker received it (routing id
    excluded). The shell keeps at most one more than ``max_frames`` (the rest of a longer
    message was never made into objects), so over the limit it means "more than max_frames".
    ``size`` is its body's :func:`~.state.charged_size`, which max_message_size bounds and
    max_queue_bytes adds up (the dispatcher computes it once, and keeps it with the job).
    """
    if closing:
        return (Status.SHUTTING_DOWN, "server is shutting down")
    if service is None and not limits.unknown_service_wait:
        return unknown_service(name)
    if limits.max_frames and frames > limits.max_frames:
        return (
            Status.TOO_LARGE,
            f"request of more than {limits.max_frames} frames exceeds max_frames "
            f"({limits.max_frames})",
        )
    if limits.max_message_size and size > limits.max_message_size:
        return (
            Status.TOO_LARGE,
            f"request of {frames_size(request.body)} bytes in {len(request.body)} frames "
            f"(counted as {size}: {FRAME_OVERHEAD} more a frame) exceeds max_message_size "
            f"({limits.max_message_size} bytes)",
        )
    if service is None:
        # No worker has registered it (yet): RFC 7/18 say the broker SHOULD queue the request.
        # It waits unknown_service_wait for one (the dispatcher makes the service provisional).
        return None
    # Only a job that would queue can be refused, and with jobs already waiting it would: no
    # worker can take one now (else dispatch would have given it the head of the queue). Not
    # "and no worker is placed": a busy worker with credit to spare is placed, yet while the
    # prefetch gate is shut it is sent nothing more, and the limit never held.
    if limits.max_queue and service.waiting >= limits.max_queue:
        return (
            Status.QUEUE_FULL,
            f"{service.waiting} jobs already queued for this service (max_queue)",
        )
    # The same rule for bytes: with no job waiting, this one may go straight to a worker, so it
    # is not refused, however large (max_message_size bounds it). The queue's bytes stay within
    # max_queue_bytes, or hold one request. Jobs requeued after their worker was lost count
    # but are never refused (dispatch.py's _requeue): like max_queue, the bound may be passed
    # by jobs the broker accepted, never by new ones.
    if (
        limits.max_queue_bytes
        and service.waiting
        and service.queued_bytes + size > limits.max_queue_bytes
    ):
        return (
            Status.QUEUE_FULL,
            f"{service.queued_bytes} bytes already queued for this service; this request's "
            f"{size} would pass max_queue_bytes ({limits.max_queue_bytes} bytes)",
        )
    return None


def client_full(outstanding: int) -> tuple[Status, str]:
    """The refusal of a client with ``outstanding`` jobs, its max_client_inflight (checked
    after :func:`refusal`: a request that is refused anyway says why it would be)."""
    return (
        Status.QUEUE_FULL,
        f"this client has {outstanding} jobs queued, running or not yet read (max_client_inflight)",
    )


def error_reply(request: ClientRequest, status: Status, message: str) -> list[Frame]:
    """The error reply to ``request``, in the form it came in."""
    return error_frames(request.form, request.service, request.request_id, status, message)


def error_frames(
    form: Form, service: bytes | None, request_id: int | None, status: Status, message: str
) -> list[Frame]:
    """An error reply in ``form``: to a refused request, or a job's error outcome."""
    return encode_client_reply(
        form, service, [], request_id=request_id, status=status, message=message
    )


def unknown_service(name: bytes) -> tuple[Status, str]:
    """The refusal of a request for a service no worker offers (at once, or after the wait)."""
    return (Status.UNKNOWN_SERVICE, f"no such service: {name.decode('utf-8', 'replace')!r}")


#: The durable jobs' services (durable/tsp.py), answered by the master when a store is set.
TITANIC_SERVICES: Final = frozenset(
    {b"titanic.request", b"titanic.reply", b"titanic.close", b"titanic.status"}
)


def mmi_reply(
    name: bytes, request: ClientRequest, services: Mapping[bytes, Service], durable: bool = False
) -> list[Frame]:
    """The broker's whole reply to an MMI request (:func:`mmi_body`), in the request's form."""
    body = mmi_body(name, request, services, durable)
    return encode_client_reply(request.form, request.service, body, request_id=request.request_id)


def mmi_body(
    name: bytes, request: ClientRequest, services: Mapping[bytes, Service], durable: bool = False
) -> list[Frame]:
    """The body of the broker's answer to a Majordomo Management Interface query (RFC 8/MMI).

    ``mmi.service``: ``200`` if the service named in the body has a registered worker (RFC 8),
    else ``404``: also the default service before its pool registers, though a request for it
    would queue. With ``durable`` (a store is configured) the ``titanic.*`` services are always
    there (the guide's Titanic clients ask). ``mmi.services`` (our extension): one frame per
    such service, sorted.
    ``mmi.queue`` (our extension): ``200`` and, in a second frame, how many live jobs wait in
    the named service's queue (decimal), then how many workers it has; ``404`` if the broker
    knows no such service (one with jobs waiting for a first worker is known).
    Any other ``mmi.*``: ``501``.
    """
    if name == b"mmi.service":
        asked = bytes(request.body[0]) if request.body else b""
        if durable and asked in TITANIC_SERVICES:
            return [b"200"]
        found = services.get(asked)
        return [b"200" if found is not None and found.workers else b"404"]
    if name == b"mmi.services":
        offered = [known for known, service in services.items() if service.workers]
        return sorted([*offered, *TITANIC_SERVICES] if durable else offered)
    if name == b"mmi.queue":
        asked = bytes(request.body[0]) if request.body else b""
        service = services.get(asked)
        if service is None:
            return [b"404"]
        return [b"200", b"%d" % service.waiting, b"%d" % service.workers]
    return [b"501"]
