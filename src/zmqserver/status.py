"""How a remote pool's workers tell their supervisor whether they are idle: a pipe.

A broker's supervisor reads its workers' states from the routing core. A remote pool
(``zmqserver worker``) has no router, yet spare-server autoscaling needs to know which workers
are idle, busy, or cut off from their broker. So the pool's master makes one pipe before it forks;
each worker writes one 5-byte record (its pid, its new state) to it on each change, and the master
reads the pipe in the same poll as its signal wake-up socket.

Why a pipe: it costs one ``write`` per change (two per job), needs no ZeroMQ context in the
master (which then has nothing to get wrong across ``fork``), and records of at most
``PIPE_BUF`` bytes are written atomically, so records from many workers never interleave.
Rejected: a ZeroMQ PUSH/PULL pair (a context in the master, an I/O thread in every worker for a
few bytes), shared memory (a lock or atomics across processes, and no wake-up).

Reports are advisory. A worker whose write would block (the master is far behind) drops the
record and writes the next change; the worst outcome is a scaling decision made on stale data.
"""

from __future__ import annotations

import contextlib
import enum
import os
import struct

_RECORD = struct.Struct("=iB")  # pid, report: native order, the pipe never leaves the host
_READ_SIZE = _RECORD.size * 4096


class Report(enum.IntEnum):
    CONNECTING = 1  # sent READY, has not heard from the broker since (or lost it)
    IDLE = 2  # the broker has answered: registered, waiting for a job
    BUSY = 3  # running a job


class StatusWriter:
    """The worker's end: call it with a :class:`Report`; repeated reports are not written."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.last: Report | None = None

    def __call__(self, report: Report) -> None:
        if report is self.last:
            return
        try:
            os.write(self.fd, _RECORD.pack(os.getpid(), report))
        except (BlockingIOError, BrokenPipeError):
            return  # the master is behind, or gone (the worker notices that by itself)
        self.last = report


class StatusChannel:
    """The pipe, made by the master before it forks; :meth:`writer` is called in each child."""

    def __init__(self) -> None:
        # Non-blocking at both ends: the master reads until EAGAIN, a worker never waits.
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._partial = b""

    def fileno(self) -> int:
        return self.read_fd

    def read(self) -> list[tuple[int, Report]]:
        """Every record written since the last call, oldest first: ``(pid, report)``.

        The master keeps the write end open (it never writes), so the pipe never reports end
        of file and the poll never spins when the last worker exits.
        """
        data = self._partial
        while True:
            try:
                chunk = os.read(self.read_fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        whole = len(data) - len(data) % _RECORD.size
        self._partial = data[whole:]
        records = []
        for pid, value in _RECORD.iter_unpack(data[:whole]):
            with contextlib.suppress(ValueError):  # not a report: ignore rather than crash
                records.append((pid, Report(value)))
        return records

    def writer(self) -> StatusWriter:
        """In a freshly forked worker: drop the read end, keep the write end."""
        os.close(self.read_fd)
        return StatusWriter(self.write_fd)

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
