"""The blocking Client and ``zmq-client`` against a real ZeroMQ ROUTER that each test scripts.

The "server" here is not zmqserver's broker: it is a ROUTER socket bound on 127.0.0.1 and served
from a thread by a handler the test writes, using zmqserver.protocol to decode requests and encode
replies. That makes the client's behaviour against a slow, silent, confused or lying server easy
to stage, which a real broker would make hard.

Hygiene: every socket is closed with linger 0, the server thread is joined with a timeout, and the
per-test Context is terminated under a timeout too, so a leaked socket fails the test instead of
hanging the run.
"""

from __future__ import annotations

import asyncio
import io
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from zmqserver.client import AsyncClient, Client
from zmqserver.client.cli import client_main
from zmqserver.errors import (
    AppError,
    Closed,
    ProtocolError,
    QueueFull,
    RequestTimeout,
    ServerError,
    Status,
    UnknownService,
)
from zmqserver.protocol import (
    FLAG_RETRYABLE,
    ClientRequest,
    Form,
    encode_client_reply,
    parse_client_request,
)

Frames = list[bytes]


@dataclass(frozen=True)
class Received:
    """One request as the fake server saw it."""

    peer: bytes  # the client socket's routing id
    request: ClientRequest


#: A handler gets the request and how many requests arrived before it; it returns the messages
#: (frame lists, without routing id) to send back, in order, possibly none.
Handler = Callable[[ClientRequest, int], list[Frames]]


def reply_to(
    request: ClientRequest,
    body: Frames,
    *,
    status: Status = Status.OK,
    message: str = "",
    final: bool = True,
    request_id: int | None = None,
) -> Frames:
    """The reply a zmqserver broker would send to ``request`` (same form, id echoed)."""
    return encode_client_reply(
        request.form,
        request.service,
        body,
        request_id=request.request_id if request_id is None else request_id,
        status=status,
        message=message,
        final=final,
    )


def echo(request: ClientRequest, _: int) -> list[Frames]:
    return [reply_to(request, request.body)]


def silent(request: ClientRequest, _: int) -> list[Frames]:
    return []


