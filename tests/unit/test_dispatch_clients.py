"""Per-client bounds and fairness in the dispatch core: fair queuing across clients within a
service, max_client_inflight, replies held for a full pipe, and clients that go away.

No sockets, no clocks: frames and ``now`` in, the outbox out. What the shell does with a full
pipe (EAGAIN) is :meth:`ClientBook.hold`; a client gone (EHOSTUNREACH, or a disconnect
notification) is :meth:`Dispatcher.client_gone`.
"""

from __future__ import annotations

from tests.helpers import limits

from zmqserver.broker import Dispatcher, Port
from zmqserver.errors import Status
from zmqserver.protocol import FLAG_RETRYABLE, parse_client_reply

from . import dispatch_helpers as helpers
from .dispatch_helpers import finish, frontend, jobs_sent, mdp_request, ready, sent


def make_dispatcher(**options: object) -> Dispatcher:
    """Strict LRU (credit 1), so jobs queue behind a busy worker."""
    options.setdefault("worker_credit", 1)
    return helpers.make_dispatcher(limits=limits(**options))


def request(dispatcher: Dispatcher, client: bytes, n: int, **kw: object) -> None:
    """Request ``n`` of ``client``; its body names both."""
    mdp_request(dispatcher, client, b"%s-%d" % (client, n), request_id=n, **kw)  # type: ignore[arg-type]


def run_all(dispatcher: Dispatcher, worker: bytes = b"W") -> list[bytes]:
    """Let the one worker run every job, in the order dispatch gives them; their bodies."""
    order = []
    out = dispatcher.take_outbox()
    while True:
        jobs = jobs_sent(out)
        if not jobs:
            return order
        ((_, job),) = jobs
        order.append(bytes(job.body[0]))
        finish(dispatcher, worker, job)
        out = dispatcher.take_outbox()


def test_a_flood_does_not_delay_another_clients_job():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W")
    for n in range(1, 6):
        request(dispatcher, b"flood", n)  # the first runs at once, four queue
    request(dispatcher, b"probe", 1)
    request(dispatcher, b"flood", 6)
    request(dispatcher, b"probe", 2)
    order = run_all(dispatcher)
    # The probe's first job runs right after the flood's running one, not after its backlog.
    assert order == [
        b"flood-1",
        b"flood-2",
        b"probe-1",
        b"flood-3",
        b"probe-2",
        b"flood-4",
        b"flood-5",
        b"flood-6",
    ]


def test_a_requeued_job_keeps_its_priority():
    """A job whose worker died goes back to the head of its client's queue, and that client's
    turn is next: it runs before everything that was queued."""
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W1")
    request(dispatcher, b"a", 1, flags=FLAG_RETRYABLE)
    request(dispatcher, b"b", 1)
    request(dispatcher, b"a", 2)
    dispatcher.take_outbox()
    dispatcher.worker_gone(b"W1", "killed")
    ready(dispatcher, b"W2")
    assert run_all(dispatcher, b"W2") == [b"a-1", b"b-1", b"a-2"]


def test_counters_stay_right_through_fair_queuing():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W")
    for client in (b"x", b"y"):
        for n in range(3):
            request(dispatcher, client, n)
    service = dispatcher.services[helpers.DEFAULT]
    assert service.waiting == 5 == len(service.queue)
    assert service.queued_bytes == sum(job.size for job in service.queue)
    run_all(dispatcher)
    assert service.waiting == 0
    assert service.queued_bytes == 0
    assert not service.queue


def test_max_client_inflight_refuses_that_client_only():
    dispatcher = make_dispatcher(max_client_inflight=2)
    ready(dispatcher, b"W")
    request(dispatcher, b"greedy", 1)  # runs
    request(dispatcher, b"greedy", 2)  # queues
    request(dispatcher, b"greedy", 3)  # one too many
    request(dispatcher, b"polite", 1)
    out = dispatcher.take_outbox()
    ((client, frames),) = frontend(out)
    reply = parse_client_reply(frames)
    assert (client, reply.status) == (b"greedy", Status.QUEUE_FULL)
    assert b"max_client_inflight" in reply.body[0]
    assert dispatcher.waiting() == 2  # greedy-2 and polite-1
    # Its running job answered: room for one more.
    ((_, job),) = jobs_sent(out)
    finish(dispatcher, b"W", job)
    dispatcher.take_outbox()
    request(dispatcher, b"greedy", 4)
    assert sent(dispatcher)[1] == {}


