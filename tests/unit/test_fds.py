"""close_fds_except and FdSnapshot (_process.py), in a forked child: what is kept stays open."""

from __future__ import annotations

import os

from zmqserver._process import FdSnapshot, close_fds_except


def _in_child(body) -> bytes:  # noqa: ANN001 - a callable returning bytes
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.write(write_fd, body(write_fd))
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as f:
        out = f.read()
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out


def test_only_the_kept_fds_stay_open() -> None:
    extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(4)]
    try:

        def body(out: int) -> bytes:
            close_fds_except({0, 1, 2, out, extra[1]})
            still = []
            for fd in extra:
                try:
                    os.fstat(fd)
                    still.append(fd)
                except OSError:
                    pass
            return repr(still).encode()

        assert _in_child(body) == repr([extra[1]]).encode()
    finally:
        for fd in extra:
            os.close(fd)


def test_a_snapshot_forgets_an_fd_whose_number_was_reused() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    snapshot = FdSnapshot.take()
    assert fd in snapshot.still_open()
    os.close(fd)
    r, w = os.pipe()  # takes the lowest free numbers: fd's among them
    try:
        assert fd in (r, w)
        assert fd not in snapshot.still_open()
    finally:
        os.close(r)
        os.close(w)
