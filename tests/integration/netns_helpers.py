"""Two network namespaces joined by a veth pair, for the tests that cut one link and no other
(test_remote_pool.py's partition, test_ha_netns.py's peer link). Root and iproute2 only: the
context manager skips the test where either is missing or namespaces are not permitted, and
deletes both namespaces (the veth pair goes with them) whatever happens in the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    """One ``ip`` command, bounded; its result (the caller checks ``returncode``)."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@dataclass(frozen=True)
class VethPair:
    """Namespace ``left`` holds interface ``left_if`` at ``left_ip``; ``right`` likewise."""

    left: str
    right: str
    left_if: str
    right_if: str


@contextlib.contextmanager
def veth_pair(tag: str, left_ip: str, right_ip: str) -> Iterator[VethPair]:
    """Namespaces ``<tag><pid>l`` and ``<tag><pid>r``, addresses on one /24, all links up."""
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2 is not installed)")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    name = f"{tag}{os.getpid() % 100000}"
    pair = VethPair(f"{name}l", f"{name}r", f"{name}vl", f"{name}vr")
    made: list[str] = []
    try:
        for ns in (pair.left, pair.right):
            result = ip("netns", "add", ns)
            if result.returncode != 0:
                pytest.skip(f"`ip netns add` is not permitted here: {result.stderr.strip()}")
            made.append(ns)
        steps = [
            ("link", "add", pair.left_if, "netns", pair.left, "type", "veth", "peer", "name",
             pair.right_if, "netns", pair.right),
            ("-n", pair.left, "addr", "add", f"{left_ip}/24", "dev", pair.left_if),
            ("-n", pair.right, "addr", "add", f"{right_ip}/24", "dev", pair.right_if),
            ("-n", pair.left, "link", "set", "lo", "up"),
            ("-n", pair.right, "link", "set", "lo", "up"),
            ("-n", pair.left, "link", "set", pair.left_if, "up"),
            ("-n", pair.right, "link", "set", pair.right_if, "up"),
        ]  # fmt: skip
        for step in steps:
            result = ip(*step)
            if result.returncode != 0:
                pytest.skip(f"`ip {' '.join(step)}` failed: {result.stderr.strip()}")
        yield pair
    finally:
        for ns in made:
            ip("netns", "del", ns)
