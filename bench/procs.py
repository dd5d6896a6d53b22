"""Processes for the benchmark: start them in their own session, read /proc, stop them by PID.

Every process the suite runs (broker, workers, load-generator clients) is started here by a
:class:`Launcher`: ``subprocess.Popen(start_new_session=True)`` through ``bench/_launch.py``,
which asks Linux to SIGTERM the child if the benchmark dies before stopping it. Stopping is by PID
only: SIGTERM, a bounded wait, SIGKILL. A zmqserver's forked workers are found by their parent
PID and checked too. :meth:`Launcher.strays` lists anything still alive in one of the sessions the
launcher created, so the suite can prove it left nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

STOP_TIMEOUT = 10.0  # SIGTERM -> wait this long -> SIGKILL
KILL_TIMEOUT = 5.0  # wait after SIGKILL


class BenchError(RuntimeError):
    """A process did not come up, answer or report within its bounded wait."""


# -- /proc -----------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields of /proc/PID/stat after the command name: 0 state, 1 ppid, 3 session, 11 utime."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return stat[stat.rfind(b")") + 2 :].split()


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in (b"Z", b"X")


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and fields[0] not in (b"Z", b"X") and int(fields[1]) == pid:
                kids.append(int(entry))
    return sorted(kids)


def in_sessions(sessions: set[int]) -> list[int]:
    """Live processes whose session id is one of ``sessions``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and fields[0] not in (b"Z", b"X") and int(fields[3]) in sessions:
                found.append(int(entry))
    return sorted(found)


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of ``pids`` (all their threads), in seconds; a vanished pid counts 0."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def machine_ticks() -> tuple[int, int, int, int]:
    """(busy, in processes, steal, total) clock ticks of all CPUs since boot, from /proc/stat.

    "In processes" is user + nice + system: what utime/stime of processes add up to. The rest of
    "busy" is interrupt and softirq time (network and IPC wake-ups), which no process is charged,
    and steal: time the hypervisor gave this VM's CPUs to someone else.
    """
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (
            int(v) for v in f.readline().split()[1:9]
        )
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return total - idle - iowait, user + nice + system, steal, total


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status (VmRSS, VmHWM, ...); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def maps_library(pid: int, name: str) -> bool:
    """Whether a shared object whose file name contains ``name`` is mapped into ``pid``."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return any(name in line.rsplit("/", 1)[-1] for line in f)
    except OSError:
        return False


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def threads(pid: int) -> int:
    return status_kb(pid, "Threads")


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def wait_children(pid: int, count: int, timeout: float, what: str, log: Path) -> list[int]:
    """Wait until process ``pid`` has forked ``count`` children (a server's workers); their
    pids. A timeout's error carries the tail of the server's ``log``, which says why."""
    try:
        wait_for(lambda: len(children_of(pid)) >= count, timeout, f"{count} {what}")
    except BenchError as exc:
        raise BenchError(f"{exc}\n{log_tail(log)}") from None
    return children_of(pid)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- starting and stopping -------------------------------------------------------------------------


class Launcher:
    """Starts processes in new sessions, remembers them, and stops them (and only them) by PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.sessions: set[int] = set()
        self.running: list[subprocess.Popen[bytes]] = []
        # zmqserver reads ZMQSERVER_* variables (options, the pure-Python switch): none of the
        # caller's leak into a measurement; a system sets what it needs through ``env``.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("ZMQSERVER_")}
        self._env = {**inherited, "PYTHONPATH": str(REPO), "BENCH_PARENT": str(os.getpid())}

    def start(
        self,
        module: str,
        args: Sequence[str],
        *,
        log: Path | None = None,
        pipes: bool = False,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Run ``python -m module args`` (via bench/_launch.py) in a new session.

        With ``pipes``, stdin and stdout are pipes (the load-generator clients talk over them);
        otherwise output goes to ``log`` (or nowhere). ``env`` adds environment variables.
        """
        argv = [sys.executable, "-m", "bench._launch", module, *args]
        if pipes:
            stdout: int | object = subprocess.PIPE
        else:
            stdout = subprocess.DEVNULL
        out_file = open(log, "ab") if log is not None and not pipes else None  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env={**self._env, **(env or {})},
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=out_file if out_file is not None else stdout,  # type: ignore[arg-type]
                stderr=out_file if out_file is not None else None,
                start_new_session=True,
            )
        finally:
            if out_file is not None:
                out_file.close()
        self.sessions.add(proc.pid)  # a new session's id is its leader's pid
        self.running.append(proc)
        return proc

    def stop(
        self,
        proc: subprocess.Popen[bytes],
        extra_pids: Sequence[int] = (),
        sig: int = signal.SIGTERM,
    ) -> None:
        """``sig``, bounded wait, SIGKILL ``proc``; then make sure ``extra_pids`` are gone too.

        ``extra_pids`` are processes ``proc`` started (a zmqserver's workers), recorded while it
        ran, so only processes of this benchmark are ever signalled.
        """
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"  ! pid {proc.pid} ignored signal {sig} for {STOP_TIMEOUT:.0f}s; killing")
                proc.kill()
                proc.wait(timeout=KILL_TIMEOUT)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with contextlib.suppress(BenchError):
            wait_for(lambda: not any(alive(p) for p in extra_pids), STOP_TIMEOUT, "children")
        for pid in extra_pids:
            if alive(pid):
                print(f"  ! pid {pid} outlived its parent {proc.pid}; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.running):
            self.stop(proc)

    def strays(self) -> list[int]:
        """Processes still alive in any session this launcher created (should be none)."""
        return in_sessions(self.sessions) if self.sessions else []


# -- line protocol with client processes -----------------------------------------------------------


def read_lines(procs: Sequence[subprocess.Popen[bytes]], timeout: float, what: str) -> list[bytes]:
    """One line from each process's stdout, in order of ``procs``; bounded by ``timeout``.

    Fails fast if a process exits without writing its line.
    """
    deadline = time.monotonic() + timeout
    fds = {p.stdout.fileno(): i for i, p in enumerate(procs) if p.stdout is not None}
    buffers: dict[int, bytes] = dict.fromkeys(fds, b"")
    lines: dict[int, bytes] = {}
    while len(lines) < len(procs):
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        pending = [fd for fd, i in fds.items() if i not in lines]
        readable, _, _ = select.select(pending, [], [], min(left, 0.5))
        for fd in readable:
            chunk = os.read(fd, 1 << 16)
            i = fds[fd]
            if not chunk:
                code = procs[i].wait(timeout=KILL_TIMEOUT)
                raise BenchError(f"{what}: process {procs[i].pid} exited (code {code})")
            buffers[fd] += chunk
            if b"\n" in buffers[fd]:
                lines[i] = buffers[fd].split(b"\n", 1)[0]
    return [lines[i] for i in range(len(procs))]


def write_line(proc: subprocess.Popen[bytes], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line.encode() + b"\n")
    proc.stdin.flush()
