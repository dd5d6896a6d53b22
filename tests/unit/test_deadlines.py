"""The deadline structure on its own: a FIFO of first deadlines, a heap for the rest.

Jobs are made by hand (no dispatcher): only their ``due_at``, ``id``, ``done`` and ``worker``
matter here. Time is a number passed in.
"""

from __future__ import annotations

import math
import random

from zmqserver.broker.deadlines import COMPACT_AFTER, Deadlines
from zmqserver.broker.state import Job, Service, WorkerState
from zmqserver.protocol import Form

SERVICE = Service(b"svc")


def job(n: int, deadline: float) -> Job:
    return Job(n, n.to_bytes(8, "big"), b"c", Form.PLAIN, None, None, [], 0, 0.0, SERVICE, deadline)


def pop_all(deadlines: Deadlines, now: float) -> list[int]:
    popped = []
    while (found := deadlines.pop_due(now)) is not None:
        popped.append(found.id)
    return popped


def test_empty_has_no_deadline_and_nothing_due():
    deadlines = Deadlines()
    assert deadlines.next_deadline() == math.inf
    assert deadlines.pop_due(1e9) is None
    assert len(deadlines) == 0


def test_later_deadlines_take_the_fifo_fast_path():
    deadlines = Deadlines()
    for n, when in enumerate([1.0, 2.0, 2.0, 5.0]):
        deadlines.add(job(n, when))
    assert deadlines.in_fifo() == 4  # none went to the heap
    assert deadlines.next_deadline() == 1.0


def test_an_earlier_deadline_goes_to_the_heap_and_still_comes_first():
    deadlines = Deadlines()
    deadlines.add(job(1, 10.0))
    deadlines.add(job(2, 3.0))  # a client's shorter timeout
    assert deadlines.in_fifo() == 1
    assert len(deadlines) == 2
    assert deadlines.next_deadline() == 3.0
    assert pop_all(deadlines, 5.0) == [2]
    assert deadlines.next_deadline() == 10.0
    assert pop_all(deadlines, 10.0) == [1]
    assert deadlines.next_deadline() == math.inf


def test_nothing_pops_before_its_time_and_all_pop_at_it():
    deadlines = Deadlines()
    deadlines.add(job(1, 1.0))
    deadlines.add(job(2, 2.0))
    assert pop_all(deadlines, 0.999) == []
    assert pop_all(deadlines, 1.0) == [1]  # due at its time, not after
    assert pop_all(deadlines, 1.5) == []
    assert pop_all(deadlines, 3.0) == [2]


def test_rearm_brings_a_job_back_at_the_new_time():
    deadlines = Deadlines()
    first = job(1, 1.0)
    deadlines.add(first)
    assert pop_all(deadlines, 1.0) == [1]
    deadlines.rearm(1.5, first)  # a kill grace
    assert deadlines.next_deadline() == 1.5
    assert pop_all(deadlines, 1.4) == []
    assert pop_all(deadlines, 1.5) == [1]


def test_random_deadlines_pop_in_time_order_whichever_path_they_took():
    rng = random.Random(7)
    deadlines = Deadlines()
    whens = {}
    for n in range(500):
        when = rng.uniform(0, 100)
        whens[n] = when
        if rng.random() < 0.2:
            deadlines.rearm(when, job(n, math.inf))
        else:
            deadlines.add(job(n, when))
    assert 0 < deadlines.in_fifo() < 500
    order = []
    before = -1.0
    now = 0.0
    while now <= 100:
        popped = pop_all(deadlines, now)
        assert all(before < whens[n] <= now for n in popped)  # each at its first chance
        assert deadlines.next_deadline() > now
        order += popped
        before = now
        now += 0.5
    assert sorted(order) == list(range(500))


def test_next_deadline_is_the_earlier_head():
    deadlines = Deadlines()
    deadlines.add(job(1, 4.0))
    deadlines.rearm(6.0, job(2, math.inf))
    assert deadlines.next_deadline() == 4.0
    deadlines.rearm(2.0, job(3, math.inf))
    assert deadlines.next_deadline() == 2.0


def test_finished_jobs_are_compacted_away_but_not_those_still_on_a_worker():
    """Cancellation is lazy: a finished job's entries stay until they are half of the heap,
    then go in bulk, unless the job is still on its worker (it may yet get it killed)."""
    deadlines = Deadlines()
    worker = WorkerState(b"W", SERVICE, False, math.inf)
    running = job(0, 1000.0)
    running.done = True
    running.worker = worker  # expired but still running: must stay
    deadlines.rearm(1000.0, running)
    jobs = [job(n, 1000.0 + n) for n in range(1, 2 * COMPACT_AFTER)]
    for entry in jobs:
        deadlines.add(entry)
    for entry in jobs:
        entry.done = True
        deadlines.finished()
    held = deadlines.jobs()
    assert running in held
    # Compacted once more than COMPACT_AFTER had finished: those went, the running one stayed.
    assert held == [running, *jobs[COMPACT_AFTER + 1 :]]


def test_the_fifo_drops_its_popped_front_once_it_is_long():
    deadlines = Deadlines()
    n_jobs = 3 * COMPACT_AFTER
    for n in range(n_jobs):
        deadlines.add(job(n, float(n)))
    assert len(pop_all(deadlines, float(n_jobs - 2))) == n_jobs - 1
    assert len(deadlines) == 1
    assert deadlines.jobs()[0].id == n_jobs - 1
    assert deadlines.next_deadline() == float(n_jobs - 1)