def test_held_replies_count_against_the_client_and_go_in_order():
    """The shell holds what a full pipe refused; everything after it for that client waits
    behind it, and the held ones count as outstanding until the shell delivers them."""
    dispatcher = make_dispatcher(max_client_inflight=3, worker_credit=4, prefetch_below=0.0)
    ready(dispatcher, b"W", credit=4)
    for n in range(3):
        request(dispatcher, b"slow", n)
    jobs = [job for _, job in jobs_sent(dispatcher.take_outbox())]
    finish(dispatcher, b"W", jobs[0])
    ((port, client, frames),) = dispatcher.take_outbox()
    dispatcher.clients.hold(client, frames)  # the shell: EAGAIN
    finish(dispatcher, b"W", jobs[1])
    assert dispatcher.take_outbox() == []  # held behind the first, not sent ahead of it
    request(dispatcher, b"slow", 9)  # 1 running + 2 held: at its limit
    assert sent(dispatcher)[1] == {}  # the refusal is held too
    held = dispatcher.clients.held_for(b"slow")
    assert held is not None
    bodies = [parse_client_reply(f).body for f in held]
    assert bodies[:2] == [[b"re:slow-0"], [b"re:slow-1"]]
    assert parse_client_reply(held[2]).status is Status.QUEUE_FULL
    for _ in range(3):
        dispatcher.clients.delivered(b"slow")
    assert dispatcher.clients.held_for(b"slow") is None
    finish(dispatcher, b"W", jobs[2])
    assert [peer for peer, _ in frontend(dispatcher.take_outbox())] == [b"slow"]  # sent again
    assert dispatcher.clients.states == {}


def test_a_gone_client_loses_its_queue_and_its_running_jobs_answers():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W")
    for n in range(5):
        request(dispatcher, b"gone", n, timeout_ms=10_000)
    request(dispatcher, b"stays", 1)
    ((_, running),) = jobs_sent(dispatcher.take_outbox())
    assert dispatcher.client_gone(b"gone") == 0
    service = dispatcher.services[helpers.DEFAULT]
    assert service.waiting == 1
    assert service.queued_bytes == service.queue.head().size
    assert dispatcher.stats.abandoned == 4  # queued, never run
    assert not any(key[0] == b"gone" for key in dispatcher.pending if key != (b"gone", 0))
    # The running job finishes; its reply goes nowhere; the next client's job runs.
    finish(dispatcher, b"W", running)
    out = dispatcher.take_outbox()
    assert frontend(out) == []
    assert dispatcher.stats.abandoned == 5
    ((_, job),) = jobs_sent(out)
    assert job.body == [b"stays-1"]
    assert list(dispatcher.clients.states) == [b"stays"]  # the gone client is forgotten
    # Their deadlines are swept as done: nothing fires for them later.
    dispatcher.on_tick(20.0)
    assert [p for p, _, _ in dispatcher.take_outbox() if p is Port.FRONTEND] == []


def test_a_client_that_comes_back_under_its_routing_id_is_answered():
    """A reconnect under the same routing id (ROUTER_HANDOVER, the library's Lazy Pirate)
    makes it a client again: a job it sends after is answered."""
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W")
    request(dispatcher, b"c", 1)
    ((_, first),) = jobs_sent(dispatcher.take_outbox())
    dispatcher.client_gone(b"c")
    request(dispatcher, b"c", 2)
    finish(dispatcher, b"W", first)
    out = dispatcher.take_outbox()
    assert [peer for peer, _ in frontend(out)] == [b"c"]
    ((_, second),) = jobs_sent(out)
    finish(dispatcher, b"W", second)
    assert [peer for peer, _ in frontend(dispatcher.take_outbox())] == [b"c"]
