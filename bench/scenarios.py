"""The suite's measurements besides the throughput/latency matrix.

* :func:`idle_cpu`: CPU of an idle zmqserver (broker and workers apart), and how often it wakes.
* :func:`queued_memory`: the broker's RSS with 100,000 jobs queued behind a busy worker.
* :func:`crowd`: 100 workers and 1,000 connected clients sending now and then; the latency of a
  probe client before and while the crowd is connected shows whether the broker stays responsive.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import zmq

from bench import procs
from bench.loadgen import LoadSpec, run_load
from bench.procs import BenchError, Launcher
from bench.systems import zmqserver_system

SETTLE_TIMEOUT = 5.0


def _schedstat_ns(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _wakeups(pid: int) -> int:
    """Voluntary context switches of all the process's threads: how often it went to sleep."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
    except OSError:
        pass
    return total


def idle_cpu(launcher: Launcher, workers: int = 10, window: float = 5.0) -> dict[str, Any]:
    """An idle zmqserver with ``workers`` workers: CPU in % of one core over ``window`` seconds.

    Measured once the server echoes, has all its workers and has gone quiet (under 2% of a core
    over 0.25 s, waiting at most SETTLE_TIMEOUT), so start-up work is not counted. CPU from
    utime+stime (10 ms ticks) and from schedstat (ns); wake-ups from voluntary context switches.
    """
    with zmqserver_system(launcher, "idle", workers, "examples.echo:app") as server:
        assert server.broker_pid is not None
        broker, kids = server.broker_pid, server.worker_pids
        everyone = [broker, *kids]
        settled = False
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            before = sum(_schedstat_ns(p) for p in everyone)
            time.sleep(0.25)
            if sum(_schedstat_ns(p) for p in everyone) - before < 0.02 * 0.25e9:
                settled = True
                break
        t0 = time.monotonic()
        ticks0 = (procs.cpu_seconds([broker]), procs.cpu_seconds(kids))
        ns0 = (_schedstat_ns(broker), sum(_schedstat_ns(p) for p in kids))
        wake0 = (_wakeups(broker), sum(_wakeups(p) for p in kids))
        time.sleep(window)
        elapsed = time.monotonic() - t0
        ticks1 = (procs.cpu_seconds([broker]), procs.cpu_seconds(kids))
        ns1 = (_schedstat_ns(broker), sum(_schedstat_ns(p) for p in kids))
        wake1 = (_wakeups(broker), sum(_wakeups(p) for p in kids))
        server.check_workers()
    return {
        "workers": workers,
        "window_s": elapsed,
        "settled": settled,
        "broker_cpu_pct": 100 * (ticks1[0] - ticks0[0]) / elapsed,
        "workers_cpu_pct": 100 * (ticks1[1] - ticks0[1]) / elapsed,
        "broker_cpu_pct_schedstat": 100 * (ns1[0] - ns0[0]) / 1e9 / elapsed,
        "workers_cpu_pct_schedstat": 100 * (ns1[1] - ns0[1]) / 1e9 / elapsed,
        "broker_wakeups_per_s": (wake1[0] - wake0[0]) / elapsed,
        "workers_wakeups_per_s": (wake1[1] - wake0[1]) / elapsed,
    }


# -- 100,000 jobs queued ---------------------------------------------------------------------------

MMI_MARKER = [b"", b"MDPC02", b"\x01", b"mmi.service", b"default"]


def _is_marker_reply(frames: list[bytes]) -> bool:
    return b"mmi.service" in frames


