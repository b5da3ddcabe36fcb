"""Rate limits as a pure sliding window: how much a caller may send in any 60 seconds.

Nothing here reads a clock: every call takes `now`, seconds on a monotonic scale the caller chooses
(the proxy passes time.monotonic(); tests pass what they like).

A limit allows `per_minute` units (requests, input tokens or output tokens) in any 60 seconds. A
subject's window (a key's, a developer's, a cost center's) keeps what it admitted, all three counts
together, in one-second slots (so it holds at most 61 of them, whatever the traffic) and counts a
slot for 60 s after the latest instant anything went into it: as if everything in the slot happened
then, so conservatively. The amount admitted in any real 60-second interval is
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
from collections.abc import Hashable, Iterable, Sequence
from enum import StrEnum
from typing import Final, NamedTuple

WINDOW_SECONDS: Final = 60


class Dimension(StrEnum):
    """What a limit counts; the values are the names in Anthropic's anthropic-ratelimit-<name>-* headers."""

    REQUESTS = "requests"
    INPUT_TOKENS = "input-tokens"
    OUTPUT_TOKENS = "output-tokens"


# A subject's window counts every dimension at once, as (requests, input tokens, output tokens).
DIMENSIONS: Final = (Dimension.REQUESTS, Dimension.INPUT_TOKENS, Dimension.OUTPUT_TOKENS)
Counts = tuple[int, int, int]
PerMinute = tuple[int | None, int | None, int | None]  # None: that dimension is not limited


class _Slot:
    __slots__ = ("counts", "latest", "second")

    def __init__(self, second: int, latest: float) -> None:
        self.second = second
        self.latest = latest  # the last instant anything went in: the slot counts until 60 s after it
        self.counts = [0, 0, 0]


class SlidingWindow:
    """What one subject (a key, a developer, a cost center) was admitted in the last minute, per
    dimension, in one-second slots (at most 61 of them)."""

    __slots__ = ("_slots", "_totals")

    def __init__(self) -> None:
        self._slots: deque[_Slot] = deque()  # oldest first
        self._totals = [0, 0, 0]

    def used(self, now: float) -> list[int]:
        """The counts of the last minute (the window's own list: read it, do not change it)."""
        slots, totals = self._slots, self._totals
        while slots and slots[0].latest + WINDOW_SECONDS <= now:  # expire what no longer counts
            expired = slots.popleft().counts
            totals[0] -= expired[0]
            totals[1] -= expired[1]
            totals[2] -= expired[2]
        return totals

    def add(self, now: float, counts: Sequence[int]) -> int:
        """Count `counts` at `now`; returns the slot they went into (for a later refund)."""
        self.used(now)
        second = math.floor(now)
        slots = self._slots
        if slots and slots[-1].second >= second:  # the current slot (a clock never goes back here)
            slot = slots[-1]
            slot.latest = max(slot.latest, now)
        else:
            slot = _Slot(second, now)
            slots.append(slot)
        requests, input_tokens, output_tokens = counts  # unrolled: this runs for every request
        slot_counts, totals = slot.counts, self._totals
        slot_counts[0] += requests
        slot_counts[1] += input_tokens
        slot_counts[2] += output_tokens
        totals[0] += requests
        totals[1] += input_tokens
        totals[2] += output_tokens
        return slot.second

    def refund(self, second: int, counts: Sequence[int], now: float) -> None:
        """Take back up to `counts` from the slot `add` returned, if it still counts."""
        self.used(now)
        for slot in reversed(self._slots):  # a request settles soon after it was admitted: the newest first
            if slot.second == second:
                for index, amount in enumerate(counts):
                    if amount:
                        taken = min(amount, slot.counts[index])
                        slot.counts[index] -= taken
                        self._totals[index] -= taken
                return
            if slot.second < second:
                return

    def free_at(self, now: float, index: int, limit: int) -> float:
        """When dimension `index` is below `limit` again, if nothing more is admitted (`now` if it is)."""
        remaining = self.used(now)[index]
        if remaining < limit:
            return now
        for slot in self._slots:
            remaining -= slot.counts[index]
            if remaining < limit:
                return slot.latest + WINDOW_SECONDS
        return now  # unreachable: an empty window counts nothing

    def empty_at(self, now: float, index: int) -> float:
        """When dimension `index` counts nothing any more (Anthropic's "fully replenished")."""
        if not self.used(now)[index]:
            return now
        return next(slot.latest for slot in reversed(self._slots) if slot.counts[index]) + WINDOW_SECONDS


