"""Measurements of per-client fairness and bounds (docs/reliability.md §6.5).

* :func:`fairness`: one client floods a service with jobs while a probe client sends one job a
  second; the probe's latency, in job-times, shows whether a flood delays everyone else.
* :func:`slow_readers`: DEALERs that send and never read; the broker's RSS at the peak and
  after they disconnect.
* :func:`async_client`: the zguide's asynchronous MDP client pattern, all requests sent before
  any reply is read; how many replies come back.

Each takes ``extra``: more serve options (the branch under test may have options an older one
lacks, so the caller says which). Run them alone with ``python -m bench.clients NAME [OPTION...]``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from bench import procs
from bench.procs import BenchError, Launcher
from bench.systems import zmqserver_system


def _dealer(ctx: zmq.Context[Any], endpoint: str, **options: int) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.DEALER)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name.upper()), value)
    sock.connect(endpoint)
    return sock


def fairness(
    launcher: Launcher,
    *extra: str,
    flood: int = 10_000,
    job_ms: int = 5,
    workers: int = 2,
    probes: int = 10,
) -> dict[str, Any]:
    """A DEALER sends ``flood`` jobs of ``job_ms`` ms at once; a REQ probe then sends one such
    job a second, ``probes`` times. Latency of each probe job, in ms and in job-times."""
    ctx: zmq.Context[Any] = zmq.Context()
    ctx.setsockopt(zmq.LINGER, 0)
    result: dict[str, Any] = {"flood": flood, "job_ms": job_ms, "workers": workers}
    with zmqserver_system(launcher, "fair", workers, "bench.apps:uneven", *extra) as server:
        try:
            flooder = _dealer(ctx, server.endpoints[0], sndhwm=0)
            body = b"~%d flood" % job_ms
            for _ in range(flood):
                flooder.send_multipart([b"", body])
            probe = ctx.socket(zmq.REQ)
            probe.connect(server.endpoints[0])
            latencies = []
            for n in range(probes):
                started = time.monotonic()
                probe.send(b"~%d probe %d" % (job_ms, n))
                if not probe.poll(120_000):
                    raise BenchError("fairness: no reply to the probe within 120 s")
                probe.recv()
                latencies.append(time.monotonic() - started)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
            latencies.sort()
            p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
            result.update(
                probe_p50_ms=1000 * latencies[len(latencies) // 2],
                probe_p99_ms=1000 * p99,
                probe_max_ms=1000 * latencies[-1],
                p99_job_times=1000 * p99 / job_ms,
            )
        finally:
            ctx.destroy(linger=0)
    return result


def slow_readers(
    launcher: Launcher, *extra: str, clients: int = 4, size: int = 256 * 1024, seconds: float = 8
) -> dict[str, Any]:
    """``clients`` DEALERs send ``size``-byte echo jobs as fast as they may and never read, for
    ``seconds``; the broker's VmRSS before, at the peak, and 3 s after they disconnect."""
    ctx: zmq.Context[Any] = zmq.Context()
    ctx.setsockopt(zmq.LINGER, 0)
    result: dict[str, Any] = {"clients": clients, "reply_bytes": size}
    with zmqserver_system(launcher, "slow", 2, "examples.echo:app", *extra) as server:
        broker = server.broker_pid
        assert broker is not None
        try:
            result["rss_before_kb"] = procs.status_kb(broker, "VmRSS")
            socks = [
                _dealer(ctx, server.endpoints[0], rcvhwm=1, rcvbuf=4096) for _ in range(clients)
            ]
            payload = b"x" * size
            sent = 0
            until = time.monotonic() + seconds
            peak = 0
            while time.monotonic() < until:
                for sock in socks:
                    try:
                        sock.send_multipart([b"", payload], zmq.NOBLOCK)
                        sent += 1
                    except zmq.Again:
                        pass
                peak = max(peak, procs.status_kb(broker, "VmRSS"))
                time.sleep(0.001)
            result["sent"] = sent
            result["rss_peak_kb"] = max(peak, procs.status_kb(broker, "VmHWM"))
            for sock in socks:
                sock.close(linger=0)
            time.sleep(3)
            result["rss_after_kb"] = procs.status_kb(broker, "VmRSS")
            server.check_workers()
        finally:
            ctx.destroy(linger=0)
    return result


def async_client(launcher: Launcher, *extra: str, requests: int = 100_000) -> dict[str, Any]:
    """The zguide's asynchronous MDP client: one DEALER sends ``requests`` MDP/0.2 requests,
    then reads; how many replies came back (each one's body checked)."""
    ctx: zmq.Context[Any] = zmq.Context()
    ctx.setsockopt(zmq.LINGER, 0)
    result: dict[str, Any] = {"requests": requests}
    with zmqserver_system(launcher, "async", 2, "examples.echo:app", *extra) as server:
        try:
            sock = _dealer(ctx, server.endpoints[0], sndhwm=0, rcvhwm=0)
            service = b"default"
            started = time.monotonic()
            for n in range(requests):
                sock.send_multipart([b"MDPC02", b"\x01", service, b"%d" % n])
            got, errors, seen = 0, 0, set()
            while sock.poll(5000):
                frames = sock.recv_multipart()
                if frames[-1].isdigit():
                    seen.add(int(frames[-1]))
                    got += 1
                else:
                    errors += 1
            result.update(
                replies=got,
                distinct=len(seen),
                errors=errors,
                lost=requests - got - errors,
                seconds=time.monotonic() - started - 5,
            )
        finally:
            ctx.destroy(linger=0)
    return result


if __name__ == "__main__":
    name, *options = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="zmqbench-") as tmp:
        launcher = Launcher(Path(tmp))
        try:
            print(json.dumps({name: globals()[name](launcher, *options)}, indent=1))
        finally:
            launcher.stop_all()
