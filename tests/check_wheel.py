"""Install zmqserver as a user would, from a wheel, and check that what runs is compiled.

``make test`` runs this (``make wheel-check``): the editable tree that the rest of the suite
tests is not what ``pip install`` gives a user. Here the wheel is built with build isolation
(``pip wheel .``), installed into a fresh virtualenv outside the tree, and then:

1. ``python -W error -c "import zmqserver"``: no warning at import (a build that its import
   judged stale or partial would warn, and the pure-Python path would run);
2. ``zmqserver --version`` names every compiled part: each module of ``_compiled.MODULES``,
   and ``_fastio`` (wherever the editable build compiled it: it needs zmq.h);
3. ``zmqserver serve`` (the default app, echo) serves one job to ``zmq-client``, under
   ``-W error`` too, and stops on SIGTERM with exit status 0.

Usage: ``python tests/check_wheel.py [--keep]`` (``--keep`` leaves the temporary directory).
Exit status 0 when all holds; otherwise 1, with what failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Bounds for each step: a cold wheel build compiles with mypyc (about a minute on 2 cores).
BUILD_TIMEOUT = 900
STEP_TIMEOUT = 300
SERVE_TIMEOUT = 30


def _run(cmd: list[str], cwd: Path, timeout: float = STEP_TIMEOUT, **kw: object) -> str:
    print("+", " ".join(cmd), flush=True)
    done = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, **kw
    )
    if done.returncode != 0:
        raise SystemExit(
            f"wheel check: {cmd[0]} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _copy_source(target: Path) -> Path:
    """The files a release would hold: those git tracks or would track (not ignored), as they
    are in the working tree. Not the tree itself: its build/ directory keeps what earlier builds
    made, modules since moved included, and setuptools would put them in the wheel."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True, timeout=STEP_TIMEOUT,
    ).stdout.split(b"\0")  # fmt: skip
    for name in filter(None, listed):
        path = ROOT / os.fsdecode(name)
        if path.is_file():  # a tracked file deleted in the working tree is not copied
            (target / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.relative_to(ROOT))
    return target


def _tree_has_fastio() -> bool:
    """Did the editable build compile _fastio? (It needs zmq.h; where the tree has it, the
    wheel, built on the same machine, must have it too.)"""
    stamp = ROOT / "src" / "zmqserver" / "_build.json"
    return bool(json.loads(stamp.read_text()).get("fastio")) if stamp.exists() else True


def _clean_env() -> dict[str, str]:
    """The environment without what would make the installed copy run another way."""
    drop = ("ZMQSERVER_PURE_PYTHON", "PYTHONPATH", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("ZMQSERVER_")}


def _check_contents(wheel: Path) -> None:
    """Every module in the wheel has its source in the tree: nothing stale came along."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for name in names:
        if (
            name.startswith("zmqserver/")
            and name.endswith(".py")
            and not (ROOT / "src" / name).exists()
        ):
            raise SystemExit(f"wheel check: {name} is in the wheel but not in src/")


def _serve_one_job(bin_dir: Path, work: Path, env: dict[str, str]) -> None:
    front, back = _free_ports(2)
    server = subprocess.Popen(
        [str(bin_dir / "python"), "-W", "error", "-m", "zmqserver", "serve",
         "--host", "127.0.0.1", "--port", str(front), str(back), "--min-servers", "1"],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        reply = _run(
            [str(bin_dir / "zmq-client"), "-e", f"tcp://127.0.0.1:{front}", "-t", "5", "-r", "4",
             "hello wheel"],
            cwd=work, env=env, timeout=SERVE_TIMEOUT,
        )  # fmt: skip
        if reply != "hello wheel\n":
            raise SystemExit(f"wheel check: the echo app answered {reply!r}")
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            output, _ = server.communicate(timeout=SERVE_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate(timeout=SERVE_TIMEOUT)
            raise SystemExit(f"wheel check: the server did not stop on SIGTERM\n{output}") from None
    if server.returncode != 0:
        raise SystemExit(f"wheel check: the server exited {server.returncode}\n{output}")
    if "Warning" in output:
        raise SystemExit(f"wheel check: the server warned\n{output}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="zmqserver-wheel-"))
    try:
        env = _clean_env()
        source = _copy_source(work / "source")
        dist = work / "dist"
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist),
              str(source)], cwd=work, timeout=BUILD_TIMEOUT, env=env)  # fmt: skip
        (wheel,) = dist.glob("zmqserver-*.whl")
        _check_contents(wheel)
        venv = work / "venv"
        _run([sys.executable, "-m", "venv", str(venv)], cwd=work)
        bin_dir = venv / "bin"
        _run([str(bin_dir / "pip"), "install", "--quiet", str(wheel)], cwd=work, env=env)

        _run([str(bin_dir / "python"), "-W", "error", "-c", "import zmqserver"], cwd=work, env=env)
        modules = _run(
            [str(bin_dir / "python"), "-W", "error", "-c",
             "from zmqserver import _compiled; print(' '.join(_compiled.MODULES))"],
            cwd=work, env=env,
        ).split()  # fmt: skip
        version = _run([str(bin_dir / "zmqserver"), "--version"], cwd=work, env=env).strip()
        print(version)
        expected = list(dict.fromkeys(name.partition(".")[0] for name in modules))
        if _tree_has_fastio():
            expected.append("_fastio")
        if f"(compiled: {', '.join(expected)})" not in version:
            raise SystemExit(f"wheel check: expected every part compiled ({expected}): {version}")

        _serve_one_job(bin_dir, work, env)
        print(f"wheel check: {wheel.name} passed in {time.monotonic() - started:.0f} s")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
