"""Credit-based flow in the dispatch core: a worker may hold up to ``credit`` jobs at once.

A worker asks for its credit in READY (a credit header after the service frame); the service's
``Limits.worker_credit`` caps it, and a READY without one (any foreign MDP worker) means 1, which
is strict LRU. A worker runs its jobs in the order they were sent, so only the oldest one it holds
may have started: the rules for lost workers and deadlines follow from that. No sockets, no
clocks: frames and ``now`` in, the outbox out.
"""

from __future__ import annotations

from functools import partial

from tests.helpers import limits

from zmqserver.broker import Dispatcher, Port
from zmqserver.errors import Status
from zmqserver.protocol import (
    FLAG_RETRYABLE,
    Disconnect,
    encode_disconnect,
    encode_ready,
    encode_worker_reply,
    parse_broker_message,
    parse_client_reply,
)

from . import dispatch_helpers as helpers
from .dispatch_helpers import DEFAULT, mdp_request, sent

SERVICE = DEFAULT

#: Workers here ask for 4 jobs unless told otherwise; replies are b"ok".
ready = partial(helpers.ready, credit=4)
finish = partial(helpers.finish, body=[b"ok"])


def make_dispatcher(
    credit: int = 4, heartbeat_interval: float = 1.0, **options: object
) -> Dispatcher:
    """Without the prefetch gate unless asked (these tests are about what credit allows; the
    gate's own tests are at the end)."""
    options.setdefault("prefetch_below", 0.0)
    return helpers.make_dispatcher(
        heartbeat_interval=heartbeat_interval,
        limits=limits(worker_credit=credit, **options),
    )


def request(
    dispatcher: Dispatcher, client: bytes, now: float = 0.0, *, timeout_ms: int = 0, flags: int = 0
) -> None:
    """Request 1 of ``client``, whose body is the client's name."""
    mdp_request(dispatcher, client, client, now, request_id=1, timeout_ms=timeout_ms, flags=flags)


def test_a_worker_takes_up_to_its_credit_then_jobs_queue():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W", credit=3)
    for client in (b"c1", b"c2", b"c3", b"c4"):
        request(dispatcher, client)
    jobs, _ = sent(dispatcher)
    assert [(w, j.body) for w, j in jobs] == [(b"W", [b"c1"]), (b"W", [b"c2"]), (b"W", [b"c3"])]
    assert dispatcher.waiting() == 1
    assert dispatcher.idle_workers() == []  # holding jobs: busy, whatever credit it has left
    finish(dispatcher, b"W", jobs[0][1])
    more, answers = sent(dispatcher)
    assert answers == {b"c1": Status.OK}
    assert [(w, j.body) for w, j in more] == [(b"W", [b"c4"])]
    assert dispatcher.waiting() == 0


def test_the_broker_caps_the_credit_and_a_plain_ready_means_one():
    dispatcher = make_dispatcher(credit=2)
    ready(dispatcher, b"greedy", credit=50)
    dispatcher.on_worker(b"plain", encode_ready(SERVICE), 0.0)
    assert dispatcher.workers[b"greedy"].credit == 2
    assert dispatcher.workers[b"plain"].credit == 1
    default = Dispatcher(SERVICE, limits=limits(), now=0.0)  # the defaults grant up to 16, gated
    ready(default, b"W", credit=64)
    assert default.workers[b"W"].credit == 16


def test_an_idle_worker_is_preferred_then_the_least_loaded_in_lru_order():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    ready(dispatcher, b"B")
    ready(dispatcher, b"C")
    for n in range(7):
        request(dispatcher, b"c%d" % n)
    jobs, _ = sent(dispatcher)
    # Each idle worker first (LRU), then the ones holding one job, in the order they got it...
    assert [w for w, _ in jobs] == [b"A", b"B", b"C", b"A", b"B", b"C", b"A"]
    # ...and a worker that finishes a job is the least loaded: it gets the next one.
    finish(dispatcher, b"C", jobs[2][1])
    request(dispatcher, b"late")
    more, _ = sent(dispatcher)
    assert [w for w, _ in more] == [b"C"]


