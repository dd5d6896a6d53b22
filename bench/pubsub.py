"""Pub-sub benchmarks: fan-out to N subscribers, and what the server's events cost per job.

    .venv/bin/python -m bench.pubsub fanout --subscribers 1000 --rate 10000 --duration 5
    .venv/bin/python -m bench.pubsub events --duration 3

``fanout``: a server with pub-sub on, N raw SUB sockets spread over a few processes (each
polls its share), one publisher process sending ``rate`` updates/s to the collector for
``duration`` seconds, each value carrying its CLOCK_MONOTONIC send time. Reported: updates/s
delivered (to all subscribers together), p50/p99 publish-to-receipt latency, updates dropped,
and the master's CPU per update published.

``events``: the same jobs load (bench.loadgen, C8-K1-64B by default) against servers with
pub-sub off, pub-sub on without events, and events on with ``pubsub_job_events`` none, sample
and all; the jobs/s and the broker's CPU per job for each (``--rounds`` alternates the servers
that many times, for a noisy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from bench.procs import CLK_TCK, cpu_seconds

REPO = Path(__file__).resolve().parents[1]


def _server(workdir: Path, base: int, *flags: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "zmqserver", "serve", "examples.echo:app",
            "--frontend", f"ipc://{workdir}/front", "--min-servers", "2", "--max-servers", "2",
            "--min-spare-servers", "0", "--host", "127.0.0.1", *flags]  # fmt: skip
    if base:
        argv += ["--pubsub-port", str(base)]
    log = open(workdir / f"server-{base}.log", "wb")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait_log(workdir: Path, base: int, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    path = workdir / f"server-{base}.log"
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server not up: {path.read_text(errors='replace')[-2000:]}")


def thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid``'s main thread (the master's loop) and of its other threads
    (libzmq's I/O threads, which write each update to every subscriber's connection)."""
    main = other = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])
        if int(tid) == pid:
            main += ticks
        else:
            other += ticks
    return main / CLK_TCK, other / CLK_TCK


# -- fan-out --------------------------------------------------------------------------------------


def subscriber_process(endpoint: str, count: int, seconds: float, out: str) -> None:
    """``count`` SUB sockets; the latency (ns) of each update each receives, for ``seconds``."""
    from zmqserver._io import recv_batch  # compiled where built: a batch a call

    ctx = zmq.Context()
    socks = []
    poller = zmq.Poller()
    for _ in range(count):
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.SUBSCRIBE, b"/bench/")
        sock.connect(endpoint)
        socks.append(sock)
        poller.register(sock, zmq.POLLIN)
    print("ready", flush=True)
    latencies: list[int] = []
    received = 0
    last_seq: dict[int, int] = {}
    gaps = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for sock, _ in poller.poll(100):
            for frames in recv_batch(sock, 1000):
                now = time.monotonic_ns()
                received += 1
                (seq,) = struct.unpack("!q", frames[1])
                before = last_seq.get(id(sock))
                if before is not None and seq != before + 1:
                    gaps += 1
                last_seq[id(sock)] = seq
                if received % 7 == 0:  # a sample is enough for percentiles
                    latencies.append(now - int(bytes(frames[4][:20])))
    Path(out).write_text(json.dumps({"received": received, "latencies": latencies, "gaps": gaps}))
    ctx.destroy(linger=0)


def publisher_process(endpoint: str, rate: int, seconds: float, tick: float = 0.001) -> None:
    """``rate`` updates/s for ``seconds``: every ``tick`` seconds, the updates then due."""
    from zmqserver import Publisher

    ctx = zmq.Context()
    with Publisher(endpoint, context=ctx) as pub:
        pub.wait_connected(10)
        sent = 0
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                break
            due = int(elapsed * rate)
            while sent < due:
                pub.publish(b"/bench/k%d" % (sent % 100), b"%020d" % time.monotonic_ns())
                sent += 1
            time.sleep(tick)
        print(sent, flush=True)
    ctx.term()


