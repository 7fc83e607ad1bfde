"""Module-level functions for the parallel-map tests (spawned workers import them by name)."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path


def square(x: int) -> int:
    time.sleep(0.01 * ((7 * x) % 3))  # finish out of order
    return x * x


def disk_full(x: int) -> int:
    if x == 3:
        raise OSError(errno.ENOSPC, "No space left on device", f"/data/out/{x}.npz")
    return x


def bad_item(x: int) -> int:
    if x == 2:
        raise ValueError(f"item {x} is malformed")
    return x


def die(x: int) -> int:
    if x == 1:
        os._exit(9)  # a worker killed (the OOM killer, a segfault in a decoder)
    time.sleep(0.2)
    return x


def slow(x: int) -> int:
    time.sleep(0.3)
    return x


def missing_file(x: int) -> int:
    if x == 1:
        Path(f"/nonexistent/mvfer/take-{x}.mp4").read_bytes()
    return x