def test_a_freed_worker_with_no_jobs_left_goes_before_busy_ones():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    ready(dispatcher, b"B")
    request(dispatcher, b"c1")
    request(dispatcher, b"c2")
    request(dispatcher, b"c3")
    jobs, _ = sent(dispatcher)
    assert [w for w, _ in jobs] == [b"A", b"B", b"A"]
    finish(dispatcher, b"B", jobs[1][1])
    assert dispatcher.idle_workers() == [b"B"]
    request(dispatcher, b"c4")
    more, _ = sent(dispatcher)
    assert [w for w, _ in more] == [b"B"]


def test_a_dead_worker_fails_its_running_job_and_reruns_the_ones_behind_it_uncounted():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W")
    for client in (b"c1", b"c2", b"c3"):
        request(dispatcher, client)  # not retryable
    sent(dispatcher)
    dispatcher.worker_gone(b"W", "killed")
    _, answers = sent(dispatcher)
    assert answers == {b"c1": Status.WORKER_LOST}  # c1 may have run: not rerun
    assert dispatcher.waiting() == 2
    ready(dispatcher, b"V")
    jobs, _ = sent(dispatcher)
    assert [j.body for _, j in jobs] == [[b"c2"], [b"c3"]]  # in their order, at the head
    assert [dispatcher.jobs[j.address].attempts for _, j in jobs] == [1, 1]
    for _, job in jobs:
        finish(dispatcher, b"V", job)
    _, answers = sent(dispatcher)
    assert answers == {b"c2": Status.OK, b"c3": Status.OK}


def test_a_dead_worker_retries_its_running_job_at_the_head_when_allowed():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W")
    request(dispatcher, b"c1", flags=FLAG_RETRYABLE)
    request(dispatcher, b"c2")
    sent(dispatcher)
    request(dispatcher, b"c3")  # held too (credit 4)
    sent(dispatcher)
    dispatcher.worker_gone(b"W", "killed")
    ready(dispatcher, b"V")
    jobs, answers = sent(dispatcher)
    assert answers == {}
    assert [j.body for _, j in jobs] == [[b"c1"], [b"c2"], [b"c3"]]
    assert [dispatcher.jobs[j.address].attempts for _, j in jobs] == [2, 1, 1]


def test_disconnect_hands_back_every_held_job_uncounted():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W")
    for client in (b"c1", b"c2", b"c3"):
        request(dispatcher, client)
    first, _ = sent(dispatcher)
    finish(dispatcher, b"W", first[0][1])
    dispatcher.on_worker(b"W", encode_disconnect(), 0.0)
    _, answers = sent(dispatcher)
    assert answers == {b"c1": Status.OK}
    ready(dispatcher, b"V")
    jobs, _ = sent(dispatcher)
    assert [j.body for _, j in jobs] == [[b"c2"], [b"c3"]]
    assert [dispatcher.jobs[j.address].attempts for _, j in jobs] == [1, 1]


def test_undelivered_hands_back_a_lone_job_and_holds_several_until_the_worker_is_gone():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A")
    request(dispatcher, b"c1")
    sent(dispatcher)
    dispatcher.worker_gone(b"A", "unreachable", undelivered=True)
    assert dispatcher.waiting() == 1  # never delivered: back in the queue, not lost
    ready(dispatcher, b"B")
    ready(dispatcher, b"C")
    request(dispatcher, b"c2")
    request(dispatcher, b"c3")
    jobs, _ = sent(dispatcher)
    assert [(w, j.body) for w, j in jobs] == [(b"B", [b"c1"]), (b"C", [b"c2"]), (b"B", [b"c3"])]
    # B holds c1 and c3, and the send of c3 failed: c1 may have started, or B may have left
    # with a DISCONNECT the dispatcher has not read yet. It gets nothing more until that is known.
    dispatcher.worker_gone(b"B", "unreachable", undelivered=True)
    assert sent(dispatcher) == ([], {})
    assert b"B" in dispatcher.workers
    request(dispatcher, b"c4")
    request(dispatcher, b"c5")
    jobs, _ = sent(dispatcher)
    assert [w for w, _ in jobs] == [b"C", b"C"]  # not B
    dispatcher.on_worker(b"B", encode_disconnect(), 0.5)  # it left in an orderly way
    jobs, answers = sent(dispatcher)
    assert answers == {}
    assert [(w, j.body) for w, j in jobs] == [(b"C", [b"c1"])]  # C's last credit
    assert [job.body for job in dispatcher.services[SERVICE].queue] == [[b"c3"]]
    assert dispatcher.jobs[jobs[0][1].address].attempts == 1  # only C counts: A, B never ran it