def fanout(args: argparse.Namespace) -> dict[str, object]:
    from tests.integration.pubsub_helpers import free_base_port

    workdir = Path(tempfile.mkdtemp(prefix="bench-pubsub-"))
    base = free_base_port()
    server = _server(workdir, base, "--pubsub-hwm", str(args.hwm), "--no-pubsub-events")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _wait_log(workdir, base, "pub-sub: snapshots on")
        per = -(-args.subscribers // args.processes)
        listen = args.duration + 4
        outs = []
        for i in range(args.processes):
            count = min(per, args.subscribers - i * per)
            if count <= 0:
                break
            out = str(workdir / f"sub-{i}.json")
            outs.append(out)
            procs.append(subprocess.Popen(
                [sys.executable, "-c", "import sys; from bench.pubsub import subscriber_process;"
                 f"subscriber_process('tcp://127.0.0.1:{base + 1}', {count}, {listen}, {out!r})"],
                cwd=REPO, stdout=subprocess.PIPE, start_new_session=True))  # fmt: skip
        for proc in procs:
            assert proc.stdout is not None
            proc.stdout.readline()
        time.sleep(1.0)  # the subscriptions reach the PUB
        cpu0 = cpu_seconds([server.pid])
        loop0, io0 = thread_cpu(server.pid)
        publisher = subprocess.run(
            [sys.executable, "-c", "from bench.pubsub import publisher_process;"
             f"publisher_process('tcp://127.0.0.1:{base}', {args.rate}, {args.duration},"
             f" {args.tick})"],
            cwd=REPO, capture_output=True, text=True, timeout=args.duration + 60, check=True,
        )  # fmt: skip
        cpu1 = cpu_seconds([server.pid])
        loop1, io1 = thread_cpu(server.pid)
        sent = int(publisher.stdout.split()[-1])
        for proc in procs:
            proc.wait(listen + 30)
        results = [json.loads(Path(out).read_text()) for out in outs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        _stop(server)
    received = sum(r["received"] for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])
    expected = sent * args.subscribers

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1e6 if latencies else 0

    return {
        "subscribers": args.subscribers,
        "hwm": args.hwm,
        "rate_asked": args.rate,
        "publisher_tick_s": args.tick,
        "published": sent,
        "delivered_per_s": round(received / args.duration),
        "delivered_ratio": round(received / expected, 4) if expected else 0,
        "gaps_seen": sum(r["gaps"] for r in results),
        "p50_ms": round(pct(0.50), 2),
        "p99_ms": round(pct(0.99), 2),
        "broker_cpu_us_per_update": round(1e6 * (cpu1 - cpu0) / sent, 1) if sent else None,
        "loop_thread_us_per_update": round(1e6 * (loop1 - loop0) / sent, 1) if sent else None,
        "io_threads_us_per_update": round(1e6 * (io1 - io0) / sent, 1) if sent else None,
    }


# -- events ---------------------------------------------------------------------------------------


def events(args: argparse.Namespace) -> dict[str, object]:
    from tests.integration.pubsub_helpers import free_base_port

    out: dict[str, dict[str, list[float]]] = {}
    variants: list[tuple[str, bool, tuple[str, ...]]] = [
        ("pubsub off", False, ()),
        ("pubsub on, events off", True, ("--no-pubsub-events",)),
        ("job events none", True, ("--pubsub-job-events", "none")),
        ("job events sample", True, ("--pubsub-job-events", "sample")),
        ("job events all", True, ("--pubsub-job-events", "all")),
    ]
    for name, on, flags in variants * args.rounds:
        base = free_base_port() if on else 0
        workdir = Path(tempfile.mkdtemp(prefix="bench-events-"))
        server = _server(workdir, base, *flags)
        try:
            _wait_log(workdir, base, "clients on")
            time.sleep(1.0)
            done = subprocess.run(
                [sys.executable, "-m", "bench.loadgen", f"ipc://{workdir}/front", "-c",
                 str(args.clients), "-k", str(args.inflight), "-s", "64", "-d",
                 str(args.duration), "--broker-pid", str(server.pid), "--json"],
                cwd=REPO, capture_output=True, text=True, timeout=args.duration + 60, check=True,
            )  # fmt: skip
            result = json.loads(done.stdout)
            seen = out.setdefault(name, {"jobs_per_s": [], "broker_cpu_us_per_job": []})
            seen["jobs_per_s"].append(result.get("jobs_per_s"))
            seen["broker_cpu_us_per_job"].append(result.get("broker_cpu_us_per_job"))
        finally:
            _stop(server)
    return out  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pubsub", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fan = commands.add_parser("fanout")
    fan.add_argument("--subscribers", type=int, default=50)
    fan.add_argument("--processes", type=int, default=4)
    fan.add_argument("--rate", type=int, default=10_000)
    fan.add_argument("--duration", type=float, default=5.0)
    fan.add_argument(
        "--tick", type=float, default=0.001, help="the publisher sends what is due this often (s)"
    )
    fan.add_argument(
        "--hwm", type=int, default=100_000, help="pubsub_hwm (lower it for many subscribers)"
    )
    ev = commands.add_parser("events")
    ev.add_argument("--duration", type=float, default=3.0)
    ev.add_argument("--clients", type=int, default=8)
    ev.add_argument("--inflight", type=int, default=1)
    ev.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    result = fanout(args) if args.command == "fanout" else events(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
