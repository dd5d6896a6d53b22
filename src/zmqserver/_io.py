"""Socket I/O for the broker's hot path: batched receive, batched send by routing id, the wait.

Two implementations with one behaviour. The compiled one (``_fastio``, built from _fastio.c when
a C compiler is available) moves a batch of messages in one C call and passes large frames through
without copying them. The pure-Python one uses pyzmq's own calls. ``ZMQSERVER_PURE_PYTHON=1`` in
the environment forces the pure-Python path, so the test suite runs the broker both ways.

Received frames are ``bytes``, or for frames over :data:`INLINE_MAX` bytes on the compiled path,
``_fastio.Frame`` objects: read-only buffers (``len()``, ``bytes()``, slicing, ``==`` against
bytes) that are sent on without a copy.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, cast

import zmq

log = logging.getLogger("zmqserver")

Frames = list[Any]  # bytes, or _fastio.Frame for large frames on the compiled path


def _load_fast() -> Any:
    """The compiled I/O bound to pyzmq's libzmq, or None (with the reason in UNAVAILABLE)."""
    global UNAVAILABLE
    if os.environ.get("ZMQSERVER_PURE_PYTHON"):
        UNAVAILABLE = "ZMQSERVER_PURE_PYTHON is set"
        return None
    try:
        from . import _fastio  # type: ignore[attr-defined]
    except ImportError as exc:
        UNAVAILABLE = f"not built ({exc})"
        return None
    # The libzmq whose functions _fastio calls is found through pyzmq's compiled backend (see
    # _fastio.c): importing it first is what loads that libzmq.
    try:
        from zmq.backend.cython import _zmq as backend
    except ImportError as exc:  # pyzmq's cffi backend (PyPy): no Cython backend to bind to
        UNAVAILABLE = f"pyzmq has no Cython backend ({exc})"
        return None
    try:
        _fastio.load(backend.__file__, zmq.ZMQError)  # libzmq failures raise what pyzmq's would
    except ImportError as exc:
        UNAVAILABLE = str(exc)
        log.debug("compiled socket I/O unavailable: %s", exc)
        return None
    return _fastio


#: Why the compiled socket I/O is not in use ("" when it is).
UNAVAILABLE = ""
_fast = _load_fast()

#: True when the compiled path is in use.
COMPILED = _fast is not None
INLINE_MAX: int = _fast.INLINE_MAX if _fast is not None else 0