def queued_memory(
    launcher: Launcher, jobs: int = 100_000, pushers: int = 4, size: int = 64
) -> dict[str, Any]:
    """The broker's VmRSS before and after ``jobs`` plain requests are queued.

    One worker (``bench.apps:uneven``) is kept busy by a 60 s job, ``--max-queue`` is raised
    above ``jobs``, and ``pushers`` DEALERs send their share without waiting, each followed by an
    MMI request on the same connection: the broker reads a connection's messages in order, so
    once every MMI reply is back, every job before it has been read and queued (or refused; any
    refusal would arrive as a reply and is counted). Other options are zmqserver's defaults,
    including the 60 s job timeout (so each queued job also has a deadline timer).
    """
    # No bound per client either: four clients queue 25,000 jobs each (max_client_inflight).
    extra = ("--max-queue", str(2 * jobs), "--max-client-inflight", "0")
    ctx: zmq.Context[Any] = zmq.Context()
    ctx.setsockopt(zmq.LINGER, 0)
    result: dict[str, Any] = {"jobs": jobs, "pushers": pushers, "payload_bytes": size}
    with zmqserver_system(launcher, "queue", 1, "bench.apps:uneven", *extra) as server:
        broker = server.broker_pid
        assert broker is not None
        try:
            # Occupy the only worker; the MMI reply proves the broker has dispatched it.
            blocker = ctx.socket(zmq.DEALER)
            blocker.connect(server.endpoints[0])
            blocker.send_multipart([b"", b"~60000 blocker"])
            blocker.send_multipart(MMI_MARKER)
            if not blocker.poll(10_000) or not _is_marker_reply(blocker.recv_multipart()):
                raise BenchError("queued_memory: no MMI reply after the blocking job")
            time.sleep(0.2)
            result["rss_before_kb"] = procs.status_kb(broker, "VmRSS")
            socks = []
            for _ in range(pushers):
                sock = ctx.socket(zmq.DEALER)
                sock.sndhwm = 0  # no limit: queue all of it in ZeroMQ if the broker lags
                sock.connect(server.endpoints[0])
                socks.append(sock)
            filler = b"." * size
            started = time.monotonic()
            for n in range(jobs):
                header = b"q%09d " % n
                socks[n % pushers].send_multipart([b"", header + filler[len(header) :]])
            for sock in socks:
                sock.send_multipart(MMI_MARKER)
            sent = time.monotonic()
            markers, others = 0, 0
            deadline = time.monotonic() + 120
            poller = zmq.Poller()
            for sock in socks:
                poller.register(sock, zmq.POLLIN)
            while markers < pushers and time.monotonic() < deadline:
                for sock, _ in poller.poll(500):
                    if _is_marker_reply(sock.recv_multipart()):
                        markers += 1
                    else:
                        others += 1
            if markers < pushers:
                raise BenchError("queued_memory: the broker did not read every job within 120s")
            queued = time.monotonic()
            time.sleep(0.5)
            result.update(
                send_s=sent - started,
                queued_s=queued - started,
                early_replies=others,  # refusals (queue_full...) would land here: expect 0
                rss_after_kb=procs.status_kb(broker, "VmRSS"),
                hwm_kb=procs.status_kb(broker, "VmHWM"),
            )
            result["bytes_per_job"] = (
                (result["rss_after_kb"] - result["rss_before_kb"]) * 1024 / jobs
            )
            # The clients leave first; the server then fails the queued jobs on a fast stop
            # (SIGINT). Each of those replies goes to a client that is gone.
            for sock in [*socks, blocker]:
                sock.close()
            log_lines_before = _count_lines(server.log)
            stop_started = time.monotonic()
            assert server.proc is not None
            launcher.stop(server.proc, server.worker_pids, sig=signal.SIGINT)
            result["stop_s"] = time.monotonic() - stop_started
            result["log_lines_at_stop"] = _count_lines(server.log) - log_lines_before
        finally:
            ctx.destroy(linger=0)
    return result


def _count_lines(path: Any) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


# -- 100 workers, 1,000 clients --------------------------------------------------------------------


def crowd(
    launcher: Launcher,
    workers: int = 100,
    clients: int = 1000,
    processes: int = 4,
    interval: float = 2.0,
    duration: float = 5.0,
) -> dict[str, Any]:
    """A probe client's latency, alone and while ``clients`` DEALERs are connected and sending.

    The crowd lives in ``processes`` processes; each of its sockets sends one 64-byte request every
    ``interval`` seconds (``clients / interval`` jobs/s in all), after one round trip each that
    proves it is connected. The probe is one synchronous REQ client (C=1, K=1, 64 B).
    """
    result: dict[str, Any] = {
        "workers": workers,
        "clients": clients,
        "processes": processes,
        "crowd_rate_per_s": clients / interval,
    }
    probe = LoadSpec(clients=1, k=1, size=64, duration=duration, warmup=0.5)
    with zmqserver_system(launcher, "crowd", workers, "examples.echo:app") as server:
        broker = server.broker_pid
        assert broker is not None
        result["fds_alone"] = procs.open_fds(broker)
        alone = run_load(
            launcher, server.endpoints, probe, broker_pid=broker, worker_pids=server.worker_pids
        )
        result["alone"] = alone.summary()
        share = [clients // processes + (i < clients % processes) for i in range(processes)]
        started = time.monotonic()
        crowd_procs = [
            launcher.start(
                "bench._crowd",
                [
                    json.dumps(
                        {
                            "endpoint": server.endpoints[0],
                            "sockets": n,
                            "interval": interval,
                            "index": i,
                        }
                    )
                ],
                pipes=True,
            )
            for i, n in enumerate(share)
        ]
        try:
            ready = procs.read_lines(crowd_procs, 90, "the crowd to connect")
            if not all(line.startswith(b"READY") for line in ready):
                raise BenchError(f"crowd: {ready!r}")
            result["crowd_connect_s"] = time.monotonic() - started
            result["fds_crowd"] = procs.open_fds(broker)
            loaded = run_load(
                launcher,
                server.endpoints,
                probe,
                broker_pid=broker,
                worker_pids=server.worker_pids,
                extra_pids=[p.pid for p in crowd_procs],
            )
            result["with_crowd"] = loaded.summary()
            for proc in crowd_procs:
                procs.write_line(proc, "STOP")
            reports = [json.loads(r) for r in procs.read_lines(crowd_procs, 30, "crowd results")]
            result["crowd"] = {
                "jobs": sum(r["jobs"] for r in reports),
                "errors": sum(r["errors"] for r in reports),
                "samples": [s for r in reports for s in r["samples"]][:3],
                "skipped_turns": sum(r["skipped_turns"] for r in reports),
                "p50_us_max": max((r["p50_us"] or 0) for r in reports),
                "p99_us_max": max((r["p99_us"] or 0) for r in reports),
            }
            server.check_workers()
        finally:
            for proc in crowd_procs:
                launcher.stop(proc)
    return result
