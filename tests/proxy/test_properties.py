"""Property-based tests (hypothesis) over what the upstream controls: the SSE scanner, usage, pricing.

Whatever bytes arrive, split however, and whatever values usage carries, nothing raises, no amount
is negative or a float, and valid usage prices to the Decimal computed by hand from the list price.
"""

from __future__ import annotations

import itertools
import json
from datetime import date
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.logic.pricing import MAX_PLAUSIBLE_TOKENS, PriceBook, tokens_from_usage
from spendgate.policy.bundle import PricingEntry
from spendgate.proxy.sse import StreamScanner
from spendgate.testing.upstream import CACHE, THINKING, TOOL_USE, UTF8, WEB_SEARCH, sse, stream_events

DAY = date(2026, 12, 4)
PRICES = PriceBook(PricingEntry())
# claude-opus-5-5 list prices per million tokens (DESIGN.md): input, output, cache read, 5m write, 1h write.
OPUS = {"input": Decimal(4), "output": Decimal(20), "cache_read": Decimal("0.20"), "cache_write_5m": Decimal(5),
        "cache_write_1h": Decimal(8)}
SCENARIOS = [TOOL_USE, THINKING, CACHE, WEB_SEARCH, UTF8]

counts = st.integers(min_value=0, max_value=1_000_000)
scalars = (st.none() | st.booleans() | st.integers(min_value=-10**20, max_value=10**20)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
anything = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)
USAGE_KEYS = ["input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
              "cache_creation", "server_tool_use", "iterations", "speed", "inference_geo"]


def stream_bytes(scenario_index: int) -> bytes:
    return b"".join(sse(event) for event in stream_events(SCENARIOS[scenario_index], "claude-opus-5-5", "msg_p"))


def scan(chunks: list[bytes]) -> StreamScanner:
    scanner = StreamScanner()
    for chunk in chunks:
        scanner.feed(chunk)
    return scanner


@st.composite
def split(draw: st.DrawFn) -> tuple[int, list[bytes]]:
    """A recorded stream cut at arbitrary places (mid-line, mid-UTF-8 character), CRLF or not."""
    index = draw(st.integers(min_value=0, max_value=len(SCENARIOS) - 1))
    data = stream_bytes(index)
    if draw(st.booleans()):
        data = data.replace(b"\n", b"\r\n")
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=40)))
    bounds = [0, *cuts, len(data)]
    return index, [data[start:end] for start, end in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(split())
def test_chunk_boundaries_never_change_what_the_scanner_reads(case: tuple[int, list[bytes]]) -> None:
    index, chunks = case
    whole, pieces = scan([stream_bytes(index)]), scan(chunks)
    assert pieces.billable_usage() == whole.billable_usage()
    assert (pieces.model, pieces.stop_reason, pieces.completed) == (whole.model, whole.stop_reason, True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=30))
def test_any_bytes_at_all_never_raise(chunks: list[bytes]) -> None:
    usage, _ = scan(chunks).billable_usage()
    assert usage is None or isinstance(usage, dict)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(USAGE_KEYS), anything, max_size=9), st.booleans())
def test_any_usage_prices_without_raising_to_a_non_negative_decimal(usage: dict[str, Any], refused: bool) -> None:
    charge = PRICES.charge("claude-opus-5-5", usage, DAY, refused)
    assert isinstance(charge.cost, Decimal) and charge.cost >= 0
    tokens = charge.tokens
    for value in (tokens.input, tokens.output, tokens.cache_read, tokens.cache_write_5m, tokens.cache_write_1h):
        assert type(value) is int and 0 <= value <= MAX_PLAUSIBLE_TOKENS * 10


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(USAGE_KEYS[:4]), anything, max_size=4))
def test_a_stream_carrying_any_usage_values_prices_without_raising(usage: dict[str, Any]) -> None:
    start = {"type": "message_start", "message": {"model": "claude-opus-5-5", "usage": usage}}
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}
    data = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in (start, delta))
    billed, _ = scan([data]).billable_usage()
    assert billed is not None
    assert PRICES.charge("claude-opus-5-5", billed, DAY).cost >= 0


@settings(max_examples=300, deadline=None)
@given(counts, counts, counts, counts, counts)
def test_valid_usage_prices_to_the_hand_computed_decimal(uncached: int, output: int, read: int, five: int,
                                                         hour: int) -> None:
    usage = {"input_tokens": uncached, "output_tokens": output, "cache_read_input_tokens": read,
             "cache_creation_input_tokens": five + hour,
             "cache_creation": {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour}}
    expected = (uncached * OPUS["input"] + output * OPUS["output"] + read * OPUS["cache_read"]
                + five * OPUS["cache_write_5m"] + hour * OPUS["cache_write_1h"]) / Decimal(1_000_000)
    charge = PRICES.charge("claude-opus-5-5", usage, DAY)
    assert charge.cost == expected and charge.flags == frozenset()
    assert tokens_from_usage(usage).total_input == uncached + read + five + hour
