"""plain_errors = drop: plain and raw clients get no error reply at all (issue 20).

A plain client has no envelope for a status, so an error reaches it as the text
``ERROR <reason>: <message>``, which a client that cannot parse it takes for an answer (the
guide's lpclient crashes on ``ERROR shutting_down`` at a graceful stop). With ``drop`` it gets
nothing, and retries as it would with a dead server; Majordomo clients are answered as ever.
"""

from __future__ import annotations

import pytest
from tests.unit.dispatch_helpers import (
    finish,
    frontend,
    make_dispatcher,
    mdp_request,
    only_job,
    plain_request,
    ready,
    statuses,
)

from zmqserver.config import Config
from zmqserver.errors import ConfigError, Status


def test_errors_for_plain_and_raw_clients_are_dropped_mdp_clients_still_answered():
    dispatcher = make_dispatcher()
    dispatcher.drop_plain_errors = True
    dispatcher.shutdown()
    plain_request(dispatcher, b"plain")
    dispatcher.on_client(b"raw", [b"payload"], 0.0)
    mdp_request(dispatcher, b"mdp")
    assert statuses(dispatcher.take_outbox()) == {b"mdp": Status.SHUTTING_DOWN}
    assert dispatcher.stats.errors == 3


def test_a_plain_job_that_fails_ends_without_a_reply_and_a_success_is_still_sent():
    dispatcher = make_dispatcher()
    dispatcher.drop_plain_errors = True
    ready(dispatcher, b"W")
    plain_request(dispatcher, b"c1", b"boom")
    worker, job = only_job(dispatcher)
    finish(dispatcher, worker, job, [b"ValueError: boom"], status=Status.APP_ERROR)
    assert frontend(dispatcher.take_outbox()) == []
    assert dispatcher.jobs == {}  # the job had its one outcome: the drop
    plain_request(dispatcher, b"c2", b"fine")
    worker, job = only_job(dispatcher)
    finish(dispatcher, worker, job)
    assert frontend(dispatcher.take_outbox()) == [(b"c2", [b"", b"re:fine"])]


def test_queued_plain_jobs_at_a_stop_are_dropped_too():
    dispatcher = make_dispatcher()
    dispatcher.drop_plain_errors = True
    plain_request(dispatcher, b"c1")  # no worker yet: queued
    dispatcher.shutdown()
    assert frontend(dispatcher.take_outbox()) == []
    assert dispatcher.queued() == 0


def test_inband_is_the_default():
    dispatcher = make_dispatcher()
    dispatcher.shutdown()
    plain_request(dispatcher, b"plain")
    ((client, frames),) = frontend(dispatcher.take_outbox())
    assert frames == [b"", b"ERROR shutting_down: server is shutting down"]
    assert Config().plain_errors == "inband"


def test_plain_errors_takes_inband_or_drop():
    assert Config(plain_errors="drop").validate().plain_errors == "drop"
    with pytest.raises(ConfigError, match="plain_errors"):
        Config(plain_errors="silent").validate()