class FakeServer:
    """A ROUTER on a random 127.0.0.1 port, answered by ``handler`` in its own thread.

    The socket is created, used and closed in that thread (ZeroMQ sockets are not thread-safe);
    the test thread stops it through an inproc PAIR, so the server blocks in one poll on both
    sockets and never polls on a timer.
    """

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], handler: Handler) -> None:
        self.context = context
        self.handler = handler
        self.received: list[Received] = []
        self.connections = 0  # TCP connections accepted: one per socket the client opened
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._control_address = f"inproc://fake-server-control-{id(self)}"
        self._control = context.socket(zmq.PAIR)
        self._control.setsockopt(zmq.LINGER, 0)
        self._control.bind(self._control_address)
        ports: queue.Queue[int] = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(ports,), daemon=True)
        self._thread.start()
        try:
            self.port = ports.get(timeout=10)
        except queue.Empty:
            self.stop()
            raise RuntimeError("fake server did not start") from None
        self.endpoint = f"tcp://127.0.0.1:{self.port}"

    def _run(self, ports: queue.Queue[int]) -> None:
        router = self.context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        # Like zmqserver's broker: a client reconnecting with its routing id takes over.
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        monitor = router.get_monitor_socket(zmq.EVENT_ACCEPTED)
        control = self.context.socket(zmq.PAIR)
        control.setsockopt(zmq.LINGER, 0)
        try:
            control.connect(self._control_address)
            ports.put(router.bind_to_random_port("tcp://127.0.0.1"))
            poller = zmq.Poller()
            poller.register(router, zmq.POLLIN)
            poller.register(control, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            while True:
                events = dict(poller.poll())
                if control in events:
                    return
                if monitor in events:
                    recv_monitor_message(monitor)
                    with self._cond:
                        self.connections += 1
                        self._cond.notify_all()
                if router in events:
                    peer, *frames = router.recv_multipart()
                    request = parse_client_request(frames)
                    with self._cond:
                        count = len(self.received)
                        self.received.append(Received(peer, request))
                        self._cond.notify_all()
                    for message in self.handler(request, count):
                        router.send_multipart([peer, *message])
        except BaseException as exc:  # reported by stop(), in the test's thread
            self.error = exc
        finally:
            router.disable_monitor()
            monitor.close(linger=0)
            router.close(linger=0)
            control.close(linger=0)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` requests arrived; return them all."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.received) >= count, timeout), (
                f"expected {count} requests, got {len(self.received)}"
            )
            return list(self.received)

    def wait_connections(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` client sockets have connected (each attempt's fresh socket)."""
        with self._cond:
            assert self._cond.wait_for(lambda: self.connections >= count, timeout), (
                f"expected {count} connections, got {self.connections}"
            )

    def stop(self) -> None:
        if self._thread.is_alive():
            self._control.send(b"stop")
            self._thread.join(timeout=10)
        self._control.close(linger=0)
        assert not self._thread.is_alive(), "fake server thread did not stop"
        if self.error is not None:
            raise self.error


def term_with_timeout(context: zmq.Context[zmq.Socket[bytes]], timeout: float = 10.0) -> None:
    """Terminate ``context``; fail (instead of hanging) if a socket was left open."""
    thread = threading.Thread(target=context.term, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "context.term() blocked: a socket was left open"


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    term_with_timeout(ctx)


@pytest.fixture
def serve(
    context: zmq.Context[zmq.Socket[bytes]],
) -> Iterator[Callable[[Handler], FakeServer]]:
    servers: list[FakeServer] = []

    def start(handler: Handler) -> FakeServer:
        server = FakeServer(context, handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def make_client(
    context: zmq.Context[zmq.Socket[bytes]],
) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(endpoint: str, **kwargs: object) -> Client:
        client = Client(endpoint, context=context, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


ServeFixture = Callable[[Handler], FakeServer]
ClientFactory = Callable[..., Client]


# -- replies --------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_one_frame_reply(serve: ServeFixture, make_client: ClientFactory) -> None:
    server = serve(echo)
    client = make_client(server.endpoint, timeout=5.0, retries=3)
    assert client.request(b"hello") == b"hello"
    assert client.request("h\u00e9llo") == "h\u00e9llo".encode()
    first, second = server.wait_for(2)
    request = first.request
    assert request.form is Form.MDP02
    assert request.service == b""  # the server's default service
    assert request.body == [b"hello"]
    assert request.timeout_ms == 14750  # 3 attempts of 5 s, less a 0.25 s margin
    assert request.flags == FLAG_RETRYABLE
    assert request.request_id is not None
    # A new request takes the next id; both went over the same socket.
    assert second.request.request_id == (request.request_id + 1) % 2**64
    assert second.peer == first.peer


@pytest.mark.timeout(30)
def test_multi_frame_request_and_reply(serve: ServeFixture, make_client: ClientFactory) -> None:
    server = serve(echo)
    client = make_client(server.endpoint, service="echo")
    assert client.request([b"a", "b", b""]) == [b"a", b"b", b""]
    (received,) = server.wait_for(1)
    assert received.request.service == b"echo"


@pytest.mark.timeout(30)
def test_empty_reply_is_an_empty_list(serve: ServeFixture, make_client: ClientFactory) -> None:
    server = serve(lambda request, _: [reply_to(request, [])])
    client = make_client(server.endpoint)
    assert client.request(b"x") == []


@pytest.mark.timeout(30)
def test_single_attempt_is_not_marked_retryable(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    server = serve(echo)
    client = make_client(server.endpoint, retries=1)
    client.request(b"x")
    (received,) = server.wait_for(1)
    assert received.request.flags == 0


@pytest.mark.timeout(30)
def test_app_error_raises_app_error(serve: ServeFixture, make_client: ClientFactory) -> None:
    def handler(request: ClientRequest, count: int) -> list[Frames]:
        if count == 0:
            return [reply_to(request, [], status=Status.APP_ERROR, message="ValueError: boom")]
        return echo(request, count)

    server = serve(handler)
    client = make_client(server.endpoint)
    with pytest.raises(AppError) as info:
        client.request(b"job")
    assert info.value.message == "ValueError: boom"
    assert info.value.reason == "app_error"
    # An error reply is a complete answer: the client carries on, on the same socket.
    assert client.request(b"next") == b"next"
    first, second = server.wait_for(2)
    assert first.peer == second.peer


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("status", "exc_type"),
    [(Status.UNKNOWN_SERVICE, UnknownService), (Status.QUEUE_FULL, QueueFull)],
)
def test_server_error_statuses(
    serve: ServeFixture,
    make_client: ClientFactory,
    status: Status,
    exc_type: type[ServerError],
) -> None:
    server = serve(lambda request, _: [reply_to(request, [], status=status, message="nope")])
    client = make_client(server.endpoint, service="nosuch")
    with pytest.raises(exc_type, match="nope"):
        client.request(b"job")


# -- Lazy Pirate ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_silent_server_times_out_after_exactly_retries_sends(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    server = serve(silent)
    timeout, retries = 0.2, 3
    client = make_client(server.endpoint, timeout=timeout, retries=retries)
    started = time.monotonic()
    with pytest.raises(RequestTimeout) as info:
        client.request(b"anyone?")
    elapsed = time.monotonic() - started
    # The promise (docs/reliability.md section 1, RequestTimeout): the client waits out each of
    # its attempts, then gives up, after timeout x retries. The upper margin is for a loaded box.
    assert timeout * retries <= elapsed < timeout * retries + 5.0
    message = str(info.value)
    assert server.endpoint in message
    assert "3 attempts" in message
    assert "0.2 s" in message
    # All sends happened before request() raised, so no fourth can still be on its way.
    received = server.wait_for(3)
    assert len(received) == 3
    assert len({r.request.request_id for r in received}) == 1  # one request, three attempts
    # Each attempt goes out on a fresh socket, all with the client's one routing id, so the
    # broker can recognise the resends.
    assert {r.peer for r in received} == {client.identity}


@pytest.mark.timeout(30)
def test_ctrl_c_interrupts_a_client_waiting_for_a_reply(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    # The one-at-a-time client waits inside libzmq's poll, called from C: a signal must still
    # end the wait at once, not when the attempt's timeout runs out. Python's own Ctrl-C
    # handler for the test's length: a process started with SIGINT ignored (a background job
    # of a non-interactive shell, as under some CI runners) keeps ignoring it otherwise.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    server = serve(silent)
    client = make_client(server.endpoint, timeout=20, retries=1)
    main = threading.main_thread().ident
    assert main is not None
    # To the main thread, where the client waits (as Ctrl-C reaches a program that has no threads).
    timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            client.request(b"anyone?")
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 10  # well before the 20 s timeout


@pytest.mark.timeout(30)
def test_answer_to_the_second_attempt_succeeds(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    server = serve(lambda request, count: [] if count == 0 else echo(request, count))
    client = make_client(server.endpoint, timeout=0.3, retries=3)
    started = time.monotonic()
    assert client.request(b"again") == b"again"
    assert time.monotonic() - started >= 0.3  # the resend waited out the first attempt
    first, second = server.wait_for(2)
    assert first.request.request_id == second.request.request_id
    assert first.peer == second.peer == client.identity  # same routing id...
    server.wait_connections(2)  # ...on a fresh socket


@pytest.mark.timeout(30)
def test_stale_reply_with_old_request_id_is_ignored(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    def handler(request: ClientRequest, _: int) -> list[Frames]:
        assert request.request_id is not None
        old = (request.request_id - 1) % 2**64
        return [
            reply_to(request, [b"stale"], request_id=old),
            reply_to(request, [], status=Status.APP_ERROR, message="old", request_id=old),
            reply_to(request, [b"fresh"]),
        ]

    server = serve(handler)
    client = make_client(server.endpoint, timeout=5.0)
    assert client.request(b"x") == b"fresh"
    assert client.request(b"y") == b"fresh"


@pytest.mark.timeout(30)
def test_new_socket_after_timeout_is_kept_for_next_request(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    # The request that timed out must not be delivered again later: its socket is gone.
    server = serve(lambda request, count: [] if count == 0 else echo(request, count))
    client = make_client(server.endpoint, timeout=0.2, retries=1)
    with pytest.raises(RequestTimeout, match="1 attempt "):
        client.request(b"lost")
    assert client.request(b"found") == b"found"
    first, second = server.wait_for(2)
    server.wait_connections(2)
    assert second.request.body == [b"found"]


@pytest.mark.timeout(30)
def test_broken_reply_raises_protocol_error_and_socket_is_replaced(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    def handler(request: ClientRequest, count: int) -> list[Frames]:
        if count == 0:
            return [[b"", b"not MDP at all"]]
        return echo(request, count)

    server = serve(handler)
    client = make_client(server.endpoint)
    with pytest.raises(ProtocolError):
        client.request(b"x")
    assert client.request(b"y") == b"y"
    server.wait_for(2)
    server.wait_connections(2)


# -- streaming ------------------------------------------------------------------------------------


def streamer(final_body: Frames) -> Handler:
    def handler(request: ClientRequest, _: int) -> list[Frames]:
        return [
            reply_to(request, [b"p1"], final=False),
            reply_to(request, [b"p2a", b"p2b"], final=False),
            reply_to(request, final_body),
        ]

    return handler


@pytest.mark.timeout(30)
def test_request_joins_partials(serve: ServeFixture, make_client: ClientFactory) -> None:
    server = serve(streamer([b"end"]))
    client = make_client(server.endpoint)
    assert client.request(b"go") == [b"p1", b"p2a", b"p2b", b"end"]


@pytest.mark.timeout(30)
def test_stream_yields_each_part(serve: ServeFixture, make_client: ClientFactory) -> None:
    server = serve(streamer([b"end"]))
    client = make_client(server.endpoint)
    assert list(client.stream(b"go")) == [b"p1", [b"p2a", b"p2b"], b"end"]


@pytest.mark.timeout(30)
def test_stream_skips_empty_final(serve: ServeFixture, make_client: ClientFactory) -> None:
    server = serve(streamer([]))
    client = make_client(server.endpoint)
    assert list(client.stream(b"go")) == [b"p1", [b"p2a", b"p2b"]]


@pytest.mark.timeout(30)
def test_abandoned_stream_does_not_leak_into_next_request(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    server = serve(streamer([b"end"]))
    client = make_client(server.endpoint)
    for part in client.stream(b"first"):
        assert part == b"p1"
        break
    assert client.request(b"second") == [b"p1", b"p2a", b"p2b", b"end"]
    server.wait_for(2)
    server.wait_connections(2)


@pytest.mark.timeout(30)
def test_request_inside_a_stream_is_refused(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    server = serve(streamer([b"end"]))
    client = make_client(server.endpoint)
    parts = client.stream(b"go")
    assert next(parts) == b"p1"
    with pytest.raises(RuntimeError, match="already waiting"):
        client.request(b"meanwhile")
    assert list(parts) == [[b"p2a", b"p2b"], b"end"]


@pytest.mark.timeout(30)
def test_stream_while_submitted_requests_wait_is_refused(
    serve: ServeFixture, make_client: ClientFactory
) -> None:
    # stream() is Lazy Pirate: it would read (and drop) the submitted requests' replies and, on a
    # timeout, close the socket under them. request() instead waits alongside them.
    server = serve(echo)
    client = make_client(server.endpoint)
    pending = client.submit(b"first")
    with pytest.raises(RuntimeError, match="submitted requests"):
        client.stream(b"meanwhile")
    assert pending.result() == b"first"
    assert list(client.stream(b"now")) == [b"now"]


# -- lifecycle ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_closed_client_raises_closed(serve: ServeFixture, make_client: ClientFactory) -> None:
    server = serve(echo)
    client = make_client(server.endpoint)
    client.close()
    client.close()  # idempotent
    assert client.closed
    with pytest.raises(Closed):
        client.request(b"x")
    with pytest.raises(Closed):
        client.stream(b"x")
    with pytest.raises(Closed), client:
        pass


@pytest.mark.timeout(30)
def test_context_manager_closes_but_does_not_term_the_context(
    serve: ServeFixture, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    server = serve(echo)
    with Client(server.endpoint, context=context) as client:
        assert client.request(b"x") == b"x"
    assert client.closed
    assert not context.closed


@pytest.mark.timeout(30)
def test_default_context_is_the_shared_instance(serve: ServeFixture) -> None:
    server = serve(echo)
    with Client(server.endpoint) as client:
        assert client.request(b"x") == b"x"
    assert not zmq.Context.instance().closed


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"retries": 0}, "retries"),
        ({"service": "s" * 256}, "255"),
    ],
)
def test_invalid_arguments(
    context: zmq.Context[zmq.Socket[bytes]], kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Client("tcp://127.0.0.1:1", context=context, **kwargs)  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_malformed_endpoint_fails_at_construction(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    with pytest.raises(ValueError, match="cannot connect"):
        Client("no-such-transport://x", context=context)


def _socket_of_each_client(
    context: zmq.Context[zmq.Socket[bytes]], endpoint: str, **kwargs: object
) -> dict[str, tuple[int, int, bool]]:
    """(LINGER, MECHANISM, routing id is the client's identity) of a new Client's socket and a
    new AsyncClient's socket; the AsyncClient is made in a running loop, as it asks."""

    def read(socket: zmq.Socket[Any], identity: bytes) -> tuple[int, int, bool]:
        linger, mechanism = socket.getsockopt(zmq.LINGER), socket.getsockopt(zmq.MECHANISM)
        return linger, mechanism, socket.getsockopt(zmq.ROUTING_ID) == identity

    seen = {}
    client = Client(endpoint, context=context, **kwargs)  # type: ignore[arg-type]
    try:
        assert client._socket is not None
        seen["Client"] = read(client._socket, client.identity)
    finally:
        client.close()

    async def make_async() -> tuple[int, int, bool]:
        async_client = AsyncClient(
            endpoint,
            context=zmq.asyncio.Context(context),
            **kwargs,  # type: ignore[arg-type]
        )
        try:
            return read(async_client._socket, async_client.identity)
        finally:
            await async_client.close()

    seen["AsyncClient"] = asyncio.run(make_async())
    return seen


@pytest.mark.timeout(30)
def test_both_clients_set_up_their_sockets_alike(context: zmq.Context[zmq.Socket[bytes]]) -> None:
    public, _ = zmq.curve_keypair()
    plain = _socket_of_each_client(context, "tcp://127.0.0.1:1")
    assert plain["Client"] == plain["AsyncClient"] == (0, zmq.NULL, True)
    curve = _socket_of_each_client(context, "tcp://127.0.0.1:1", server_key=public.decode())
    assert curve["Client"] == curve["AsyncClient"] == (0, zmq.CURVE, True)


@pytest.mark.timeout(30)
def test_malformed_endpoint_fails_alike_in_both_clients(
    context: zmq.Context[zmq.Socket[bytes]],
) -> None:
    with pytest.raises(ValueError, match="cannot connect") as sync_error:
        Client("no-such-transport://x", context=context)

    async def make_async() -> None:
        await AsyncClient("no-such-transport://x", context=zmq.asyncio.Context(context)).close()

    with pytest.raises(ValueError, match="cannot connect") as async_error:
        asyncio.run(make_async())
    assert str(sync_error.value) == str(async_error.value)


# -- zmq-client -----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_cli_prints_each_frame_on_a_line(
    serve: ServeFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve(echo)
    code = client_main(["-e", server.endpoint, "-s", "echo", "-t", "5", "-r", "2", "a", "b c"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out == "a\nb c\n"
    assert captured.err == ""
    (received,) = server.wait_for(1)
    assert received.request.service == b"echo"
    assert received.request.body == [b"a", b"b c"]
    assert received.request.timeout_ms == 9750  # 2 attempts of 5 s, less a 0.25 s margin


@pytest.mark.timeout(30)
def test_cli_streams_partials(serve: ServeFixture, capsys: pytest.CaptureFixture[str]) -> None:
    server = serve(streamer([]))
    assert client_main(["--endpoint", server.endpoint, "go"]) == 0
    assert capsys.readouterr().out == "p1\np2a\np2b\n"


@pytest.mark.timeout(30)
def test_cli_reads_payload_from_stdin(
    serve: ServeFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve(echo)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"line 1\nline 2\n")))
    assert client_main(["-e", server.endpoint]) == 0
    assert capsys.readouterr().out == "line 1\nline 2\n\n"
    (received,) = server.wait_for(1)
    assert received.request.body == [b"line 1\nline 2\n"]


@pytest.mark.timeout(30)
def test_cli_server_error_exits_1(serve: ServeFixture, capsys: pytest.CaptureFixture[str]) -> None:
    serve_app_error = serve(
        lambda request, _: [
            reply_to(request, [], status=Status.APP_ERROR, message="ZeroDivisionError: oops")
        ]
    )
    assert client_main(["-e", serve_app_error.endpoint, "x"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "zmq-client: app_error: ZeroDivisionError: oops\n"


@pytest.mark.timeout(30)
def test_cli_timeout_exits_2(serve: ServeFixture, capsys: pytest.CaptureFixture[str]) -> None:
    server = serve(silent)
    assert client_main(["-e", server.endpoint, "-t", "0.2", "-r", "2", "x"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("zmq-client: timeout: no reply from " + server.endpoint)
    first, *hints = captured.err.splitlines()
    assert "2 attempts" in first
    # The server is up (it completed the handshake) and silent: the hints say so, and name the
    # likely causes (tests/integration/test_client_hints.py has the other cases).
    assert hints[0].startswith(f"zmq-client: the server at {server.endpoint} is up but sent no")
    assert len(server.wait_for(2)) == 2


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args", [["-t", "0", "x"], ["-r", "0", "x"], ["-t", "soon", "x"]])
def test_cli_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert client_main(args) == 2
    assert "zmq-client: error:" in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_cli_bad_endpoint_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert client_main(["-e", "bogus", "x"]) == 2
    err = capsys.readouterr().err
    assert "'bogus' is not an endpoint" in err
    assert "--help" in err