class Limit(NamedTuple):
    """The limits of one subject that apply to a request: its window, how much of each dimension a
    minute, and whom it binds."""

    key: Hashable  # the subject's window, e.g. ("platform", "developer:alice")
    per_minute: PerMinute
    owner: str  # for people: e.g. "developer alice (cost center platform, perDeveloper)"


class Reading(NamedTuple):
    """One limited dimension of a subject at one instant: what Anthropic's anthropic-ratelimit-* headers report."""

    limit: Limit
    dimension: Dimension
    per_minute: int
    used: int
    free_at: float
    empty_at: float

    @property
    def remaining(self) -> int:
        return max(0, self.per_minute - self.used)

    @property
    def exhausted(self) -> bool:
        return self.used >= self.per_minute


class Admitted(NamedTuple):
    """What an admitted request counted, kept until it settles: its estimate, in each subject's slot."""

    slots: tuple[tuple[Hashable, int], ...]  # (subject key, second)
    counts: Counts


class Refused(NamedTuple):
    """Over a limit. `binding` is the exhausted limit that frees up last: the request may go at its
    `free_at`, and not before; `readings` are every limited dimension's state, for the headers."""

    binding: Reading
    readings: tuple[Reading, ...]

    def retry_after(self, now: float) -> int:
        """Whole seconds until `free_at`: at least 1, at most 60 (to the microsecond: float sums such as
        t + 60 - t are not always exactly 60)."""
        return min(WINDOW_SECONDS, max(1, math.ceil(round(self.binding.free_at - now, 6))))


class RateLimiter:
    """Windows by subject, created on first use; `prune` drops the empty ones."""

    def __init__(self) -> None:
        self._windows: dict[Hashable, SlidingWindow] = {}

    def admit(self, limits: Sequence[Limit], counts: Counts, now: float) -> Admitted | Refused:
        """Admit when every limited dimension of every subject has something left, counting `counts`
        (the request's estimate) in each subject's window; otherwise count nothing and say which binds."""
        windows = []
        for limit in limits:
            window = self._windows.get(limit.key)
            if window is None:
                window = self._windows[limit.key] = SlidingWindow()
            used = window.used(now)
            for index, cap in enumerate(limit.per_minute):
                if cap is not None and used[index] >= cap:
                    readings = self.readings(limits, now)
                    exhausted = [reading for reading in readings if reading.exhausted]
                    return Refused(max(exhausted, key=lambda reading: reading.free_at), readings)
            windows.append(window)
        return Admitted(tuple((limit.key, window.add(now, counts)) for limit, window in zip(limits, windows,
                                                                                             strict=True)), counts)

    def settle(self, admitted: Admitted, actual: Sequence[int | None], now: float) -> None:
        """Correct the estimate with what the request really used (a None keeps that estimate)."""
        differences = [0 if real is None else real - estimate for estimate, real in zip(admitted.counts, actual,
                                                                                        strict=True)]
        refund = (-min(0, differences[0]), -min(0, differences[1]), -min(0, differences[2]))
        excess = (max(0, differences[0]), max(0, differences[1]), max(0, differences[2]))
        for key, second in admitted.slots:
            window = self._windows.get(key)
            if window is None:
                continue
            if any(refund):
                window.refund(second, refund, now)
            if any(excess):
                window.add(now, excess)

    def readings(self, limits: Iterable[Limit], now: float) -> tuple[Reading, ...]:
        """Every limited dimension's state, limit by limit."""
        found = []
        for limit in limits:
            window = self._windows.get(limit.key) or SlidingWindow()
            used = window.used(now)
            for index, cap in enumerate(limit.per_minute):
                if cap is not None:
                    found.append(Reading(limit, DIMENSIONS[index], cap, used[index], window.free_at(now, index, cap),
                                         window.empty_at(now, index)))
        return tuple(found)

    def prune(self, now: float) -> None:
        """Forget windows that count nothing any more (subjects that went quiet, keys that left)."""
        self._windows = {key: window for key, window in self._windows.items() if any(window.used(now))}

    def __len__(self) -> int:
        return len(self._windows)


def most_restrictive(readings: Iterable[Reading]) -> dict[Dimension, Reading]:
    """Per dimension, the reading with the least left (then the one that empties last): what a
    client is told, as Anthropic's headers report "the most restrictive limit currently in effect"."""
    chosen: dict[Dimension, Reading] = {}
    for reading in readings:
        known = chosen.get(reading.dimension)
        if known is None or (reading.remaining, -reading.empty_at) < (known.remaining, -known.empty_at):
            chosen[reading.dimension] = reading
    return chosen
