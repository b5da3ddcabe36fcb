"""Rate limits as a pure sliding window: never more than the limit (plus the documented slack of a
token limit) in any 60 seconds, whatever the arrivals, estimates and settlement times."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.logic.ratelimit import (
    DIMENSIONS,
    WINDOW_SECONDS,
    Admitted,
    Counts,
    Dimension,
    Limit,
    RateLimiter,
    Refused,
    SlidingWindow,
    most_restrictive,
)

REQUESTS, INPUT, OUTPUT = Dimension.REQUESTS, Dimension.INPUT_TOKENS, Dimension.OUTPUT_TOKENS


def limit(key: str = "alice", requests: int | None = None, input_tokens: int | None = None,
          output_tokens: int | None = None) -> Limit:
    return Limit(key, (requests, input_tokens, output_tokens), f"developer {key}")


def counts(requests: int = 0, input_tokens: int = 0, output_tokens: int = 0) -> Counts:
    return requests, input_tokens, output_tokens


def used(limiter: RateLimiter, which: Limit, now: float) -> dict[Dimension, int]:
    return {reading.dimension: reading.used for reading in limiter.readings([which], now)}


def most_in_any_minute(events: Sequence[tuple[float, int]]) -> int:
    """The largest total of (time, amount) events in any closed interval of 60 seconds."""
    ordered = sorted(events)
    best = 0
    for start, _ in ordered:
        best = max(best, sum(amount for at, amount in ordered if start <= at <= start + WINDOW_SECONDS))
    return best


gaps = st.floats(min_value=0, max_value=8, allow_nan=False)


@settings(max_examples=200)
@given(per_minute=st.integers(1, 25), arrivals=st.lists(gaps, min_size=1, max_size=150))
def test_a_requests_limit_is_never_exceeded_in_any_minute(per_minute: int, arrivals: list[float]) -> None:
    limiter, now, admitted = RateLimiter(), 1000.0, []
    for gap in arrivals:
        now += gap
        if isinstance(limiter.admit([limit(requests=per_minute)], counts(1), now), Admitted):
            admitted.append((now, 1))
    assert admitted
    assert most_in_any_minute(admitted) <= per_minute


@settings(max_examples=200)
@given(per_minute=st.integers(1, 5000),
       requests=st.lists(st.tuples(gaps, st.integers(0, 3000), st.integers(0, 3000)), min_size=1, max_size=100))
def test_a_token_limit_settled_at_once_is_exceeded_by_the_last_request_only(
        per_minute: int, requests: list[tuple[float, int, int]]) -> None:
    limiter, now, admitted = RateLimiter(), 50.0, []
    for gap, estimate, actual in requests:
        now += gap
        decision = limiter.admit([limit(input_tokens=per_minute)], counts(1, estimate), now)
        if isinstance(decision, Admitted):
            limiter.settle(decision, (None, actual, None), now)
            admitted.append((now, actual))
    largest = max((actual for _, actual in admitted), default=0)
    assert most_in_any_minute(admitted) <= per_minute - 1 + largest


@settings(max_examples=200)
@given(per_minute=st.integers(1, 5000),
       requests=st.lists(st.tuples(gaps, st.integers(0, 3000), st.integers(0, 3000),
                                   st.floats(min_value=0, max_value=90, allow_nan=False)), min_size=1, max_size=80))
def test_a_token_limit_with_requests_in_flight_is_exceeded_by_their_surplus_at_most(
        per_minute: int, requests: list[tuple[float, int, int, float]]) -> None:
    """Real usage attributed to the moment each request was admitted. In any minute it is at most
    per_minute - 1, plus the last admitted request's tokens, plus what the requests still in flight
    then used beyond their estimates."""
    limiter, now = RateLimiter(), 50.0
    pending: list[tuple[float, int, int]] = []  # (settles at, admission number, actual) as a heap
    admitted: list[tuple[float, int, int, float]] = []  # (at, estimate, actual, settles at)
    holds: list[Admitted] = []
    for gap, estimate, actual, duration in requests:
        now += gap
        while pending and pending[0][0] <= now:  # settlements due first
            at, number, used = heapq.heappop(pending)
            limiter.settle(holds[number], (None, used, None), at)
        decision = limiter.admit([limit(input_tokens=per_minute)], counts(1, estimate), now)
        if isinstance(decision, Admitted):
            heapq.heappush(pending, (now + duration, len(holds), actual))
            holds.append(decision)
            admitted.append((now, estimate, actual, now + duration))
    for start, *_ in admitted:
        inside = [request for request in admitted if start <= request[0] <= start + WINDOW_SECONDS]
        last_at, _, last_actual, _ = inside[-1]
        surplus = sum(max(0, actual - estimate) for at, estimate, actual, settles in inside[:-1] if settles > last_at)
        assert sum(actual for _, _, actual, _ in inside) <= per_minute - 1 + last_actual + surplus


@settings(max_examples=200)
@given(per_minute=st.integers(1, 20), arrivals=st.lists(gaps, min_size=1, max_size=60),
       later=st.floats(min_value=0, max_value=1, allow_nan=False))
def test_a_refusal_says_exactly_when_to_come_back(per_minute: int, arrivals: list[float], later: float) -> None:
    limiter, now, times = RateLimiter(), 7.25, []
    limits = [limit("alice", requests=per_minute), limit("platform", output_tokens=per_minute * 100)]
    for gap in arrivals:
        now += gap
        times.append(now)
        limiter.admit(limits, counts(1, 0, 100), now)
    refused = limiter.admit(limits, counts(1, 0, 100), now)
    if not isinstance(refused, Refused):
        return
    free_at = refused.binding.free_at
    assert now < free_at <= now + WINDOW_SECONDS
    assert 1 <= refused.retry_after(now) <= WINDOW_SECONDS
    probe = RateLimiter()  # the same history, asked again just before and at free_at
    for at in times:
        probe.admit(limits, counts(1, 0, 100), at)
    if free_at - 0.001 > now:
        assert isinstance(probe.admit(limits, counts(1, 0, 100), free_at - 0.001), Refused)
    assert isinstance(probe.admit(limits, counts(1, 0, 100), free_at + later), Admitted)


def test_a_refused_request_counts_nothing() -> None:
    limiter = RateLimiter()
    limits = [limit(requests=1, input_tokens=10)]
    assert isinstance(limiter.admit(limits, counts(1, 5), 0.5), Admitted)
    for attempt in range(5):
        assert isinstance(limiter.admit(limits, counts(1, 5), 1.0 + attempt), Refused)
    assert [reading.used for reading in limiter.readings(limits, 10.0)] == [1, 5]


def test_the_binding_limit_is_the_one_that_frees_last() -> None:
    limiter = RateLimiter()
    developer, center = limit("alice", requests=2), limit("platform", requests=3)
    limiter.admit([center], counts(1), 0.0)  # bob, earlier
    limiter.admit([developer, center], counts(1), 10.0)
    limiter.admit([developer, center], counts(1), 20.0)
    refused = limiter.admit([developer, center], counts(1), 30.0)
    assert isinstance(refused, Refused)
    assert refused.binding.limit == developer and refused.binding.free_at == 70.0  # 10.0 counts for 60 s
    assert refused.retry_after(30.0) == 40
    assert [reading.remaining for reading in refused.readings] == [0, 0]


def test_a_refund_returns_to_its_slot_and_an_excess_is_counted_at_settlement() -> None:
    limiter = RateLimiter()
    tokens = limit(output_tokens=1000)
    first = limiter.admit([tokens], counts(1, 0, 800), 3.2)
    assert isinstance(first, Admitted)
    limiter.settle(first, (None, None, 100), 40.0)
    assert used(limiter, tokens, 40.0) == {OUTPUT: 100}
    second = limiter.admit([tokens], counts(1, 0, 100), 50.0)
    assert isinstance(second, Admitted)
    limiter.settle(second, (None, None, 400), 70.0)  # 300 more, counted from 70
    assert used(limiter, tokens, 70.0) == {OUTPUT: 100 + 300}  # the first (3.2) counted until 63.2
    third = limiter.admit([tokens], counts(1, 0, 500), 71.0)
    assert isinstance(third, Admitted)
    limiter.settle(third, (None, None, 0), 200.0)  # long after its slot stopped counting: nothing to take back
    assert used(limiter, tokens, 200.0) == {OUTPUT: 0}


def test_headers_report_the_most_restrictive_limit_per_dimension() -> None:
    limiter = RateLimiter()
    developer, center = limit("alice", requests=5), limit("platform", requests=100, input_tokens=10_000)
    key = limit("alice-laptop", input_tokens=1000)
    for second in range(4):
        limiter.admit([developer, center, key], counts(1, 10), float(second))
    chosen = most_restrictive(limiter.readings([developer, center, key], 4.0))
    assert chosen[REQUESTS].limit == developer and chosen[REQUESTS].remaining == 1
    assert chosen[INPUT].limit == key and chosen[INPUT].remaining == 960 and chosen[INPUT].empty_at == 3 + 60
    assert set(chosen) == {REQUESTS, INPUT} and DIMENSIONS[2] not in chosen  # output tokens are not limited


def test_an_empty_window_is_pruned_and_a_quiet_one_empties() -> None:
    limiter = RateLimiter()
    limiter.admit([limit("alice", requests=5)], counts(1), 0.0)
    limiter.admit([limit("bob", requests=5)], counts(1), 30.0)
    limiter.prune(61.0)
    assert len(limiter) == 1
    window = SlidingWindow()
    window.add(5.25, counts(0, 3))
    window.add(5.5, counts(0, 1))  # the same slot, which now counts until 65.5
    assert (window.used(65.4)[1], window.empty_at(65.4, 1), window.used(65.5)[1], window.empty_at(65.5, 1)) == (
        4, 65.5, 0, 65.5)
