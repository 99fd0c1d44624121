"""Waiting in tests: on files, process states and events, never on a pause or a limit tuned to an idle machine.

A test that must not hang forever still needs some limit; :func:`patience` turns what a wait takes on an idle
machine into a limit that only a hang reaches: ten times as long, times the load per core when the machine is
busier than one runnable process per core (2 cores at load 16: 80 times), times ``$HFPRUNE_TEST_PATIENCE``.
No test asserts how long anything took.
"""

from __future__ import annotations

import os
import time
from typing import Callable

HANG_FACTOR = 10


def load_per_core() -> float:
    """The 1-minute load average per core, at least 1."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this system
        return 1.0
    return max(1.0, load / (os.cpu_count() or 1))


def patience(idle_seconds: float) -> float:
    """A limit for a wait that takes up to ``idle_seconds`` on an idle machine, reached only by a hang."""
    return idle_seconds * HANG_FACTOR * load_per_core() * float(os.environ.get("HFPRUNE_TEST_PATIENCE", "1"))


def wait_until(condition: Callable[[], bool], what: str, idle_seconds: float, poll: float = 0.02) -> None:
    """Return as soon as ``condition()`` holds (checked every ``poll`` seconds); fail saying ``what`` did not
    happen only after ``patience(idle_seconds)``."""
    deadline = time.monotonic() + patience(idle_seconds)
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen (waited {patience(idle_seconds):.0f} s)"
        time.sleep(poll)


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True
