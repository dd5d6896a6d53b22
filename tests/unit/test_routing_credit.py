"""Credit-based flow in the routing core: a worker may hold up to ``credit`` jobs at once.

A worker asks for its credit in READY (a credit header after the service frame); the service's
``Limits.worker_credit`` caps it, and a READY without one (any foreign MDP worker) means 1, which
is strict LRU. A worker runs its jobs in the order they were sent, so only the oldest one it holds
may have started: the rules for lost workers and deadlines follow from that. No sockets, no
clocks: frames and ``now`` in, the outbox out.
"""

from __future__ import annotations

from tests.helpers import limits

from zmqserver.errors import Status
from zmqserver.protocol import (
    FLAG_RETRYABLE,
    Disconnect,
    JobRequest,
    encode_client_request,
    encode_disconnect,
    encode_ready,
    encode_worker_reply,
    parse_broker_message,
    parse_client_reply,
)
from zmqserver.routing import Port, Router

SERVICE = b"default"


def make_router(credit: int = 4, heartbeat_interval: float = 1.0, **options: object) -> Router:
    """Without the prefetch gate unless asked (these tests are about what credit allows; the
    gate's own tests are at the end)."""
    options.setdefault("prefetch_below", 0.0)
    return Router(
        SERVICE,
        heartbeat_interval=heartbeat_interval,
        limits=limits(worker_credit=credit, **options),
        now=0.0,
    )


def ready(router: Router, worker: bytes, credit: int = 4, now: float = 0.0) -> None:
    router.on_worker(worker, encode_ready(SERVICE, credit=credit), now)


def request(
    router: Router,
    client: bytes,
    now: float = 0.0,
    *,
    timeout_ms: int = 0,
    flags: int = 0,
) -> None:
    frames = encode_client_request(
        SERVICE, [client], request_id=1, timeout_ms=timeout_ms, flags=flags
    )
    router.on_client(client, frames, now)


def sent(router: Router) -> tuple[list[tuple[bytes, JobRequest]], dict[bytes, Status]]:
    """The jobs sent to workers (in order) and each answered client's status."""
    jobs, answers = [], {}
    for port, peer, frames in router.take_outbox():
        if port is Port.FRONTEND:
            answers[peer] = parse_client_reply(frames).status
        else:
            msg = parse_broker_message(frames)
            if isinstance(msg, JobRequest):
                jobs.append((peer, msg))
    return jobs, answers


def finish(router: Router, worker: bytes, job: JobRequest, now: float = 0.0) -> None:
    router.on_worker(worker, encode_worker_reply(job.address, [b"ok"]), now)


def test_a_worker_takes_up_to_its_credit_then_jobs_queue():
    router = make_router()
    ready(router, b"W", credit=3)
    for client in (b"c1", b"c2", b"c3", b"c4"):
        request(router, client)
    jobs, _ = sent(router)
    assert [(w, j.body) for w, j in jobs] == [(b"W", [b"c1"]), (b"W", [b"c2"]), (b"W", [b"c3"])]
    assert router.waiting() == 1
    assert router.idle_workers() == []  # holding jobs: busy, whatever credit it has left
    finish(router, b"W", jobs[0][1])
    more, answers = sent(router)
    assert answers == {b"c1": Status.OK}
    assert [(w, j.body) for w, j in more] == [(b"W", [b"c4"])]
    assert router.waiting() == 0


def test_the_broker_caps_the_credit_and_a_plain_ready_means_one():
    router = make_router(credit=2)
    ready(router, b"greedy", credit=50)
    router.on_worker(b"plain", encode_ready(SERVICE), 0.0)
    assert router.workers[b"greedy"].credit == 2
    assert router.workers[b"plain"].credit == 1
    # The defaults grant up to 16, behind the prefetch gate.
    default = Router(SERVICE, limits=limits(), now=0.0)
    ready(default, b"W", credit=64)
    assert default.workers[b"W"].credit == 16


def test_an_idle_worker_is_preferred_then_the_least_loaded_in_lru_order():
    router = make_router()
    ready(router, b"A")
    ready(router, b"B")
    ready(router, b"C")
    for n in range(7):
        request(router, b"c%d" % n)
    jobs, _ = sent(router)
    # Each idle worker first (LRU), then the ones holding one job, in the order they got it...
    assert [w for w, _ in jobs] == [b"A", b"B", b"C", b"A", b"B", b"C", b"A"]
    # ...and a worker that finishes a job is the least loaded: it gets the next one.
    finish(router, b"C", jobs[2][1])
    request(router, b"late")
    more, _ = sent(router)
    assert [w for w, _ in more] == [b"C"]