def test_an_unreachable_worker_holding_several_that_dies_loses_only_the_oldest():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"B")
    request(dispatcher, b"c1")
    request(dispatcher, b"c2")
    sent(dispatcher)
    dispatcher.worker_gone(b"B", "unreachable", undelivered=True)
    dispatcher.set_limits(limits(worker_credit=4), {})  # a reload must not make it reachable again
    request(dispatcher, b"c3")
    assert sent(dispatcher) == ([], {})
    dispatcher.worker_gone(b"B", "process exited with signal SIGKILL")
    _, answers = sent(dispatcher)
    assert answers == {b"c1": Status.WORKER_LOST}
    assert dispatcher.waiting() == 2


def test_silent_workers_do_not_get_each_others_jobs():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"A", now=0.0)
    for client in (b"c1", b"c2"):
        request(dispatcher, client)
    ready(dispatcher, b"B", now=0.0)
    sent(dispatcher)
    for now in (1.0, 2.0, 2.9):  # a broker that runs ticks every interval (a jump is a stall)
        dispatcher.on_tick(now)
    sent(dispatcher)
    dispatcher.on_tick(3.5)  # both silent: c2 (never started) must not go to B, about to go too
    jobs, answers = sent(dispatcher)
    assert jobs == []
    assert answers == {b"c1": Status.WORKER_LOST}
    assert sorted(dispatcher.take_kills()) == [b"A", b"B"]
    assert dispatcher.waiting() == 1


def test_a_job_expiring_behind_another_is_answered_but_does_not_kill_the_worker():
    dispatcher = make_dispatcher(
        kill_grace=1.0, heartbeat_interval=10.0
    )  # no heartbeat expiry here
    ready(dispatcher, b"W")
    request(dispatcher, b"long", timeout_ms=100_000)
    request(dispatcher, b"short", timeout_ms=2_000)
    jobs, _ = sent(dispatcher)
    dispatcher.on_tick(2.0)
    _, answers = sent(dispatcher)
    assert answers == {b"short": Status.EXPIRED}
    dispatcher.on_tick(3.5)  # past short's deadline + grace: it has not started, no kill
    assert dispatcher.take_kills() == []
    finish(dispatcher, b"W", jobs[0][1], now=4.0)  # "short" starts now and gets kill_grace
    _, answers = sent(dispatcher)
    assert answers == {b"long": Status.OK}
    dispatcher.on_tick(4.5)
    assert dispatcher.take_kills() == []
    dispatcher.on_tick(5.1)
    assert dispatcher.take_kills() == [b"W"]
    assert b"W" not in dispatcher.workers


def test_a_late_reply_for_a_job_that_expired_behind_another_is_dropped_and_frees_credit():
    dispatcher = make_dispatcher(credit=2)
    ready(dispatcher, b"W", credit=2)
    request(dispatcher, b"long", timeout_ms=100_000)
    request(dispatcher, b"short", timeout_ms=1_000)
    request(dispatcher, b"next")
    jobs, _ = sent(dispatcher)
    dispatcher.on_tick(1.0)
    sent(dispatcher)
    finish(dispatcher, b"W", jobs[0][1], now=1.2)
    finish(dispatcher, b"W", jobs[1][1], now=1.3)
    more, answers = sent(dispatcher)
    assert answers == {b"long": Status.OK}  # and nothing more for "short"
    assert [j.body for _, j in more] == [[b"next"]]


