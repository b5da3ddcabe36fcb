"""The operator's sense of time, injected so tests can roll windows over without sleeping a day."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...

    @property
    def longest_nap(self) -> float:
        """Seconds the reconciler may sleep before it looks at this clock again."""
        ...


class SystemClock:
    """Wall-clock time. The nap is capped so a suspended host or a stepped clock is noticed."""

    longest_nap = 30.0

    def now(self) -> datetime:
        return datetime.now(UTC)
