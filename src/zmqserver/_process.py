"""Process-level helpers: titles, parent-death signals, pid files, privileges, daemonizing, RSS,
log files that can be reopened, and the file descriptors a forked worker keeps.

Everything here touches the process or the file system and nothing else; the supervisor and
server.py decide when to call it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import grp
import logging
import logging.handlers
import os
import pwd
import resource
import signal
import sys
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

from .errors import ConfigError

log = logging.getLogger("zmqserver")

_PR_SET_PDEATHSIG = 1


def set_title(title: str) -> None:
    """Set the process title seen in ps/top (`zmq broker 6660-6661`); best effort."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # pragma: no cover - setproctitle is a dependency
        return
    setproctitle(title)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies.

    Workers also check ``os.getppid()`` on every wake-up that is not a job (at least once a
    heartbeat interval under load), and :func:`parent_alive` before their final DISCONNECT and
    when they choose the exit linger; the signal is what makes the exit prompt even when a
    worker is stuck in a long job and SIGKILL took the master.
    """
    if not sys.platform.startswith("linux"):
        return
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable")


def parent_alive(pid: int) -> bool:
    """Whether ``pid`` is still this process's parent and is not on its way out.

    ``getppid()`` alone is not enough: the parent-death signal fires when the parent's *thread*
    that forked us exits, and when a multi-threaded master (libzmq's I/O threads, the ZAP
    thread) is SIGKILLed its threads exit one by one. Until the last one has, Linux reparents
    us to a surviving thread of the same process, so ``getppid()`` still names the master
    while the signal is already here. Its main thread is a zombie by then, which
    ``/proc/<pid>/stat`` shows (state ``Z``); without /proc, ``getppid()`` is the answer.
    """
    if os.getppid() != pid:
        return False
    state = proc_state(pid)
    return state is None or state not in (b"Z", b"X")


def proc_state(pid: int) -> bytes | None:
    """The one-letter state of ``pid`` in ``/proc/<pid>/stat`` (``b"Z"``: a zombie), or None if
    it cannot be read (no such process, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The state follows the command name, which may itself hold ") ".
    return stat[stat.rfind(b")") + 2 :][:1]


def endpoint_label(endpoint: str) -> str:
    """The short form of an endpoint used in process titles: the port for tcp, else as is."""
    if endpoint.startswith("tcp://"):
        return endpoint.rsplit(":", 1)[-1]
    return endpoint


# -- pid files ------------------------------------------------------------------------------------


def _pid_in(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (FileNotFoundError, ValueError):
        return None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    return True


def check_pid_file(path: str) -> None:
    """Refuse to start while ``path`` names a running process (another server, most likely).

    A file naming a dead process is stale (a crash, or a server that could not remove it after
    dropping privileges) and is overwritten later.
    """
    pid = _pid_in(path)
    if pid is not None and pid != os.getpid() and _running(pid):
        raise ConfigError(
            f"pid_file: {path} names process {pid}, which is running: is a server already "
            "started? (remove the file if not)"
        )


def write_pid_file(path: str, pid: int) -> None:
    """Write ``pid`` atomically: a reader never sees an empty or half-written file."""
    tmp = f"{path}.{pid}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, path)


def remove_pid_file(path: str, pid: int) -> None:
    """Remove ``path`` if it still names ``pid`` (a new server may have taken it over).

    After dropping to ``user`` the directory may not be ours to remove files from (a pid file
    in a root-owned directory); the file itself is (it was handed over), so it is emptied
    instead: :func:`check_pid_file` and init scripts take an empty pid file for no server.
    """
    if _pid_in(path) != pid:
        return
    try:
        os.unlink(path)
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        error = exc.strerror
    try:
        os.truncate(path, 0)
    except OSError as exc:
        log.warning("could not remove the pid file %s (%s) nor empty it (%s)", path, error,
                    exc.strerror)  # fmt: skip
        return
    log.info(
        "pid file %s emptied, not removed: %s (its directory is not writable by this user)",
        path,
        error,
    )


def may_remove_in(directory: str, uid: int, gids: Collection[int]) -> bool:
    """Whether user ``uid`` (in groups ``gids``) may remove a file it owns from ``directory``:
    write and search permission on it, by owner, group or other (a sticky directory such as
    /tmp also lets the owner of the file remove it, which the pid file's owner is)."""
    try:
        st = os.stat(directory)
    except OSError:
        return False
    if uid == 0:
        return True
    if st.st_uid == uid:
        bits = st.st_mode >> 6
    elif st.st_gid in gids:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return bits & 0o3 == 0o3


# -- privileges -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who to become after binding: resolved at start-up so a typo fails before anything binds."""

    uid: int
    gid: int
    user: str | None

    @classmethod
    def resolve(cls, user: str | None, group: str | None) -> Credentials | None:
        if user is None and group is None:
            return None
        uid, gid, name = os.getuid(), os.getgid(), None
        if user is not None:
            try:
                entry = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
            except KeyError:
                raise ConfigError(f"user: no such user {user!r}") from None
            uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
        if group is not None:
            try:
                gid = (grp.getgrnam(group) if not group.isdigit() else grp.getgrgid(int(group)))[2]
            except KeyError:
                raise ConfigError(f"group: no such group {group!r}") from None
        if (uid, gid) != (os.getuid(), os.getgid()) and os.geteuid() != 0:
            raise ConfigError(
                f"user/group: switching to uid {uid}, gid {gid} needs root (running as uid "
                f"{os.getuid()})"
            )
        return cls(uid, gid, name)


def drop_privileges(creds: Credentials, own: list[str]) -> None:
    """Become ``creds`` for good, after handing it the files in ``own`` (sockets, logs).

    Group first (setgid is impossible once the user is not root), supplementary groups set to
    the user's own (or none), then the user. The saved ids change too, so there is no way back.
    """
    for path in own:
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, creds.uid, creds.gid)
    if os.getuid() == creds.uid and os.getgid() == creds.gid:
        return
    if creds.user is not None:
        os.initgroups(creds.user, creds.gid)
    else:
        os.setgroups([])
    os.setgid(creds.gid)
    os.setuid(creds.uid)


def ipc_path(endpoint: str) -> str | None:
    """The file of an ``ipc://`` endpoint (None for other transports and abstract sockets)."""
    if endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@"):
        return endpoint[len("ipc://") :]
    return None


# -- daemonizing ----------------------------------------------------------------------------------


def daemonize() -> tuple[bool, int]:
    """Fork into the background: ``(True, fd)`` in the daemon, ``(False, fd)`` in the caller.

    Classic double fork: the first child calls setsid (a new session, no controlling terminal),
    the second can never acquire one again. The pipe ``fd`` links the two ends: the daemon writes
    ``ready`` (or error lines) to it, the caller reads it (``logsetup.wait_for_daemon``), so the
    command that started a daemon exits only when the server is up, or says why it is not.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        os.waitpid(pid, 0)  # the middle process exits at once
        return False, read_fd
    os.close(read_fd)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return True, write_fd


# -- memory and log files -------------------------------------------------------------------------

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


#: The highest soft fd limit the server sets itself: Linux's default ``fs.nr_open``, the most
#: any process may have open unless the administrator raised it. Where the hard limit is
#: unlimited, or higher, this is what the soft one is raised to: RLIM_INFINITY is refused for
#: RLIMIT_NOFILE, and a limit of a billion would cost anything that walks the fd table by
#: number (closing inherited fds without close_range) a billion steps.
FD_LIMIT_CAP = 1 << 20


def fd_limit_target(soft: int, hard: int, infinity: int = resource.RLIM_INFINITY) -> int | None:
    """The soft RLIMIT_NOFILE to set, given the current ``soft`` and ``hard`` ones; None to
    leave it as it is.

    The hard limit (up to :data:`FD_LIMIT_CAP`): a broker holds a socket per client and per
    worker, and libzmq an fd or two per socket more, so the default soft limit of 1,024 is
    reached by a few hundred clients (the issue 18 report: 1,108 stray connections refused
    every new client and sent new workers into EMFILE). The soft limit is the process's own
    to raise, up to the hard one, which the administrator set.
    """
    target = FD_LIMIT_CAP if hard == infinity or hard > FD_LIMIT_CAP else hard
    if soft != infinity and soft < target:
        return target
    return None


def raise_fd_limit() -> None:
    """Raise the soft fd limit to the hard one (:func:`fd_limit_target`) and log both, at INFO:
    the first thing to look at when a busy server says "Too many open files"."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError) as exc:  # pragma: no cover - every Unix has it
        log.warning("open files: cannot read the limit: %s", exc)
        return
    shown = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    target = fd_limit_target(soft, hard)
    if target is None:
        log.info("open files: soft limit %s (hard limit %s)", soft, shown)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("open files: cannot raise the soft limit from %s to %s: %s", soft, target, exc)
        return
    log.info("open files: soft limit raised from %s to %s (hard limit %s)", soft, target, shown)


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/statm (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


class LogFile(logging.handlers.WatchedFileHandler):
    """A log file that USR1 reopens (logrotate's ``postrotate``), in the master.

    Workers inherit the handler across fork; being a WatchedFileHandler it also notices a
    rotated file by itself on the next record, so workers follow without a signal of their own.

    A reopen that fails never loses the log nor stops the process: the new file is opened
    *before* the old one is closed, and if it cannot be (after dropping to ``user``, a log
    directory that user may not write; a disk gone read-only), the handler keeps writing to
    the file it had, says why in it, and does not try again for every record: only once the
    path names another file, or on the next USR1. The standard handler closes first and then
    opens, so a failure there left a closed stream behind, and the next record raised "I/O
    operation on closed file" out of the master's loop, which ended the server.
    """

    def __init__(self, filename: str) -> None:
        super().__init__(filename)
        #: A reopen failed (and the file at the path then: (dev, ino), or None for no file).
        self._failed = False
        self._failed_on: tuple[int, int] | None = None

    def reopen(self) -> OSError | None:
        """Switch to the file now at the path (USR1); the error if that failed (the old file
        stays in use)."""
        with self._lock_held():
            return self._switch(force=True)

    def reopenIfNeeded(self) -> None:  # noqa: N802 - the standard library's name
        if self.stream is None:
            return
        self._switch(force=False)

    def _switch(self, force: bool) -> OSError | None:
        try:
            st = os.stat(self.baseFilename)
            now: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            now = None
        if not force and (now == (self.dev, self.ino) or (self._failed and now == self._failed_on)):
            return None
        try:
            stream = self._open()
        except OSError as exc:
            self._failed, self._failed_on = True, now
            self._note(f"cannot reopen the log file {self.baseFilename}: {exc.strerror}; "
                       "still writing to the file opened before")  # fmt: skip
            return exc
        old, self.stream = self.stream, stream
        self._failed = False
        self._statstream()
        if old is not None:
            with contextlib.suppress(OSError, ValueError):
                old.close()
        return None

    def _note(self, text: str) -> None:
        """Write a warning to the file in use, under this handler's format, without going
        through logging (we are inside a handler; a record could come back here)."""
        if self.stream is None:
            return
        record = logging.makeLogRecord(
            {"name": "zmqserver", "levelno": logging.WARNING, "levelname": "WARNING", "msg": text}
        )
        with contextlib.suppress(Exception):
            self.stream.write(self.format(record) + self.terminator)
            self.stream.flush()

    @contextlib.contextmanager
    def _lock_held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def reopen_log_files(logger: logging.Logger) -> tuple[int, list[str]]:
    """Reopen every :class:`LogFile` of ``logger``: how many were, and why the others were not."""
    count, failures = 0, []
    for handler in logger.handlers:
        if isinstance(handler, LogFile):
            error = handler.reopen()
            if error is None:
                count += 1
            else:
                failures.append(f"{handler.baseFilename}: {error.strerror}")
    return count, failures


# -- the file descriptors a forked worker keeps ----------------------------------------------------


def open_fds() -> list[int] | None:
    """This process's open file descriptors, or None where they cannot be listed."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        # The listing's own fd is among them, closed by the time we look: callers allow for it.
        return [int(name) for name in names if name.isdigit()]
    return None


@dataclass(frozen=True, slots=True)
class FdSnapshot:
    """The fds a process had at one moment, each with the file it named (device, inode).

    The identity is what makes a later answer safe: an fd closed since, whose number was
    reused for something else (a client connection, say), is not taken for the one seen here.
    """

    files: Mapping[int, tuple[int, int]]

    @classmethod
    def take(cls) -> FdSnapshot:
        files = {}
        for fd in open_fds() or (0, 1, 2):
            with contextlib.suppress(OSError):  # the listing's own fd, closed by now
                st = os.fstat(fd)
                files[fd] = (st.st_dev, st.st_ino)
        return cls(files)

    def still_open(self) -> set[int]:
        """Those of the snapshot's fds that still name the same file."""
        same = set()
        for fd, identity in self.files.items():
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == identity:
                same.add(fd)
        return same


def output_fds() -> set[int]:
    """The fds this process writes its output and its log to: stdio, and every logging
    handler's stream or socket (a log file reopened by USR1, syslog, the daemon's start-up
    pipe), in every logger."""
    fds = {0, 1, 2}
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # replaced by an object with no real fd
            fds.add(stream.fileno())
    manager = logging.Logger.manager
    loggers = [logging.getLogger()]
    loggers += [lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for logger in loggers:
        for handler in logger.handlers:
            for name in ("stream", "socket", "sock"):
                fileno = getattr(getattr(handler, name, None), "fileno", None)
                if fileno is not None:
                    with contextlib.suppress(Exception):
                        fds.add(fileno())
            fd = getattr(handler, "fd", None)  # the start-up relay's pipe (logsetup.py)
            if isinstance(fd, int):
                fds.add(fd)
    return fds


def close_fds_except(keep: Collection[int]) -> None:
    """Close every file descriptor of this process but those in ``keep``.

    With the fds listed, up to the highest open one; otherwise up to the fd limit. Ranges go
    to ``os.closerange`` (one ``close_range`` system call each where there is one).
    """
    fds = open_fds()
    if fds:
        end = max(fds) + 1
    else:
        end = os.sysconf("SC_OPEN_MAX") if "SC_OPEN_MAX" in os.sysconf_names else 65536
    low = 0
    for fd in sorted(keep):
        # Never an empty range: os.closerange(n, n) is close_range(n, n - 1), and (0, 0) is
        # close_range(0, UINT_MAX) on Linux, which closes everything.
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    if low < end:
        os.closerange(low, end)