def test_lowering_the_cap_on_reload_applies_as_jobs_finish():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W")
    for client in (b"c1", b"c2", b"c3"):
        request(dispatcher, client)
    jobs, _ = sent(dispatcher)
    dispatcher.set_limits(limits(worker_credit=1), {})
    assert dispatcher.workers[b"W"].credit == 1
    request(dispatcher, b"c4")
    finish(dispatcher, b"W", jobs[0][1])
    finish(dispatcher, b"W", jobs[1][1])
    more, _ = sent(dispatcher)
    assert more == []  # still holds c3: no room at credit 1
    finish(dispatcher, b"W", jobs[2][1])
    more, _ = sent(dispatcher)
    assert [j.body for _, j in more] == [[b"c4"]]


def test_max_queue_counts_only_jobs_no_worker_could_take():
    dispatcher = make_dispatcher(max_queue=1)
    ready(dispatcher, b"W", credit=2)
    for client in (b"c1", b"c2", b"c3", b"c4"):
        request(dispatcher, client)
    _, answers = sent(dispatcher)
    assert answers == {b"c4": Status.QUEUE_FULL}


def test_max_queue_holds_while_the_prefetch_gate_keeps_spare_credit_unused():
    """A busy worker with credit to spare is placed, but while jobs are long the gate gives it
    nothing more, so new jobs queue: they count against max_queue like any others. (The limit
    once applied only when no worker was placed, so it never held with the default credit while
    jobs ran long: the broker's queue grew without bound.)"""
    dispatcher = make_dispatcher(prefetch_below=0.001, max_queue=2)
    ready(dispatcher, b"W", credit=4)
    for client in (b"c1", b"c2", b"c3", b"c4", b"c5", b"c6"):
        request(dispatcher, client)
    jobs, answers = sent(dispatcher)
    assert [j.body for _, j in jobs] == [[b"c1"]]
    assert dispatcher.services[SERVICE].placed  # W could hold more, had the gate been open
    assert dispatcher.waiting() == 2
    assert answers == {c: Status.QUEUE_FULL for c in (b"c4", b"c5", b"c6")}


def test_a_disconnecting_worker_is_not_sent_more_and_shutdown_fails_held_jobs_once():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W")
    request(dispatcher, b"c1")
    request(dispatcher, b"c2")
    sent(dispatcher)
    dispatcher.shutdown()
    dispatcher.on_worker(b"W", encode_disconnect(), 0.0)
    _, answers = sent(dispatcher)
    assert answers == {b"c1": Status.SHUTTING_DOWN, b"c2": Status.SHUTTING_DOWN}


def test_fail_running_answers_every_held_job_and_frees_the_worker():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W")
    request(dispatcher, b"c1")
    request(dispatcher, b"c2")
    sent(dispatcher)
    dispatcher.fail_running(Status.SHUTTING_DOWN, "stop")
    _, answers = sent(dispatcher)
    assert answers == {b"c1": Status.SHUTTING_DOWN, b"c2": Status.SHUTTING_DOWN}
    assert dispatcher.jobs == {}
    assert dispatcher.idle_workers() == [b"W"]


def test_the_deadlines_forget_finished_jobs_and_their_bodies():
    dispatcher = Dispatcher(SERVICE, limits=limits(job_timeout=60.0), now=0.0)
    ready(dispatcher, b"W", credit=1)
    sent(dispatcher)
    for n in range(10_000):
        dispatcher.on_client(b"c", [b"", b"x" * 100], n * 0.001)
        ((_, _, frames),) = dispatcher.take_outbox()
        finish(dispatcher, b"W", parse_broker_message(frames), now=n * 0.001)  # type: ignore[arg-type]
        dispatcher.take_outbox()
    held = dispatcher.deadlines.jobs()
    assert len(held) <= 2 * 1024 + 2
    assert all(not job.body for job in held)


def test_messages_for_a_worker_holding_jobs_are_jobs_only():
    """What makes ``undelivered`` exact for a worker holding one job: no heartbeat goes to a
    worker that holds any."""
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W")
    request(dispatcher, b"c1")
    sent(dispatcher)
    dispatcher.on_tick(1.0)
    assert not [m for m in dispatcher.take_outbox() if m[0] is Port.BACKEND]
    dispatcher.on_worker(b"W", encode_disconnect(), 1.0)
    assert not any(isinstance(parse_broker_message(f), Disconnect) for _, _, f in dispatcher.outbox)