def recv_batch(sock: zmq.Socket[bytes], limit: int, max_frames: int = 0) -> list[Frames]:
    """Up to ``limit`` whole messages that are already waiting; never blocks.

    ``max_frames`` > 0 keeps at most that many frames of each message: the rest of a longer one
    is read and thrown away as it comes, without a Python object per frame (see
    :func:`_recv_cut`), so a caller that asks for one frame more than it accepts can tell a cut
    message by its length and refuse it, at the cost of a message of ``max_frames`` frames.
    """
    if _fast is not None:
        batch: list[Frames] = _fast.recv_batch(sock.underlying, limit, max_frames=max_frames)
        return batch
    messages: list[Frames] = []
    for _ in range(limit):
        try:
            if max_frames:
                messages.append(_recv_cut(sock, max_frames, True))
            else:
                messages.append(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            break
    return messages


def recv_batch_with_user_id(
    sock: zmq.Socket[bytes], limit: int, max_frames: int = 0
) -> list[tuple[Frames, bytes | None]]:
    """As :func:`recv_batch`, with each message's ZAP User-Id (None on a NULL connection).

    Under CURVE the User-Id is what the broker's ZAP handler returned for the connection: the
    client's public key, Z85-encoded.
    """
    if _fast is not None:
        batch: list[tuple[Frames, bytes | None]] = _fast.recv_batch(
            sock.underlying, limit, True, max_frames
        )
        return batch
    return [(frames, user_id) for frames, user_id, _ in _recv_with(sock, limit, max_frames, False)]


def recv_batch_with_peer(
    sock: zmq.Socket[bytes], limit: int, max_frames: int = 0
) -> list[tuple[Frames, bytes | None, bytes | None]]:
    """As :func:`recv_batch_with_user_id`, with each message's ``Peer-Address`` as well: the
    client's IP address on tcp (libzmq reads it from the connection, getpeername), for ipc
    what libzmq makes of SO_PEERCRED; None where libzmq has none."""
    if _fast is not None:
        batch: list[tuple[Frames, bytes | None, bytes | None]] = _fast.recv_batch(
            sock.underlying, limit, True, max_frames, True
        )
        return batch
    return _recv_with(sock, limit, max_frames, True)


def _property(frame: zmq.Frame, name: str) -> bytes | None:
    try:
        return str(frame.get(name)).encode()
    except zmq.ZMQError:
        return None


def _recv_with(
    sock: zmq.Socket[bytes], limit: int, max_frames: int, peer: bool
) -> list[tuple[Frames, bytes | None, bytes | None]]:
    """The pure-Python receive with message properties: frames as ``zmq.Frame`` (copy=False),
    which is what has them."""
    messages: list[tuple[Frames, bytes | None, bytes | None]] = []
    for _ in range(limit):
        try:
            if max_frames:
                parts: list[Any] = _recv_cut(sock, max_frames, False)
            else:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            break
        first = parts[0]
        address = _property(first, "Peer-Address") if peer else None
        messages.append(([part.bytes for part in parts], _property(first, "User-Id"), address))
    return messages


def _recv_cut(sock: zmq.Socket[bytes], max_frames: int, copy: bool) -> list[Any]:
    """The next whole message on ``sock`` (zmq.Again at once if there is none), its first
    ``max_frames`` frames kept.

    The frames past them are received into one scratch byte (``recv_into`` truncates): libzmq
    frees each as it comes and Python makes nothing for it, where ``recv_multipart`` would make
    a list of a million ``bytes`` out of a million empty frames. The parts of a multipart
    message arrive together, so the reads after the first do not block.
    """
    parts: list[Any] = [sock.recv(zmq.NOBLOCK, copy=copy)]
    recv = sock.recv
    while sock.rcvmore:
        if len(parts) < max_frames:
            parts.append(recv(0, copy=copy))
            continue
        scratch = bytearray(1)
        sock.recv_into(scratch)
        while sock.rcvmore:
            sock.recv_into(scratch)
        break
    return parts


def batch_receiver(
    sock: zmq.Socket[bytes],
    with_user_id: bool = False,
    max_frames: int = 0,
    with_peer_address: bool = False,
) -> Callable[[int], list[Any]]:
    """:func:`recv_batch` (or :func:`recv_batch_with_user_id`, :func:`recv_batch_with_peer`)
    bound to ``sock`` (and ``max_frames``), for the broker's loop: on the compiled path the C
    function itself (a partial), so a turn of the loop pays no Python frame and no
    socket-handle lookup per read."""
    if _fast is not None:
        keywords: dict[str, Any] = {"max_frames": max_frames} if max_frames else {}
        if with_user_id:
            keywords["with_user_id"] = True
        if with_peer_address:
            keywords["with_peer_address"] = True
        return functools.partial(_fast.recv_batch, sock.underlying, **keywords)
    if with_peer_address:
        return functools.partial(recv_batch_with_peer, sock, max_frames=max_frames)
    if with_user_id:
        return functools.partial(recv_batch_with_user_id, sock, max_frames=max_frames)
    return functools.partial(recv_batch, sock, max_frames=max_frames)


def poller(
    sockets: Sequence[zmq.Socket[bytes]], fds: Sequence[int], out: int = 0
) -> Callable[[int], int]:
    """A function that waits up to ``timeout_ms`` (-1: for ever) until one of ``sockets`` has a
    message or one of ``fds`` is readable, and says which: bit ``i`` for ``sockets[i]``, bit
    ``len(sockets) + j`` for ``fds[j]``; 0 when the time passed or a signal came.

    Bit ``i`` of ``out`` watches ``sockets[i]`` for POLLOUT as well (the broker's frontend, while
    it holds replies for a full pipe), reported as bit ``len(sockets) + len(fds) + i``.

    The broker's wait. On the compiled path it is libzmq's zmq_poll called from C, the items on
    the stack and an int back, where pyzmq's zmq_poll builds and walks Python lists and tuples
    every call (about a microsecond of each turn, from the broker's profile).
    """
    if _fast is not None:
        handles = tuple(sock.underlying for sock in sockets)
        if out:
            return cast(
                Callable[[int], int],
                lambda timeout_ms: _fast.poll(handles, tuple(fds), timeout_ms, out),
            )
        return cast(Callable[[int], int], functools.partial(_fast.poll, handles, tuple(fds)))
    items: list[tuple[Any, int]] = [
        (sock, zmq.POLLIN | (zmq.POLLOUT if out >> i & 1 else 0)) for i, sock in enumerate(sockets)
    ]
    items += [(fd, zmq.POLLIN) for fd in fds]
    bits = {id(item): 1 << i for i, (item, _) in enumerate(items)}
    writable = {id(sock): 1 << (len(items) + i) for i, sock in enumerate(sockets)}

    def poll_pure(timeout_ms: int) -> int:
        try:
            ready = zmq.zmq_poll(items, timeout_ms)
        except InterruptedError:
            return 0  # a signal: its handler ran; the caller looks again
        mask = 0
        for item, events in ready:
            if events & zmq.POLLIN:
                mask |= bits[id(item)]
            if events & zmq.POLLOUT:
                mask |= writable[id(item)]
        return mask

    return poll_pure


#: The send errors that mean "this peer cannot take it now", not "the socket is broken":
#: EHOSTUNREACH (an unknown peer, with ROUTER_MANDATORY) and EAGAIN (its pipe is full).
UNDELIVERABLE = (errno.EHOSTUNREACH, errno.EAGAIN)


#: What the broker sends in one turn: ``(port, identity, frames)`` per message.
Outbox = Sequence[tuple[int, bytes, Sequence[Any]]]


def send_batch(sockets: Sequence[zmq.Socket[bytes]], outbox: Outbox) -> Sequence[tuple[int, int]]:
    """Send each ``(port, identity, frames)`` of ``outbox`` on ``sockets[port]``, without blocking.

    One call per loop turn rather than one per message. Returns ``(index, errno)`` for each
    message that met an :data:`UNDELIVERABLE` error (an empty sequence, not always a list, when
    none did): nothing of it was sent, and the rest of the batch went on, but for the later
    messages to a peer whose pipe was full (EAGAIN): they are not sent either, and fail with
    EAGAIN too, so that a peer never gets a message before an earlier one. Any other error
    raises ``zmq.ZMQError`` at once (the messages before it were sent, the ones after it were
    not).
    """
    return batch_sender(sockets)(outbox)


def batch_sender(
    sockets: Sequence[zmq.Socket[bytes]],
) -> Callable[[Outbox], Sequence[tuple[int, int]]]:
    """:func:`send_batch` bound to ``sockets``, for a caller that sends on the same ones every
    loop turn: the socket handles are looked up once, not per call (about a microsecond), and
    on the compiled path the result is the C function itself (a partial), no Python frame."""
    if _fast is not None:
        handles = tuple(sock.underlying for sock in sockets)
        return cast(
            Callable[[Outbox], Sequence[tuple[int, int]]],
            functools.partial(_fast.send_batch, handles),
        )

    def send_pure(outbox: Outbox) -> Sequence[tuple[int, int]]:
        failed = []
        full: set[tuple[int, bytes]] = set()  # peers whose pipe was full: send them nothing more
        for index, (port, identity, frames) in enumerate(outbox):
            if full and (port, identity) in full:
                failed.append((index, errno.EAGAIN))
                continue
            try:
                sockets[port].send_multipart([identity, *frames], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                if exc.errno not in UNDELIVERABLE:
                    raise
                failed.append((index, exc.errno))
                if exc.errno == errno.EAGAIN:
                    full.add((port, identity))
        return failed

    return send_pure


# -- one socket, one message: a worker's side ---------------------------------------------------

#: SNDMORE as a plain int: the IntFlag arithmetic send_multipart does costs ~0.6 µs a frame.
_SNDMORE = int(zmq.SNDMORE)


def send_frames(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """``sock.send_multipart(frames)`` at about a third of its cost (2 µs, not 6.5, for a reply):
    the pure-Python :func:`sender`, and a worker's heartbeat thread.

    send_multipart type-checks every frame before sending the first (so a bad one cannot leave
    half a message queued) and ORs IntFlags for each; a worker's frames come from ``to_frames`` and
    the protocol encoders, which only make bytes, so the check buys nothing on the per-job path.

    Frames are copied, even 64 KiB ones: a zero-copy send measured slower (87-94 against 62-64
    µs of CPU a 64 KiB echo), as pyzmq frees zero-copy buffers through its garbage-collector
    thread, and a zero-copy receive gained nothing, since the app needs bytes anyway.
    """
    send = sock.send
    for frame in frames[:-1]:
        send(frame, _SNDMORE)
    send(frames[-1])


def receiver(sock: zmq.Socket[bytes]) -> Callable[[], list[bytes] | None]:
    """A function that returns the next whole message on ``sock``, all frames ``bytes``, or
    None at once when there is none.

    For a worker's loop: reading a job that is already waiting this way costs 0.6 us compiled,
    where zmq_poll then recv_multipart cost about 7, and "nothing yet" is a return value, not
    an exception (a zmq.Again costs 3 us). The pure-Python path asks the socket first, for the
    same reason.
    """
    if _fast is not None:
        return cast(
            Callable[[], "list[bytes] | None"],
            functools.partial(_fast.recv_message, sock.underlying),
        )

    def recv_pure() -> list[bytes] | None:
        if not cast(int, sock.get(zmq.EVENTS)) & zmq.POLLIN:
            return None
        return sock.recv_multipart()

    return recv_pure


def try_sender(sock: zmq.Socket[bytes]) -> Callable[[list[bytes]], bool]:
    """A function that queues one whole message on ``sock`` without waiting: True if it was
    queued, False if the socket's queue is full (``EAGAIN``), and then nothing of it was.

    For clients, whose sends must never wait for a server that may not be there (a blocked send
    is a failed attempt: client/state.py). One C call a message on the compiled path.
    """
    if _fast is not None:
        # The C function itself, bound to this socket: no Python frame per request.
        return cast(
            Callable[[list[bytes]], bool], functools.partial(_fast.send_message, sock.underlying)
        )

    def send_pure(frames: list[bytes]) -> bool:
        send = sock.send
        try:
            send(frames[0], _MORE_NOW if len(frames) > 1 else _NOW)
        except zmq.Again:
            return False  # libzmq checks the high-water mark before a message's first frame only
        last = len(frames) - 1
        for index in range(1, last):
            send(frames[index], _MORE_NOW)
        if last:
            send(frames[last], _NOW)
        return True

    return send_pure


_NOW = int(zmq.DONTWAIT)
_MORE_NOW = int(zmq.SNDMORE | zmq.DONTWAIT)


def sender(sock: zmq.Socket[bytes]) -> Callable[[list[bytes]], None]:
    """A function that sends one whole message on ``sock``, blocking as ``send_multipart`` does
    (so a reply waits out a full pipe rather than being dropped), at a fifth of its cost."""
    if _fast is not None:
        send_one = batch_sender((sock,))  # the C function itself, bound to this socket

        def send(frames: list[bytes]) -> None:
            if send_one(((0, frames[0], frames[1:]),)):
                # EAGAIN: the pipe is full, or (DEALER) not connected yet; nothing was sent, so
                # the blocking send below sends it whole once the peer can take it.
                sock.send_multipart(frames)

        return send

    return lambda frames: send_frames(sock, frames)