def test_a_freed_worker_with_no_jobs_left_goes_before_busy_ones():
    router = make_router()
    ready(router, b"A")
    ready(router, b"B")
    request(router, b"c1")
    request(router, b"c2")
    request(router, b"c3")
    jobs, _ = sent(router)
    assert [w for w, _ in jobs] == [b"A", b"B", b"A"]
    finish(router, b"B", jobs[1][1])
    assert router.idle_workers() == [b"B"]
    request(router, b"c4")
    more, _ = sent(router)
    assert [w for w, _ in more] == [b"B"]


def test_a_dead_worker_fails_its_running_job_and_reruns_the_ones_behind_it_uncounted():
    router = make_router()
    ready(router, b"W")
    for client in (b"c1", b"c2", b"c3"):
        request(router, client)  # not retryable
    sent(router)
    router.worker_gone(b"W", "killed")
    _, answers = sent(router)
    assert answers == {b"c1": Status.WORKER_LOST}  # c1 may have run: not rerun
    assert router.waiting() == 2
    ready(router, b"V")
    jobs, _ = sent(router)
    assert [j.body for _, j in jobs] == [[b"c2"], [b"c3"]]  # in their order, at the head
    assert [router.jobs[j.address].attempts for _, j in jobs] == [1, 1]
    for _, job in jobs:
        finish(router, b"V", job)
    _, answers = sent(router)
    assert answers == {b"c2": Status.OK, b"c3": Status.OK}


def test_a_dead_worker_retries_its_running_job_at_the_head_when_allowed():
    router = make_router()
    ready(router, b"W")
    request(router, b"c1", flags=FLAG_RETRYABLE)
    request(router, b"c2")
    sent(router)
    request(router, b"c3")  # held too (credit 4)
    sent(router)
    router.worker_gone(b"W", "killed")
    ready(router, b"V")
    jobs, answers = sent(router)
    assert answers == {}
    assert [j.body for _, j in jobs] == [[b"c1"], [b"c2"], [b"c3"]]
    assert [router.jobs[j.address].attempts for _, j in jobs] == [2, 1, 1]


def test_disconnect_hands_back_every_held_job_uncounted():
    router = make_router()
    ready(router, b"W")
    for client in (b"c1", b"c2", b"c3"):
        request(router, client)
    first, _ = sent(router)
    finish(router, b"W", first[0][1])
    router.on_worker(b"W", encode_disconnect(), 0.0)
    _, answers = sent(router)
    assert answers == {b"c1": Status.OK}
    ready(router, b"V")
    jobs, _ = sent(router)
    assert [j.body for _, j in jobs] == [[b"c2"], [b"c3"]]
    assert [router.jobs[j.address].attempts for _, j in jobs] == [1, 1]


def test_undelivered_hands_back_a_lone_job_and_holds_several_until_the_worker_is_gone():
    router = make_router()
    ready(router, b"A")
    request(router, b"c1")
    sent(router)
    router.worker_gone(b"A", "unreachable", undelivered=True)
    assert router.waiting() == 1  # never delivered: back in the queue, not lost
    ready(router, b"B")
    ready(router, b"C")
    request(router, b"c2")
    request(router, b"c3")
    jobs, _ = sent(router)
    assert [(w, j.body) for w, j in jobs] == [(b"B", [b"c1"]), (b"C", [b"c2"]), (b"B", [b"c3"])]
    # B holds c1 and c3, and the send of c3 failed: c1 may have started, or B may have left
    # with a DISCONNECT the router has not read yet. It gets nothing more until that is known.
    router.worker_gone(b"B", "unreachable", undelivered=True)
    assert sent(router) == ([], {})
    assert b"B" in router.workers
    request(router, b"c4")
    request(router, b"c5")
    jobs, _ = sent(router)
    assert [w for w, _ in jobs] == [b"C", b"C"]  # not B
    router.on_worker(b"B", encode_disconnect(), 0.5)  # it left in an orderly way
    jobs, answers = sent(router)
    assert answers == {}
    assert [(w, j.body) for w, j in jobs] == [(b"C", [b"c1"])]  # C's last credit
    assert [job.body for job in router.services[SERVICE].queue] == [[b"c3"]]
    assert router.jobs[jobs[0][1].address].attempts == 1  # only C counts: A, B never ran it