# -- the prefetch gate: credit beyond one job is used only while jobs are short --------------


def test_until_a_job_has_been_timed_dispatch_is_strict_lru():
    dispatcher = make_dispatcher(prefetch_below=0.001)
    ready(dispatcher, b"W")
    for client in (b"c1", b"c2"):
        request(dispatcher, client)
    jobs, _ = sent(dispatcher)
    assert [j.body for _, j in jobs] == [[b"c1"]]  # c2 waits for W, though W asked for 4
    assert dispatcher.waiting() == 1


def test_short_jobs_open_the_gate_and_long_ones_close_it():
    dispatcher = make_dispatcher(prefetch_below=0.001)
    ready(dispatcher, b"W")
    now = 0.0
    for i in range(4):
        request(dispatcher, b"c%d" % i, now)
    # 0.5 ms a job: the first reply opens the gate, and W is sent all it may hold
    (_, first), *_ = sent(dispatcher)[0]
    now += 0.0005
    finish(dispatcher, b"W", first, now=now)
    jobs, _ = sent(dispatcher)
    assert [j.body for _, j in jobs] == [[b"c1"], [b"c2"], [b"c3"]]
    assert dispatcher.services[SERVICE].prefetch
    # one 20 ms job lifts the average over the limit: the gate closes
    now += 0.020
    finish(dispatcher, b"W", jobs[0][1], now=now)
    assert not dispatcher.services[SERVICE].prefetch
    request(dispatcher, b"c4", now)
    request(dispatcher, b"c5", now)
    assert sent(dispatcher)[0] == []  # W still holds c2 and c3: nothing more is sent to it
    for job in (jobs[1][1], jobs[2][1]):
        now += 0.020
        finish(dispatcher, b"W", job, now=now)
    jobs, _ = sent(dispatcher)
    assert [j.body for _, j in jobs] == [[b"c4"]]  # idle again: one job, not two


def test_an_idle_worker_is_always_used_whatever_the_gate_says():
    dispatcher = make_dispatcher(prefetch_below=0.001)
    ready(dispatcher, b"A")
    ready(dispatcher, b"B")
    request(dispatcher, b"c1")
    request(dispatcher, b"c2")
    jobs, _ = sent(dispatcher)
    assert [(w, j.body) for w, j in jobs] == [(b"A", [b"c1"]), (b"B", [b"c2"])]


def test_a_reload_that_lifts_the_limit_opens_the_gate_and_dispatches():
    dispatcher = make_dispatcher(prefetch_below=0.001)
    ready(dispatcher, b"W")
    request(dispatcher, b"c1")
    request(dispatcher, b"c2")
    assert len(sent(dispatcher)[0]) == 1
    dispatcher.set_limits(limits(worker_credit=4, prefetch_below=0.0), {})
    jobs, _ = sent(dispatcher)
    assert [j.body for _, j in jobs] == [[b"c2"]]


def test_a_worker_busy_with_a_long_job_gets_no_more_even_while_the_gate_is_open():
    """The average learns of a long job only when it ends: meanwhile its worker takes no more."""
    dispatcher = make_dispatcher(prefetch_below=0.001)
    ready(dispatcher, b"A")
    ready(dispatcher, b"B")
    request(dispatcher, b"c0")
    [(worker, first)], _ = sent(dispatcher)
    finish(dispatcher, worker, first, now=0.0005)  # one short job: the gate opens
    assert dispatcher.services[SERVICE].prefetch
    request(dispatcher, b"long", 0.001)
    request(dispatcher, b"s1", 0.001)
    jobs, _ = sent(dispatcher)
    owner = {j.body[0]: w for w, j in jobs}
    finish(dispatcher, owner[b"s1"], jobs[1][1], now=0.0012)  # the other worker is idle again
    request(dispatcher, b"x", 0.0025)  # to the idle worker
    request(dispatcher, b"y", 0.0025)  # no one idle: to a busy one, but not the one on "long"
    jobs, _ = sent(dispatcher)
    assert [(w, j.body) for w, j in jobs] == [(owner[b"s1"], [b"x"]), (owner[b"s1"], [b"y"])]
    request(dispatcher, b"z", 0.004)  # now x has run 1.5 ms too: z waits in the broker
    assert sent(dispatcher)[0] == []
    assert dispatcher.waiting() == 1


