"""broker/clients.py on its own: the fair queue (FIFO per client, round robin across clients)
and the client book (outstanding jobs, held replies). No sockets, no dispatcher."""

from __future__ import annotations

from zmqserver.broker.clients import COMPACT_AT, HELD_PER_JOB, ClientBook, FairQueue
from zmqserver.broker.state import Job, Service
from zmqserver.protocol import Form

SERVICE = Service(b"s")


def job(client: bytes, n: int) -> Job:
    return Job(
        n, n.to_bytes(8, "big"), client, Form.PLAIN, None, None, [b"%d" % n], 0, 0.0, SERVICE
    )


def drain(queue: FairQueue) -> list[int]:
    order = []
    while (head := queue.head()) is not None:
        assert queue.pop_head() is head
        order.append(head.id)
    return order


def test_round_robin_across_clients_fifo_within_each():
    queue = FairQueue()
    for n in range(1, 6):
        queue.append(job(b"flood", n))
    queue.append(job(b"probe", 10))
    queue.append(job(b"other", 20))
    queue.append(job(b"probe", 11))
    assert len(queue) == 8
    assert queue.clients() == 3
    # One job per client per turn: the probe's first job is second, not sixth.
    assert drain(queue) == [1, 10, 20, 2, 11, 3, 4, 5]
    assert not queue
    assert queue.clients() == 0


def test_a_client_that_comes_back_joins_the_back_of_the_ring():
    queue = FairQueue()
    queue.append(job(b"a", 1))
    queue.append(job(b"a", 2))
    queue.append(job(b"b", 3))
    assert queue.pop_head().id == 1  # a's turn: to the back, behind b
    queue.append(job(b"c", 4))
    assert drain(queue) == [3, 2, 4]


def test_a_requeued_job_goes_first_in_its_client_and_its_client_first_in_the_ring():
    queue = FairQueue()
    queue.append(job(b"a", 1))
    queue.append(job(b"b", 2))
    queue.append(job(b"b", 3))
    queue.appendleft(job(b"b", 9))  # b's turn comes first now, and the job leads its queue
    queue.appendleft(job(b"c", 8))  # c was not queued: its turn is next
    assert drain(queue) == [8, 9, 1, 2, 3]


def test_a_long_queue_keeps_its_order_across_compaction_and_requeues():
    """One client's queue is a list read from a moving head, cut once the taken part is long:
    order holds across the cut, and a requeue after jobs were taken reuses the taken slot."""
    queue = FairQueue()
    count = 3 * COMPACT_AT
    for n in range(count):
        queue.append(job(b"a", n))
    taken = [queue.pop_head().id for _ in range(2 * COMPACT_AT + 1)]
    assert taken == list(range(2 * COMPACT_AT + 1))
    queue.appendleft(job(b"a", 1000))  # the job its lost worker held goes first again
    queue.append(job(b"b", 2000))
    queue.appendleft(job(b"a", 1001))
    rest = drain(queue)
    assert rest[:2] == [1001, 2000]  # a, then b's turn, then a's queue in order
    assert rest[2:] == [1000, *range(2 * COMPACT_AT + 1, count)]
    assert len(queue) == 0


def test_done_jobs_are_skipped_and_dropped_by_head():
    queue = FairQueue()
    first, second, third = job(b"a", 1), job(b"a", 2), job(b"b", 3)
    for j in (first, second, third):
        queue.append(j)
    first.done = second.done = True  # expired while queued
    assert queue.head() is third
    assert len(queue) == 1  # a's done jobs were thrown away on the way
    assert drain(queue) == [3]


def test_drop_takes_one_clients_jobs_out_of_the_ring():
    queue = FairQueue()
    for n in range(3):
        queue.append(job(b"gone", n))
    queue.append(job(b"stays", 7))
    assert [j.id for j in queue.drop(b"gone")] == [0, 1, 2]
    assert queue.drop(b"gone") == []
    assert len(queue) == 1
    assert drain(queue) == [7]


def test_clear_returns_every_job():
    queue = FairQueue()
    queue.append(job(b"a", 1))
    queue.append(job(b"b", 2))
    assert sorted(j.id for j in queue.clear()) == [1, 2]
    assert not queue
    assert queue.head() is None


def test_a_client_is_full_at_its_limit_held_replies_included():
    book = ClientBook(limit=3)
    for _ in range(3):
        assert not book.full(b"c")
        book.accepted(b"c")
    assert book.full(b"c")
    assert not book.full(b"other")
    assert book.finished(b"c")  # its outcome goes out: not gone
    assert not book.full(b"c")
    # An outcome its pipe could not take counts until it is delivered.
    book.hold(b"c", [b"reply"])
    assert book.outstanding(b"c") == 3
    assert book.full(b"c")
    book.delivered(b"c")
    assert book.outstanding(b"c") == 2


def test_no_limit_means_never_full():
    book = ClientBook(limit=0)
    for _ in range(10_000):
        book.accepted(b"c")
    assert not book.full(b"c")


def test_an_entry_is_forgotten_once_nothing_is_outstanding_or_held():
    book = ClientBook(limit=10)
    book.accepted(b"c")
    book.hold(b"c", [b"partial"], outcome=False)
    book.finished(b"c")
    assert b"c" in book.states  # still holds a message
    book.delivered(b"c")
    assert book.states == {}
    assert book.holding == {}


def test_held_messages_keep_their_order_and_outcomes_are_always_held():
    book = ClientBook(limit=2)
    share = 2 * HELD_PER_JOB
    for n in range(share):
        assert book.hold(b"c", [b"%d" % n], outcome=False)
    assert not book.hold(b"c", [b"refusal"], outcome=False)  # its share is held: dropped
    assert book.dropped == 1
    assert book.hold(b"c", [b"final"])  # a job's outcome: held whatever the count
    held = list(book.held_for(b"c") or [])
    assert held == [[b"%d" % n] for n in range(share)] + [[b"final"]]
    assert book.held_for(b"nobody") is None


def test_forget_drops_held_messages_and_marks_running_jobs_gone():
    book = ClientBook(limit=10)
    book.accepted(b"c")
    book.accepted(b"c")
    book.hold(b"c", [b"r1"])
    assert book.forget(b"c") == 1
    assert book.holding == {}
    assert not book.finished(b"c")  # its running job's outcome is not worth sending
    # The client comes back under the same routing id (a reconnect): its jobs count again.
    book.accepted(b"c")
    assert book.finished(b"c")
    assert book.finished(b"c")
    assert book.states == {}
    assert book.forget(b"never-seen") == 0