def test_an_unreachable_worker_holding_several_that_dies_loses_only_the_oldest():
    router = make_router()
    ready(router, b"B")
    request(router, b"c1")
    request(router, b"c2")
    sent(router)
    router.worker_gone(b"B", "unreachable", undelivered=True)
    router.set_limits(limits(worker_credit=4), {})  # a reload must not make it reachable again
    request(router, b"c3")
    assert sent(router) == ([], {})
    router.worker_gone(b"B", "process exited with signal SIGKILL")
    _, answers = sent(router)
    assert answers == {b"c1": Status.WORKER_LOST}
    assert router.waiting() == 2


def test_silent_workers_do_not_get_each_others_jobs():
    router = make_router()
    ready(router, b"A", now=0.0)
    for client in (b"c1", b"c2"):
        request(router, client)
    ready(router, b"B", now=0.0)
    sent(router)
    router.on_tick(10.0)  # both silent: c2 (never started) must not go to B, about to go too
    jobs, answers = sent(router)
    assert jobs == []
    assert answers == {b"c1": Status.WORKER_LOST}
    assert sorted(router.take_kills()) == [b"A", b"B"]
    assert router.waiting() == 1


def test_a_job_expiring_behind_another_is_answered_but_does_not_kill_the_worker():
    router = make_router(kill_grace=1.0, heartbeat_interval=10.0)  # no heartbeat expiry here
    ready(router, b"W")
    request(router, b"long", timeout_ms=100_000)
    request(router, b"short", timeout_ms=2_000)
    jobs, _ = sent(router)
    router.on_tick(2.0)
    _, answers = sent(router)
    assert answers == {b"short": Status.EXPIRED}
    router.on_tick(3.5)  # past short's deadline + grace: it has not started, no kill
    assert router.take_kills() == []
    finish(router, b"W", jobs[0][1], now=4.0)  # "short" starts now and gets kill_grace
    _, answers = sent(router)
    assert answers == {b"long": Status.OK}
    router.on_tick(4.5)
    assert router.take_kills() == []
    router.on_tick(5.1)
    assert router.take_kills() == [b"W"]
    assert b"W" not in router.workers


def test_a_late_reply_for_a_job_that_expired_behind_another_is_dropped_and_frees_credit():
    router = make_router(credit=2)
    ready(router, b"W", credit=2)
    request(router, b"long", timeout_ms=100_000)
    request(router, b"short", timeout_ms=1_000)
    request(router, b"next")
    jobs, _ = sent(router)
    router.on_tick(1.0)
    sent(router)
    finish(router, b"W", jobs[0][1], now=1.2)
    finish(router, b"W", jobs[1][1], now=1.3)
    more, answers = sent(router)
    assert answers == {b"long": Status.OK}  # and nothing more for "short"
    assert [j.body for _, j in more] == [[b"next"]]


def test_lowering_the_cap_on_reload_applies_as_jobs_finish():
    router = make_router()
    ready(router, b"W")
    for client in (b"c1", b"c2", b"c3"):
        request(router, client)
    jobs, _ = sent(router)
    router.set_limits(limits(worker_credit=1), {})
    assert router.workers[b"W"].credit == 1
    request(router, b"c4")
    finish(router, b"W", jobs[0][1])
    finish(router, b"W", jobs[1][1])
    more, _ = sent(router)
    assert more == []  # still holds c3: no room at credit 1
    finish(router, b"W", jobs[2][1])
    more, _ = sent(router)
    assert [j.body for _, j in more] == [[b"c4"]]


def test_max_queue_counts_only_jobs_no_worker_could_take():
    router = make_router(max_queue=1)
    ready(router, b"W", credit=2)
    for client in (b"c1", b"c2", b"c3", b"c4"):
        request(router, client)
    _, answers = sent(router)
    assert answers == {b"c4": Status.QUEUE_FULL}


def test_max_queue_holds_while_the_prefetch_gate_keeps_spare_credit_unused():
    """A busy worker with credit to spare is placed, but while jobs are long the gate gives it
    nothing more, so new jobs queue: they count against max_queue like any others. (The limit
    once applied only when no worker was placed, so it never held with the default credit while
    jobs ran long: the broker's queue grew without bound.)"""
    router = make_router(prefetch_below=0.001, max_queue=2)
    ready(router, b"W", credit=4)
    for client in (b"c1", b"c2", b"c3", b"c4", b"c5", b"c6"):
        request(router, client)
    jobs, answers = sent(router)
    assert [j.body for _, j in jobs] == [[b"c1"]]
    assert router.services[SERVICE].placed  # W could hold more, had the gate been open
    assert router.waiting() == 2
    assert answers == {c: Status.QUEUE_FULL for c in (b"c4", b"c5", b"c6")}


