"""The access log (``access_log``): one line per job, written as the job ends.

Rule 1: formatting and writing only. The routing core calls :meth:`AccessLog.write` through
:attr:`~zmqserver.broker.metrics.Recorder.access` (None when the log is off, so it costs
nothing then). Lines go through a buffered file, flushed when the master's loop comes round
(:meth:`AccessLog.flush`), not per job.

Format (space-separated, one job a line; docs/operations.md)::

    2026-12-03T09:02:28.256Z client=00a1b2c3 service=default id=7 job=0000000000000001
    outcome=ok wait=0.000112 run=0.000480 bytes=67

``id`` is the request id (``-`` for clients without one), ``job`` the broker's job address
(``-`` for a request refused before it became a job), times in seconds. A JSON form will come
with the server's ``--log-format json``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..errors import Status


class AccessLog:
    def __init__(self, path: str) -> None:
        self.stream: TextIO = (
            sys.stdout if path == "-" else open(path, "a", buffering=65536, encoding="utf-8")  # noqa: SIM115 - closed in close()
        )
        self.owned = path != "-"

    def write(
        self,
        service: bytes,
        job: bytes,
        status: int,
        wait: float,
        run: float,
        client: bytes,
        request_id: int,
        size: int,
    ) -> None:
        now = time.time()
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        )
        rid = "-" if request_id < 0 else str(request_id)
        self.stream.write(
            f"{stamp} client={client.hex()} service={service.decode('utf-8', 'replace') or '-'} "
            f"id={rid} job={job.hex() or '-'} outcome={Status(status).reason} "
            f"wait={wait:.6f} run={run:.6f} bytes={size}\n"
        )

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.flush()
        if self.owned:
            self.stream.close()
