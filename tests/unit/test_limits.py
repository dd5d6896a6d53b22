"""Issue 18's bounds, below the sockets: frame counts and the per-frame charge in the dispatch
core, the max_frames option, and the fd limit the server sets itself."""

from __future__ import annotations

import resource

import pytest
from tests.helpers import limits
from tests.unit.dispatch_helpers import (
    frontend,
    jobs_sent,
    make_dispatcher,
    ready,
    statuses,
)

from zmqserver._process import FD_LIMIT_CAP, fd_limit_target
from zmqserver.broker.state import FRAME_OVERHEAD, charged_size
from zmqserver.config import Config
from zmqserver.errors import ConfigError, Status
from zmqserver.protocol import encode_client_request, parse_client_reply

# -- max_frames -----------------------------------------------------------------------------------


def test_the_default_is_64_frames():
    assert Config().max_frames == 64
    assert limits().max_frames == 64


def test_a_request_over_max_frames_is_refused_too_large_and_never_runs():
    dispatcher = make_dispatcher(limits=limits(max_frames=10))
    ready(dispatcher, b"w1")
    # Ten frames in all: the envelope (MDPC02, REQUEST, service) and seven of body.
    dispatcher.on_client(b"ok", encode_client_request(b"default", [b""] * 7), 0.0)
    # Twelve with the header frame: more than ten (the shell hands on at most eleven of a
    # longer message: it keeps one past the limit, so the core can tell).
    dispatcher.on_client(b"long", encode_client_request(b"default", [b""] * 7, request_id=5), 0.0)
    out = dispatcher.take_outbox()
    assert [peer for peer, _ in jobs_sent(out)] == [b"w1"]
    assert statuses(out) == {b"long": Status.TOO_LARGE}
    ((_, frames),) = frontend(out)
    reply = parse_client_reply(frames)
    assert reply.request_id == 5  # the client can match it
    assert reply.body == [b"request of more than 10 frames exceeds max_frames (10)"]
    assert dispatcher.stats.errors == 1
    assert dispatcher.waiting() == 0


def test_a_plain_request_over_max_frames_gets_a_plain_error():
    dispatcher = make_dispatcher(limits=limits(max_frames=8))
    dispatcher.on_client(b"req", [b"", *[b"x"] * 8], 0.0)  # delimiter + 8 frames = 9
    ((peer, frames),) = frontend(dispatcher.take_outbox())
    assert peer == b"req"
    assert frames[0] == b""
    assert frames[1].startswith(b"ERROR too_large: request of more than 8 frames")


def test_max_frames_zero_is_no_limit():
    dispatcher = make_dispatcher(limits=limits(max_frames=0, max_message_size=0))
    ready(dispatcher, b"w1")
    dispatcher.on_client(b"c", [b"", *[b""] * 10_000], 0.0)
    assert [peer for peer, _ in jobs_sent(dispatcher.take_outbox())] == [b"w1"]


# -- the per-frame charge against max_message_size ----------------------------------------------


def test_each_frame_is_charged_its_overhead():
    assert FRAME_OVERHEAD == 64
    assert charged_size([]) == 0
    assert charged_size([b"", b""]) == 2 * FRAME_OVERHEAD
    assert charged_size([b"abc"]) == 3 + FRAME_OVERHEAD


def test_empty_frames_are_not_free():
    """Issue 18: 3 million empty frames counted as 0 bytes against max_message_size."""
    dispatcher = make_dispatcher(limits=limits(max_frames=0, max_message_size=64 * 1000))
    ready(dispatcher, b"w1")
    dispatcher.on_client(b"fits", [b"", *[b""] * 1000], 0.0)
    dispatcher.on_client(b"over", [b"", *[b""] * 1001], 0.0)
    out = dispatcher.take_outbox()
    assert [peer for peer, _ in jobs_sent(out)] == [b"w1"]
    ((peer, frames),) = frontend(out)
    assert peer == b"over"
    assert frames[1] == (
        b"ERROR too_large: request of 0 bytes in 1001 frames (counted as 64064: 64 more a "
        b"frame) exceeds max_message_size (64000 bytes)"
    )


# -- the option ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 8, 64, 100_000])
def test_max_frames_accepts_zero_or_at_least_eight(value):
    Config(max_frames=value).validate()


@pytest.mark.parametrize("value", [1, 7, -1, True, 2.5])
def test_max_frames_refuses_what_would_cut_the_envelope_or_is_no_count(value):
    with pytest.raises(ConfigError, match="max_frames"):
        Config(max_frames=value).validate()


# -- the fd limit -------------------------------------------------------------------------------

INF = resource.RLIM_INFINITY


@pytest.mark.parametrize(
    ("soft", "hard", "target"),
    [
        (1024, 524288, 524288),  # the usual: raised to the hard limit
        (1024, 4096, 4096),
        (4096, 4096, None),  # soft == hard: nothing to do
        (1024, INF, FD_LIMIT_CAP),  # unlimited hard: the cap (RLIM_INFINITY is refused)
        (1024, 1 << 30, FD_LIMIT_CAP),  # a huge hard limit: the cap
        (FD_LIMIT_CAP, INF, None),
        (2 * FD_LIMIT_CAP, INF, None),  # never lowered
        (INF, INF, None),
    ],
)
def test_fd_limit_target(soft, hard, target):
    assert fd_limit_target(soft, hard, INF) == target


def test_fd_limit_target_takes_the_platforms_infinity():
    assert fd_limit_target(10, 7, infinity=7) == FD_LIMIT_CAP