def test_a_disconnecting_worker_is_not_sent_more_and_shutdown_fails_held_jobs_once():
    router = make_router()
    ready(router, b"W")
    request(router, b"c1")
    request(router, b"c2")
    sent(router)
    router.shutdown()
    router.on_worker(b"W", encode_disconnect(), 0.0)
    _, answers = sent(router)
    assert answers == {b"c1": Status.SHUTTING_DOWN, b"c2": Status.SHUTTING_DOWN}


def test_fail_running_answers_every_held_job_and_frees_the_worker():
    router = make_router()
    ready(router, b"W")
    request(router, b"c1")
    request(router, b"c2")
    sent(router)
    router.fail_running(Status.SHUTTING_DOWN, "stop")
    _, answers = sent(router)
    assert answers == {b"c1": Status.SHUTTING_DOWN, b"c2": Status.SHUTTING_DOWN}
    assert router.jobs == {}
    assert router.idle_workers() == [b"W"]


def test_the_deadlines_forget_finished_jobs_and_their_bodies():
    router = Router(SERVICE, limits=limits(job_timeout=60.0), now=0.0)
    ready(router, b"W", credit=1)
    sent(router)
    for n in range(10_000):
        router.on_client(b"c", [b"", b"x" * 100], n * 0.001)
        ((_, _, frames),) = router.take_outbox()
        finish(router, b"W", parse_broker_message(frames), now=n * 0.001)  # type: ignore[arg-type]
        router.take_outbox()
    held = [t[2] for t in router._timers] + router._due[router._due_head :]
    assert len(held) <= 2 * 1024 + 2
    assert all(not job.body for job in held)


def test_messages_for_a_worker_holding_jobs_are_jobs_only():
    """What makes ``undelivered`` exact for a worker holding one job: no heartbeat goes to a
    worker that holds any."""
    router = make_router()
    ready(router, b"W")
    request(router, b"c1")
    sent(router)
    router.on_tick(1.0)
    assert not [m for m in router.take_outbox() if m[0] is Port.BACKEND]
    router.on_worker(b"W", encode_disconnect(), 1.0)
    assert not any(isinstance(parse_broker_message(f), Disconnect) for _, _, f in router.outbox)


# -- the prefetch gate: credit beyond one job is used only while jobs are short --------------


def test_until_a_job_has_been_timed_dispatch_is_strict_lru():
    router = make_router(prefetch_below=0.001)
    ready(router, b"W")
    for client in (b"c1", b"c2"):
        request(router, client)
    jobs, _ = sent(router)
    assert [j.body for _, j in jobs] == [[b"c1"]]  # c2 waits for W, though W asked for 4
    assert router.waiting() == 1


def test_short_jobs_open_the_gate_and_long_ones_close_it():
    router = make_router(prefetch_below=0.001)
    ready(router, b"W")
    now = 0.0
    for i in range(4):
        request(router, b"c%d" % i, now)
    # 0.5 ms a job: the first reply opens the gate, and W is sent all it may hold
    (_, first), *_ = sent(router)[0]
    now += 0.0005
    finish(router, b"W", first, now)
    jobs, _ = sent(router)
    assert [j.body for _, j in jobs] == [[b"c1"], [b"c2"], [b"c3"]]
    assert router.services[SERVICE].prefetch
    # one 20 ms job lifts the average over the limit: the gate closes
    now += 0.020
    finish(router, b"W", jobs[0][1], now)
    assert not router.services[SERVICE].prefetch
    request(router, b"c4", now)
    request(router, b"c5", now)
    assert sent(router)[0] == []  # W still holds c2 and c3: nothing more is sent to it
    for job in (jobs[1][1], jobs[2][1]):
        now += 0.020
        finish(router, b"W", job, now)
    jobs, _ = sent(router)
    assert [j.body for _, j in jobs] == [[b"c4"]]  # idle again: one job, not two


def test_an_idle_worker_is_always_used_whatever_the_gate_says():
    router = make_router(prefetch_below=0.001)
    ready(router, b"A")
    ready(router, b"B")
    request(router, b"c1")
    request(router, b"c2")
    jobs, _ = sent(router)
    assert [(w, j.body) for w, j in jobs] == [(b"A", [b"c1"]), (b"B", [b"c2"])]


def test_a_reload_that_lifts_the_limit_opens_the_gate_and_dispatches():
    router = make_router(prefetch_below=0.001)
    ready(router, b"W")
    request(router, b"c1")
    request(router, b"c2")
    assert len(sent(router)[0]) == 1
    router.set_limits(limits(worker_credit=4, prefetch_below=0.0), {})
    jobs, _ = sent(router)
    assert [j.body for _, j in jobs] == [[b"c2"]]


