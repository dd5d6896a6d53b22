"""Apps for the benchmark (run by zmqserver workers and by the baselines' REP workers alike).

``uneven``: echo, after sleeping as the payload asks. A payload whose first frame starts with
``~MS `` (``~`` then decimal milliseconds then a space, e.g. ``~0050 ...``) sleeps MS ms first;
anything else is echoed at once. The load generator writes this field into every payload it
sends, so one flag decides per job whether it is fast or slow.
"""

from __future__ import annotations

import time


def sleep_ms(first: bytes) -> int:
    if first[:1] != b"~":
        return 0
    end = first.find(b" ", 1, 16)
    return int(first[1:end]) if end > 1 else 0


def uneven(payload: bytes | list[bytes]) -> bytes | list[bytes]:
    first = payload[0] if isinstance(payload, list) else payload
    ms = sleep_ms(first)
    if ms:
        time.sleep(ms / 1000)
    return payload
