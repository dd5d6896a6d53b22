"""``Client.submit``'s futures keep the :class:`concurrent.futures.Future` contract.

They are lighter than a plain Future (sync.py, ``PendingReply``): settled and read without a lock
when nothing else waits on them. These tests hold the parts of the Future API a caller may use to
the standard behaviour: callbacks, ``wait``/``as_completed``, ``exception()``, ``result(timeout)``
and ``cancel``, against the scriptable ROUTER of test_client_lib.py.
"""

from __future__ import annotations

import concurrent.futures

import pytest
from tests.integration.test_client_lib import (
    ClientFactory,
    ClientRequest,
    Frames,
    ServeFixture,
    context,
    echo,
    make_client,
    reply_to,
    serve,
    silent,
)

from zmqserver.client import PendingReply
from zmqserver.errors import AppError, Status

__all__ = ["context", "make_client", "serve"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(30)


def fail_on_boom(request: ClientRequest, _: int) -> list[Frames]:
    if request.body == [b"boom"]:
        return [reply_to(request, [], status=Status.APP_ERROR, message="it broke")]
    return [reply_to(request, request.body)]


def test_submit_returns_a_future_with_its_callbacks(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    client = make_client(serve(fail_on_boom).endpoint)
    seen: list[object] = []
    first = client.submit(b"one")
    assert isinstance(first, concurrent.futures.Future)
    assert isinstance(first, PendingReply)
    assert not first.done()
    assert not first.running()
    assert not first.cancelled()
    first.add_done_callback(lambda f: seen.append(f.result()))
    failing = client.submit(b"boom")
    failing.add_done_callback(lambda f: seen.append(type(f.exception())))
    assert first.result() == b"one"
    assert isinstance(failing.exception(), AppError)
    with pytest.raises(AppError, match="it broke"):
        failing.result()
    assert seen == [b"one", AppError]
    # A callback added once done runs at once, as for any Future.
    first.add_done_callback(lambda f: seen.append("late"))
    assert seen[-1] == "late"
    assert "finished" in repr(first)


def test_wait_and_as_completed_see_settled_futures(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    client = make_client(serve(echo).endpoint)
    futures = [client.submit(b"%d" % i) for i in range(8)]
    # Nothing has driven the client yet: nothing is done.
    assert concurrent.futures.wait(futures, timeout=0).done == set()
    futures[-1].result()  # drives the client until the last reply, settling the rest on the way
    done, not_done = concurrent.futures.wait(futures, timeout=0)
    assert done == set(futures)
    assert not not_done
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == sorted(
        b"%d" % i for i in range(8)
    )


def test_result_timeout_raises_timeout_error_and_the_future_stays_pending(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    client = make_client(serve(silent).endpoint, timeout=5)
    future = client.submit(b"anyone?")
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(timeout=0.05)
    with pytest.raises(concurrent.futures.TimeoutError):
        future.exception(timeout=0.05)
    assert not future.done()


def test_cancel_stops_waiting_and_the_late_reply_is_ignored(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    client = make_client(serve(echo).endpoint)
    cancelled = client.submit(b"never mind")
    kept = client.submit(b"kept")
    assert cancelled.cancel()
    assert cancelled.cancelled()
    assert cancelled.done()
    with pytest.raises(concurrent.futures.CancelledError):
        cancelled.result()
    # Its reply arrives while another future drives the client, and is dropped.
    assert kept.result() == b"kept"
    # No pending future is left on the client: a Lazy Pirate stream is allowed again.
    assert list(client.stream(b"next")) == [b"next"]
    assert not kept.cancel()  # already done
    client.close()  # a cancelled future is not failed by close()
    assert cancelled.cancelled()


def stream_three(request: ClientRequest, _: int) -> list[Frames]:
    return [
        reply_to(request, [b"p1"], final=False),
        reply_to(request, [b"p2a", b"p2b"], final=False),
        reply_to(request, [b"end"]),
    ]


def test_a_streamed_reply_to_a_submitted_request_is_joined(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    client = make_client(serve(stream_three).endpoint)
    futures = [client.submit(b"a"), client.submit(b"b")]
    assert [f.result() for f in futures] == [[b"p1", b"p2a", b"p2b", b"end"]] * 2
