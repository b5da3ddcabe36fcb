"""Rate limits as a pure sliding window: how much a caller may send in any 60 seconds.

Nothing here reads a clock: every call takes `now`, seconds on a monotonic scale the caller chooses
(the proxy passes time.monotonic(); tests pass what they like).

A limit allows `per_minute` units (requests, input tokens or output tokens) in any 60 seconds.
A window keeps what it admitted in one-second slots (so it holds at most 61 of them, whatever the
traffic) and counts a slot for 60 s after the latest instant anything went into it: as if everything
in the slot happened then, so conservatively. The amount admitted in any real 60-second interval is
therefore at most what the window counted when the last of it was admitted, and a refused caller
never waits more than 60 s (the longest `retry-after` Claude Code follows).

A dimension admits a request while its count is below the limit: something is left. A request
costs 1, so a requests limit is never exceeded. Tokens are known only after the fact, so admission
records an estimate and settlement corrects it: a refund goes back to the slot the estimate was
taken from (while that slot still counts), an excess is added at settlement. The slack of a token
limit, which the property tests check: one request settled at a time, the amount admitted in any
60 s is at most `per_minute - 1` plus the last admitted request's tokens; with requests in flight,
plus what those requests use beyond their estimates.

The answer to a refused request says when to come back (`free_at`, the moment the count drops
below the limit if nothing else is admitted meanwhile) and when the window is empty again
(`empty_at`): Anthropic's `retry-after` and `anthropic-ratelimit-*-reset`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Final, NamedTuple

WINDOW_SECONDS: Final = 60


class Dimension(StrEnum):
    """What a limit counts; the values are the names in Anthropic's anthropic-ratelimit-<name>-* headers."""

    REQUESTS = "requests"
    INPUT_TOKENS = "input-tokens"
    OUTPUT_TOKENS = "output-tokens"


class _Slot:
    __slots__ = ("amount", "latest", "second")

    def __init__(self, second: int, latest: float) -> None:
        self.second = second
        self.latest = latest  # the last instant anything went in: the slot counts until 60 s after it
        self.amount = 0


class SlidingWindow:
    """Amounts admitted in the last minute, in one-second slots (at most 61 of them)."""

    __slots__ = ("_slots", "_total")

    def __init__(self) -> None:
        self._slots: deque[_Slot] = deque()  # oldest first
        self._total = 0

    def used(self, now: float) -> int:
        self._expire(now)
        return self._total

    def add(self, now: float, amount: int) -> int:
        """Count `amount` at `now`; returns the slot it went into (for a later refund)."""
        self._expire(now)
        second = math.floor(now)
        if self._slots and self._slots[-1].second >= second:  # the current slot (a clock never goes back here)
            slot = self._slots[-1]
            slot.latest = max(slot.latest, now)
        else:
            slot = _Slot(second, now)
            self._slots.append(slot)
        slot.amount += amount
        self._total += amount
        return slot.second

    def refund(self, second: int, amount: int, now: float) -> None:
        """Take back up to `amount` from the slot `add` returned, if it still counts."""
        self._expire(now)
        for slot in self._slots:
            if slot.second == second:
                taken = min(amount, slot.amount)
                slot.amount -= taken
                self._total -= taken
                return

    def free_at(self, now: float, limit: int) -> float:
        """When the count is below `limit` again, if nothing more is admitted: `now` when it is already."""
        remaining = self.used(now)
        if remaining < limit:
            return now
        for slot in self._slots:
            remaining -= slot.amount
            if remaining < limit:
                return slot.latest + WINDOW_SECONDS
        return now  # unreachable: an empty window counts nothing

    def empty_at(self, now: float) -> float:
        """When nothing is counted any more (Anthropic's "fully replenished")."""
        return self._slots[-1].latest + WINDOW_SECONDS if self.used(now) else now

    def _expire(self, now: float) -> None:
        slots = self._slots
        while slots and slots[0].latest + WINDOW_SECONDS <= now:
            self._total -= slots.popleft().amount


