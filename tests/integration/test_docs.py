"""Every command and code block in README.md and docs/*.md runs, as a reader would run it.

The fenced blocks are taken from the files themselves and run in document order, in one work
directory shared by all the files (so, as for a reader, the keys the README's Security section
makes are there for docs/security.md), with ``HOME`` in it and the venv's commands on ``PATH``:

* ``sh``/``console``: each command (``\\`` continuations joined) runs with bash. ``zmqserver
  serve``/``worker`` and ``make serve`` run in the background until the block ends (one with
  ``--pubsub-port`` or ``--store``: until its file ends, for the Python examples after it), and the
  block goes on once their log says ``zmqserver ready``. A ``# prints X`` comment is checked.
* ``python``: run with the venv's python. A block that calls ``zmqserver.run(`` is a server:
  it runs in the background and must answer a one-frame and a two-frame job (the synopsis once
  broke on the second); a raw MDP worker runs in the background for the rest of its file. A
  ``print(...)  # <literal>`` comment is checked against the output.
* ``toml``: written to ``zmqserver.toml`` (the README's next block serves it) and checked
  with ``zmqserver check``. ``c``: compiled and run when a compiler and ``zmq.h`` are there.
* Other blocks (``text``, diagrams, mermaid) are output samples and pictures: not run.

The default ports 6660/6661 (and 6670-6672, 6680-6681) are rewritten to free ones: clients and
raw workers reach a server this test starts (``examples.upper:app`` with ``--remote-workers``),
and each server a block starts gets a pair of its own. ``/etc/zmqserver`` and ``/var/log``
become directories in the work directory, ``broker.example.org`` 127.0.0.1. What cannot run
here is in SKIP, each with its reason.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zmq
from tests.helpers import REPO, clean_env

# The same whichever build of the broker runs: make test runs it once (pyproject's markers).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120), pytest.mark.compiled_pass]

DOCS = [
    "README.md",
    "docs/architecture.md",
    "docs/protocol.md",
    "docs/reliability.md",
    "docs/security.md",
    "BENCHMARKS.md",
    "bench/README.md",
]
BIN = Path(sys.executable).parent

#: Blocks (or, in a shell block, commands) that cannot run here: (file, text they contain) ->
#: why. Keep it short; every entry is a piece of documentation no test keeps true.
SKIP = {
    ("README.md", "make test"): "the whole suite, of which this test is a part",
    ("README.md", 'user = "zmqserver"'): "names a user and /var/log, /run paths CI lacks",
    ("README.md", "--ha-role"): "two hosts; tests/integration/test_ha.py runs a pair on one",
    ("README.md", "host-a:6660,host-b:6660"): "the two hosts' pair above",
    ("docs/architecture.md", "class Component(Protocol)"): (
        "a summary of the contract's signatures, not code (supervisor/component.py is)"
    ),
    ("docs/security.md", "jobs.example.org"): (
        "a client of the walk-through's remote server; README's Security block runs the same "
        "client and server with local keys"
    ),
    ("docs/security.md", "zmqserver worker --connect"): (
        "a remote pool of the walk-through's server; README's remote pools block runs one"
    ),
    ("BENCHMARKS.md", "bench.run"): (
        "the benchmark suite takes minutes; tests/integration/test_bench_smoke.py runs it small"
    ),
    ("bench/README.md", "make bench"): "the same benchmark suite",
    ("BENCHMARKS.md", "bench.pubsub"): "pub-sub benchmarks of minutes, 1,000 sockets",
}

#: Blocks run in these languages; others are samples of output or pictures.
RUN = {"sh", "console", "python", "toml", "c"}
STEP_TIMEOUT = 30.0
READY_TIMEOUT = 20.0


@dataclass
class Block:
    file: str
    lang: str
    text: str
    line: int
    #: ``(`name.py`)`` in the paragraph before it: the block is that file.
    filename: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line} ({self.lang})"


def blocks(file: str) -> list[Block]:
    text = (REPO / file).read_text()
    found = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        before = text[: match.start()].rstrip().rsplit("\n\n", 1)[-1]
        name = re.search(r"\(`(\w+\.py)`\):?$", before)
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(file, match[1], match[2], line, name[1] if name is not None else None))
    return found


def skip_reason(file: str, text: str) -> str | None:
    for (where, needle), reason in SKIP.items():
        if where == file and needle in text:
            return reason
    return None


def free_ports() -> tuple[int, int]:
    """Two consecutive free TCP ports (the frontend's and the backend's)."""
    first, second = consecutive_ports(2)
    return first, second


def consecutive_ports(count: int) -> list[int]:
    """``count`` consecutive free TCP ports (pub-sub's three: 6670-6672 in the docs)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + count > 65536:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for offset in range(count):
                    stack.enter_context(socket.socket()).bind(("0.0.0.0", port + offset))
            except OSError:
                continue
        return list(range(port, port + count))
    raise RuntimeError("no two consecutive free ports")


@dataclass
class Process:
    """A background process a block started: a server, a pool or a worker."""

    proc: subprocess.Popen[bytes]
    log: Path
    #: The ``--log-file`` of a server started with one: where its ready line goes.
    log_file: Path | None = None

    def output(self) -> str:
        text = self.log.read_text(errors="replace")
        if self.log_file is not None and self.log_file.exists():
            text += self.log_file.read_text(errors="replace")
        return text

    def wait_ready(self, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while "zmqserver ready" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not get ready:\n{self.output()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """TERM to its process group (started in its own session), bounded, then KILL."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of the group is left
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


@dataclass
class Reader:
    """Runs blocks the way a reader would, in one work directory."""

    work: Path
    shared: tuple[int, int]
    env: dict[str, str]
    #: The pub-sub ports that stand for the docs' 6670-6672 (one set for the whole run: a block
    #: that starts a server with them comes before the blocks that use them).
    pubsub: list[int] = field(default_factory=lambda: consecutive_ports(3))
    #: The ports of the docs' durable-jobs server (6680, 6681), kept for the blocks after it.
    durable: list[int] = field(default_factory=lambda: consecutive_ports(2))
    background: list[Process] = field(default_factory=list)
    #: Background processes that last until the end of the file (a raw worker).
    lasting: list[Process] = field(default_factory=list)

    def rewrite(self, text: str, ports: tuple[int, int]) -> str:
        text = re.sub(r"\b6660\b", str(ports[0]), text)
        text = re.sub(r"\b6661\b", str(ports[1]), text)
        for documented, port in zip(
            (6670, 6671, 6672, 6680, 6681), self.pubsub + self.durable, strict=True
        ):
            text = re.sub(rf"\b{documented}\b", str(port), text)
        text = text.replace("/etc/zmqserver", f"{self.work}/etc/zmqserver")
        text = text.replace("/var/log/", f"{self.work}/")
        text = text.replace("broker.example.org", "127.0.0.1")
        return text.replace(".venv/bin/", f"{BIN}/")

    def spawn(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> Process:
        log = self.work / f"{name}-{len(self.background) + len(self.lasting)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=self.work,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Process(proc, log)

    def run(self, argv: list[str], block: Block, what: str) -> str:
        try:
            result = subprocess.run(
                argv,
                cwd=self.work,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=STEP_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{block}: {what} did not finish in {STEP_TIMEOUT}s")
        if result.returncode != 0:
            pytest.fail(
                f"{block}: {what} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result.stdout

    def end_block(self) -> None:
        for process in self.background:
            process.stop()
        self.background.clear()

    def end_file(self) -> None:
        self.end_block()
        for process in self.lasting:
            alive = process.proc.poll() is None
            process.stop()
            assert alive, f"a background block of this file exited:\n{process.output()}"
        self.lasting.clear()

    # -- the kinds of block -----------------------------------------------------------------

    def shell(self, block: Block) -> None:
        commands = re.sub(r"\\\n\s*", " ", block.text).splitlines()
        ports = self.shared
        for command in commands:
            command = command.removeprefix("$ ").strip()
            if not command or command.startswith("#"):
                continue
            if skip_reason(block.file, command) is not None:
                continue
            words = command.split("#")[0].split()
            program = [w for w in words if "=" not in w or w.startswith("-")][:2]
            if program[:2] in (["zmqserver", "serve"], ["zmqserver", "worker"]) or (
                program[:2] == ["make", "serve"]
            ):
                ports = self.server_line(block, command, program, ports)
                continue
            line = self.rewrite(command, ports)
            if re.search(r"\bzmq-client\b", line) and " -e " not in line:
                line = re.sub(r"\bzmq-client\b", f"zmq-client -e tcp://127.0.0.1:{ports[0]}", line)
            out = self.run(["bash", "-c", line], block, repr(command))
            prints = re.search(r"#.*prints ([A-Z][A-Z0-9]*)\b", command)  # "prints HELLO"
            if prints is not None:
                assert prints[1] in out, f"{block}: {command!r} printed {out!r}"

    def server_line(
        self, block: Block, command: str, program: list[str], last: tuple[int, int]
    ) -> tuple[int, int]:
        """Start a server (or pool) in the background; the ports later commands talk to."""
        if program[0] == "make":
            if subprocess.run(["make", "-q", ".venv/.installed"], cwd=REPO).returncode != 0:
                pytest.skip("the venv is older than its sources: make would rebuild it")
            ports = free_ports()
            line = f"make -s -C {REPO} serve PORTS='{ports[0]} {ports[1]}'"
        elif program[1] == "worker":
            ports = last  # a pool connects to the block's server
            line = self.rewrite(command, ports)
        else:
            ports = free_ports()
            line = self.rewrite(command, ports)
        env = {"ZMQSERVER_PORT": f"{ports[0]} {ports[1]}"} if program[1] == "serve" else {}
        process = self.spawn(["bash", "-c", line], "server", env)
        log_file = re.search(r"--log-file[ =](\S+)", line)
        if log_file is not None:
            process.log_file = self.work / log_file[1]
        # A pub-sub or durable-jobs server stays up for the Python examples that follow its
        # block, as it would in the reader's other terminal.
        lasting = "--pubsub-port" in command or "--store" in command
        (self.lasting if lasting else self.background).append(process)
        process.wait_ready(f"{block}: {command!r}")
        return ports

    def python(self, block: Block) -> None:
        if "zmqserver.run(" in block.text:
            self.python_server(block)
            return
        text = self.rewrite(block.text, self.shared)
        if block.filename is not None:
            (self.work / block.filename).write_text(text)
        if "MDPW02" in text and "while True" in text:
            self.lasting.append(self.spawn([sys.executable, "-c", text], "worker"))
            return
        out = self.run([sys.executable, "-c", text], block, "the block")
        for expected in expected_prints(block.text):
            assert expected in out, f"{block}: expected {expected} in the output:\n{out}"

    def python_server(self, block: Block) -> None:
        ports = free_ports()
        # The block's own ports are rewritten; a block that names none gets these (run()'s
        # keywords win over nothing else, so the test supplies the default it would use).
        prelude = (
            "import zmqserver\n"
            "_run = zmqserver.run\n"
            f"zmqserver.run = lambda *a, **kw: _run(*a, **{{'port': {ports}, **kw}})\n"
        )
        process = self.spawn(
            [sys.executable, "-c", prelude + self.rewrite(block.text, ports)], "run"
        )
        self.background.append(process)
        process.wait_ready(str(block))
        ctx = zmq.Context()
        try:
            for frames in ([b"hello"], [b"two", b"frames"]):
                req = ctx.socket(zmq.REQ)
                req.setsockopt(zmq.LINGER, 0)
                req.connect(f"tcp://127.0.0.1:{ports[0]}")
                req.send_multipart(frames)
                assert req.poll(10_000), f"{block}: no reply to {frames}:\n{process.output()}"
                reply = req.recv_multipart()
                req.close()
                assert not reply[0].startswith(b"ERROR"), f"{block}: {frames} -> {reply}"
        finally:
            ctx.destroy(linger=0)

    def toml(self, block: Block) -> None:
        config = self.work / "zmqserver.toml"
        config.write_text(self.rewrite(block.text, self.shared))
        self.run(
            [str(BIN / "zmqserver"), "check", "--config", str(config)], block, "zmqserver check"
        )

    def c(self, block: Block) -> None:
        cc = shutil.which("cc")
        header = subprocess.run(["cc", "-E", "-"], input=b"#include <zmq.h>\n", capture_output=True)
        if cc is None or header.returncode != 0:
            return  # no compiler or no zmq.h here; README says how to get them
        source = self.work / "client.c"
        source.write_text(self.rewrite(block.text, self.shared))
        self.run(["cc", "-o", str(self.work / "client"), str(source), "-lzmq"], block, "cc")
        out = self.run([str(self.work / "client")], block, "the C client")
        assert "status 0: HELLO" in out, out


def expected_prints(text: str) -> Iterator[str]:
    """The literals that ``print(...)  # <literal>, words`` comments promise, as printed."""
    for line in text.splitlines():
        match = re.match(r"\s*print\(.*\)\s*#\s*(.+)$", line)
        if match is None:
            continue
        comment = match[1]
        for end in range(len(comment), 0, -1):
            try:
                value = ast.literal_eval(comment[:end])
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, bytes | list):
                yield repr(value)
            break


@pytest.fixture(scope="module")
def reader() -> Iterator[Reader]:
    work = Path(tempfile.mkdtemp(prefix="zs-docs-"))
    (work / "home").mkdir()
    # Names the docs use for the reader's own app and hooks, until a block writes them.
    (work / "myapp.py").write_text("def handle(payload):\n    return payload\n")
    (work / "myapp_hooks.py").write_text("def load_model(config):\n    pass\n")
    env = clean_env()
    env |= {
        "HOME": str(work / "home"),
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": f"{REPO}{os.pathsep}{work}",
        "PYTHONUNBUFFERED": "1",
    }
    shared = free_ports()
    reader = Reader(work, shared, env)
    server = reader.spawn(
        [str(BIN / "zmqserver"), "serve", "examples.upper:app", "--port", *map(str, shared)]
        + ["--remote-workers", "--min-servers", "2"],
        "shared",
    )
    try:
        server.wait_ready("the shared server")
        yield reader
    finally:
        reader.end_file()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("file", DOCS)
def test_doc_blocks_run(reader: Reader, file: str) -> None:
    ran = 0
    try:
        for block in blocks(file):
            if block.lang not in RUN:
                continue
            # A shell block's commands are skipped one by one (Reader.shell).
            if block.lang not in ("sh", "console") and skip_reason(file, block.text):
                continue
            {
                "sh": reader.shell,
                "console": reader.shell,
                "python": reader.python,
                "toml": reader.toml,
                "c": reader.c,
            }[block.lang](block)
            reader.end_block()
            print(f"ran {block}")  # shown with -s
            ran += 1
    finally:
        reader.end_file()
    # Files whose blocks are all samples, pictures or in SKIP; any other ran something.
    assert ran or file in (
        "docs/architecture.md",
        "docs/reliability.md",
        "BENCHMARKS.md",
        "bench/README.md",
    )