# -- compact framing: asked for with the credit header ---------------------------------------------


def test_a_worker_that_asks_for_compact_framing_gets_jobs_in_it_and_may_answer_in_either():
    dispatcher = make_dispatcher()
    dispatcher.on_worker(b"W", encode_ready(SERVICE, credit=2, compact=True), 0.0)
    request(dispatcher, b"c1")
    request(dispatcher, b"c2")
    outbox = dispatcher.take_outbox()
    assert [len(frames) for _, _, frames in outbox] == [2, 2]  # token frame + payload
    first, second = (parse_broker_message(frames) for _, _, frames in outbox)
    assert first.compact
    assert second.compact
    dispatcher.on_worker(b"W", encode_worker_reply(first.address, [b"A"], compact=True), 0.0)
    # Compact framing is an offer, not an obligation: plain MDP answers are still read.
    dispatcher.on_worker(b"W", encode_worker_reply(second.address, [b"B"]), 0.0)
    replies = {peer: parse_client_reply(frames) for _, peer, frames in dispatcher.take_outbox()}
    assert {peer: (r.status, r.body) for peer, r in replies.items()} == {
        b"c1": (Status.OK, [b"A"]),
        b"c2": (Status.OK, [b"B"]),
    }
    assert dispatcher.workers[b"W"].jobs == []


def test_a_worker_that_did_not_ask_gets_mdp_and_is_thrown_out_for_compact_answers():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W", credit=2)
    request(dispatcher, b"c1", flags=FLAG_RETRYABLE)
    [(_, _, frames)] = dispatcher.take_outbox()
    assert frames[0] == b"MDPW02"
    job = parse_broker_message(frames)
    assert not job.compact
    dispatcher.on_worker(b"W", encode_worker_reply(job.address, [b"A"], compact=True), 0.0)
    assert b"W" not in dispatcher.workers
    outbox = dispatcher.take_outbox()
    assert (Port.BACKEND, b"W", encode_disconnect()) in outbox
    # The worker broke the protocol: its job counts as lost (and is retryable here: requeued).
    assert not [peer for port, peer, _ in outbox if port is Port.FRONTEND]
    assert dispatcher.waiting(SERVICE) == 1


def moved(dispatcher: Dispatcher, seen: tuple[int, ...], watch_load: bool) -> bool:
    """scale_moved, against ``seen`` as the master's last look, watching load or not."""
    dispatcher.scale_seen, dispatcher.watch_load = seen, watch_load
    return dispatcher.scale_moved()


def test_scale_inputs_move_when_one_worker_comes_and_another_goes():
    """The autoscaler compares these between looks: a swap must not look like no change."""
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W1")
    before = dispatcher.scale_inputs()
    ready(dispatcher, b"W2")
    dispatcher.on_worker(b"W1", encode_disconnect(), 0.0)
    after = dispatcher.scale_inputs()
    assert len(dispatcher.workers) == 1
    assert after[1:] == before[1:]  # one idle worker, nothing queued: as before
    assert after[0] != before[0]
    assert moved(dispatcher, before, watch_load=False)


def test_scale_moved_watches_load_only_when_asked():
    dispatcher = make_dispatcher()
    ready(dispatcher, b"W1")
    seen = dispatcher.scale_inputs()
    assert not moved(dispatcher, seen, watch_load=True)
    assert moved(dispatcher, (), watch_load=False)  # nothing seen yet
    request(dispatcher, b"c1")  # the idle worker takes it: one idle fewer
    assert not moved(dispatcher, seen, watch_load=False)
    assert moved(dispatcher, seen, watch_load=True)
    assert not moved(dispatcher, dispatcher.scale_inputs(), watch_load=True)