def test_a_worker_busy_with_a_long_job_gets_no_more_even_while_the_gate_is_open():
    """The average learns of a long job only when it ends: meanwhile its worker takes no more."""
    router = make_router(prefetch_below=0.001)
    ready(router, b"A")
    ready(router, b"B")
    request(router, b"c0")
    [(worker, first)], _ = sent(router)
    finish(router, worker, first, 0.0005)  # one short job: the gate opens
    assert router.services[SERVICE].prefetch
    request(router, b"long", 0.001)
    request(router, b"s1", 0.001)
    jobs, _ = sent(router)
    owner = {j.body[0]: w for w, j in jobs}
    finish(router, owner[b"s1"], jobs[1][1], 0.0012)  # the other worker is idle again
    request(router, b"x", 0.0025)  # to the idle worker
    request(router, b"y", 0.0025)  # no one idle: to a busy one, but not the one on "long"
    jobs, _ = sent(router)
    assert [(w, j.body) for w, j in jobs] == [(owner[b"s1"], [b"x"]), (owner[b"s1"], [b"y"])]
    request(router, b"z", 0.004)  # now x has run 1.5 ms too: z waits in the broker
    assert sent(router)[0] == []
    assert router.waiting() == 1


# -- compact framing: asked for with the credit header ---------------------------------------------


def test_a_worker_that_asks_for_compact_framing_gets_jobs_in_it_and_may_answer_in_either():
    router = make_router()
    router.on_worker(b"W", encode_ready(SERVICE, credit=2, compact=True), 0.0)
    request(router, b"c1")
    request(router, b"c2")
    outbox = router.take_outbox()
    assert [len(frames) for _, _, frames in outbox] == [2, 2]  # token frame + payload
    first, second = (parse_broker_message(frames) for _, _, frames in outbox)
    assert first.compact
    assert second.compact
    router.on_worker(b"W", encode_worker_reply(first.address, [b"A"], compact=True), 0.0)
    # Compact framing is an offer, not an obligation: plain MDP answers are still read.
    router.on_worker(b"W", encode_worker_reply(second.address, [b"B"]), 0.0)
    replies = {peer: parse_client_reply(frames) for _, peer, frames in router.take_outbox()}
    assert {peer: (r.status, r.body) for peer, r in replies.items()} == {
        b"c1": (Status.OK, [b"A"]),
        b"c2": (Status.OK, [b"B"]),
    }
    assert router.workers[b"W"].jobs == []


def test_a_worker_that_did_not_ask_gets_mdp_and_is_thrown_out_for_compact_answers():
    router = make_router()
    ready(router, b"W", credit=2)
    request(router, b"c1", flags=FLAG_RETRYABLE)
    [(_, _, frames)] = router.take_outbox()
    assert frames[0] == b"MDPW02"
    job = parse_broker_message(frames)
    assert not job.compact
    router.on_worker(b"W", encode_worker_reply(job.address, [b"A"], compact=True), 0.0)
    assert b"W" not in router.workers
    outbox = router.take_outbox()
    assert (Port.BACKEND, b"W", encode_disconnect()) in outbox
    # The worker broke the protocol: its job counts as lost (and is retryable here: requeued).
    assert not [peer for port, peer, _ in outbox if port is Port.FRONTEND]
    assert router.waiting(SERVICE) == 1


def moved(router: Router, seen: tuple[int, ...], watch_load: bool) -> bool:
    """scale_moved, against ``seen`` as the master's last look, watching load or not."""
    router.scale_seen, router.watch_load = seen, watch_load
    return router.scale_moved()


def test_scale_inputs_move_when_one_worker_comes_and_another_goes():
    """The autoscaler compares these between looks: a swap must not look like no change."""
    router = make_router()
    ready(router, b"W1")
    before = router.scale_inputs()
    ready(router, b"W2")
    router.on_worker(b"W1", encode_disconnect(), 0.0)
    after = router.scale_inputs()
    assert len(router.workers) == 1
    assert after[1:] == before[1:]  # one idle worker, nothing queued: as before
    assert after[0] != before[0]
    assert moved(router, before, watch_load=False)


def test_scale_moved_watches_load_only_when_asked():
    router = make_router()
    ready(router, b"W1")
    seen = router.scale_inputs()
    assert not moved(router, seen, watch_load=True)
    assert moved(router, (), watch_load=False)  # nothing seen yet
    request(router, b"c1")  # the idle worker takes it: one idle fewer
    assert not moved(router, seen, watch_load=False)
    assert moved(router, seen, watch_load=True)
    assert not moved(router, router.scale_inputs(), watch_load=True)
