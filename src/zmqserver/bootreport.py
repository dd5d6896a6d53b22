"""Why a worker could not start, told to the master once: a pipe of short reports.

A worker whose app (or a ``post_fork`` hook) fails to import exits with
:data:`~zmqserver.worker.BOOT_ERROR`, and the master stops the server. Every worker of the pool
fails alike, at about the same time; when each logged its own error, the traceback appeared
once per worker, and the master's "stopping the server", logged when it reaped the first one,
could come before the others' (or, through separate buffers, before the first). So a worker
that cannot start writes its report here instead, and the master, when it reaps the worker,
logs that report and only then its own line: the cause once, and always first.

Why a pipe, as for the status of remote workers (status.py): one ``write`` of at most
``PIPE_BUF`` bytes is atomic, so reports of many workers never interleave; the master made it
before forking and needs no ZeroMQ for it. A report longer than that is shortened in the
middle (the error's first lines and its last frames stay). A worker whose write fails (the
pipe is full, or gone) logs the report itself, as before.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct

_HEADER = struct.Struct("=iI")  # pid, length of the text: native order, same host
#: The longest write that is atomic on a pipe (POSIX guarantees at least 512; Linux 4096).
_ATOMIC = getattr(select, "PIPE_BUF", 512)
_MAX_TEXT = _ATOMIC - _HEADER.size
_CUT = b"\n  [...]\n"


def shorten(text: bytes, limit: int = _MAX_TEXT) -> bytes:
    """``text`` cut to ``limit`` bytes by dropping its middle."""
    if len(text) <= limit:
        return text
    head = limit // 3
    tail = limit - head - len(_CUT)
    return text[:head] + _CUT + text[-tail:]


class BootReports:
    """The pipe, made by the master before it forks; workers call :meth:`send`."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._partial = b""

    def send(self, text: str) -> bool:
        """In a worker: report ``text``; False if it could not be written (log it instead)."""
        body = shorten(text.encode(errors="replace"))
        try:
            os.write(self.write_fd, _HEADER.pack(os.getpid(), len(body)) + body)
        except OSError:
            return False
        return True

    def collect(self) -> dict[int, str]:
        """In the master: the reports written so far, by worker pid."""
        data = self._partial
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            data += chunk
        reports = {}
        while len(data) >= _HEADER.size:
            pid, size = _HEADER.unpack_from(data)
            end = _HEADER.size + size
            if len(data) < end:
                break
            reports[pid] = data[_HEADER.size : end].decode(errors="replace")
            data = data[end:]
        self._partial = data
        return reports

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
