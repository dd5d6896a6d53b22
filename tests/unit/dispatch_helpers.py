"""Drive a :class:`~zmqserver.broker.Dispatcher` with frames, as ROUTER sockets deliver them.

Shared by the dispatch unit tests (test_dispatch*.py, test_pair.py). No sockets, no clocks: every
call takes the frames after the peer's routing id and an explicit ``now``; what the dispatcher
wants sent is read back from its outbox.
"""

from __future__ import annotations

from typing import Any

from tests.helpers import limits

from zmqserver.broker import Dispatcher, Port
from zmqserver.broker.state import Outgoing
from zmqserver.errors import Status
from zmqserver.protocol import (
    JobRequest,
    encode_client_request,
    encode_credit_header,
    encode_ready,
    encode_worker_reply,
    parse_broker_message,
    parse_client_reply,
)

DEFAULT = b"default"


def make_dispatcher(default_service: bytes = DEFAULT, **kwargs: Any) -> Dispatcher:
    """A dispatcher whose clock starts at 0 (unless ``now`` is given)."""
    kwargs.setdefault("now", 0.0)
    kwargs.setdefault("limits", limits())
    return Dispatcher(default_service, **kwargs)


def ready(
    dispatcher: Dispatcher,
    worker: bytes,
    now: float = 0.0,
    *,
    service: bytes = DEFAULT,
    delimited: bool = False,
    credit: int = 1,
    foreign: bool = False,
) -> None:
    """Make ``worker`` a registered, idle worker of ``service`` (asking for ``credit`` jobs).

    A zmqserver worker (its READY has a credit header, even for credit 1: it heartbeats at the
    broker's interval, busy or not), or with ``foreign`` a plain RFC 18 worker, whose cadence
    the broker learns by watching it and whose busy silence its job's deadline governs.
    """
    if foreign:
        frames = encode_ready(service, delimited, credit=credit)
    else:
        frames = encode_ready(service, delimited)
        frames.append(encode_credit_header(credit))
    dispatcher.on_worker(worker, frames, now)


def plain_request(
    dispatcher: Dispatcher, client: bytes, body: bytes = b"job", now: float = 0.0
) -> None:
    """A REQ client's request: empty delimiter, then the payload."""
    dispatcher.on_client(client, [b"", body], now)


def mdp_request(
    dispatcher: Dispatcher,
    client: bytes,
    body: bytes = b"job",
    now: float = 0.0,
    *,
    service: bytes = DEFAULT,
    request_id: int | None = None,
    flags: int = 0,
    timeout_ms: int = 0,
) -> None:
    """An MDP/0.2 DEALER client's request, with a zmqserver header if ``request_id`` is given."""
    frames = encode_client_request(
        service, [body], request_id=request_id, flags=flags, timeout_ms=timeout_ms
    )
    dispatcher.on_client(client, frames, now)


def jobs_sent(out: list[Outgoing]) -> list[tuple[bytes, JobRequest]]:
    """The (worker, JobRequest) pairs in an outbox, in order."""
    result = []
    for port, peer, frames in out:
        if port is Port.BACKEND:
            msg = parse_broker_message(frames)
            if isinstance(msg, JobRequest):
                result.append((peer, msg))
    return result


def backend(out: list[Outgoing]) -> list[tuple[bytes, object]]:
    """Every message to a worker in an outbox, parsed."""
    return [
        (peer, parse_broker_message(frames)) for port, peer, frames in out if port is Port.BACKEND
    ]


def frontend(out: list[Outgoing]) -> list[tuple[bytes, list[bytes]]]:
    """Every message to a client in an outbox, as frames."""
    return [(peer, frames) for port, peer, frames in out if port is Port.FRONTEND]  # type: ignore[misc]


def statuses(out: list[Outgoing]) -> dict[bytes, Status]:
    """Client -> the status of its (last) reply in an outbox."""
    return {peer: parse_client_reply(frames).status for peer, frames in frontend(out)}


def sent(dispatcher: Dispatcher) -> tuple[list[tuple[bytes, JobRequest]], dict[bytes, Status]]:
    """Take the outbox: the jobs sent to workers (in order) and each answered client's status."""
    out = dispatcher.take_outbox()
    return jobs_sent(out), statuses(out)


def finish(
    dispatcher: Dispatcher,
    worker: bytes,
    job: JobRequest,
    body: list[bytes] | None = None,
    now: float = 0.0,
    **kw: Any,
) -> None:
    """``worker`` answers ``job`` with a FINAL (``kw``: status, final, delimited); the body
    defaults to ``re:`` and the request's first frame."""
    frames = encode_worker_reply(
        job.address, [b"re:" + bytes(job.body[0])] if body is None else body, **kw
    )
    dispatcher.on_worker(worker, frames, now)


def only_job(dispatcher: Dispatcher) -> tuple[bytes, JobRequest]:
    (one,) = jobs_sent(dispatcher.take_outbox())
    return one


def only_reply(dispatcher: Dispatcher) -> tuple[bytes, list[bytes]]:
    (reply,) = frontend(dispatcher.take_outbox())
    return reply
