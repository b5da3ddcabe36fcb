"""Waiting for the cluster to converge, for the tests that drive it: poll, never sleep blindly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL = 0.05


def eventually(probe: Callable[[], T | None], timeout: float = 20.0, what: str = "condition",
               interval: float = POLL) -> T:
    """Poll until `probe` returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        assert time.monotonic() < deadline, f"{what} not reached within {timeout:.0f} s (last seen: {last!r})"
        time.sleep(interval)