class Limit(NamedTuple):
    """One limit that applies to a request: whose window, what it counts, how much a minute."""

    key: Hashable  # the window's identity, e.g. (cost center, "developer", name, dimension)
    dimension: Dimension
    per_minute: int
    owner: str  # for people: whom the limit binds, e.g. "developer alice (cost center platform)"


class Reading(NamedTuple):
    """A limit's state at one instant: what Anthropic's anthropic-ratelimit-* headers report."""

    limit: Limit
    used: int
    free_at: float
    empty_at: float

    @property
    def remaining(self) -> int:
        return max(0, self.limit.per_minute - self.used)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.limit.per_minute


class Taken(NamedTuple):
    """What one admitted request counted in one window, kept until it settles."""

    key: Hashable
    dimension: Dimension
    second: int
    amount: int


class Admitted(NamedTuple):
    taken: tuple[Taken, ...]


class Refused(NamedTuple):
    """Over a limit. `binding` is the exhausted limit that frees up last: the request may go at its
    `free_at`, and not before; `readings` are every limit's state, for the headers."""

    binding: Reading
    readings: tuple[Reading, ...]

    def retry_after(self, now: float) -> int:
        """Whole seconds until `free_at`: at least 1, at most 60 (to the microsecond: float sums such as
        t + 60 - t are not always exactly 60)."""
        return min(WINDOW_SECONDS, max(1, math.ceil(round(self.binding.free_at - now, 6))))


class RateLimiter:
    """Windows by key, created on first use; `prune` drops the empty ones."""

    def __init__(self) -> None:
        self._windows: dict[Hashable, SlidingWindow] = {}

    def admit(self, limits: Sequence[Limit], amounts: Mapping[Dimension, int], now: float) -> Admitted | Refused:
        """Admit when every limit has something left, counting `amounts` (the request's estimate) in
        each; otherwise count nothing and say which limit binds."""
        windows = [self._window(limit.key) for limit in limits]
        if any(window.used(now) >= limit.per_minute for limit, window in zip(limits, windows, strict=True)):
            readings = self.readings(limits, now)
            exhausted = [reading for reading in readings if reading.exhausted]
            return Refused(max(exhausted, key=lambda reading: reading.free_at), readings)
        return Admitted(tuple(
            Taken(limit.key, limit.dimension, window.add(now, amounts.get(limit.dimension, 0)),
                  amounts.get(limit.dimension, 0))
            for limit, window in zip(limits, windows, strict=True)))

    def settle(self, admitted: Admitted, actual: Mapping[Dimension, int], now: float) -> None:
        """Correct each estimate with what the request really used (a dimension missing from `actual`
        keeps its estimate)."""
        for taken in admitted.taken:
            window = self._windows.get(taken.key)
            used = actual.get(taken.dimension)
            if window is None or used is None or used == taken.amount:
                continue
            if used < taken.amount:
                window.refund(taken.second, taken.amount - used, now)
            else:
                window.add(now, used - taken.amount)

    def readings(self, limits: Iterable[Limit], now: float) -> tuple[Reading, ...]:
        found = []
        for limit in limits:
            window = self._window(limit.key)
            found.append(Reading(limit, window.used(now), window.free_at(now, limit.per_minute),
                                 window.empty_at(now)))
        return tuple(found)

    def prune(self, now: float) -> None:
        """Forget windows that count nothing any more (subjects that went quiet, keys that left)."""
        self._windows = {key: window for key, window in self._windows.items() if window.used(now)}

    def __len__(self) -> int:
        return len(self._windows)

    def _window(self, key: Hashable) -> SlidingWindow:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = SlidingWindow()
        return window


def most_restrictive(readings: Iterable[Reading]) -> dict[Dimension, Reading]:
    """Per dimension, the reading with the least left (then the one that empties last): what a
    client is told, as Anthropic's headers report "the most restrictive limit currently in effect"."""
    chosen: dict[Dimension, Reading] = {}
    for reading in readings:
        known = chosen.get(reading.limit.dimension)
        if known is None or (reading.remaining, -reading.empty_at) < (known.remaining, -known.empty_at):
            chosen[reading.limit.dimension] = reading
    return chosen
