"""Pricing: worked examples per model family, checked against hand-computed Decimal values.

Each expected value is written out as rate x tokens in USD per million tokens, so a reader can
check it with a pencil. The last test checks the fast arithmetic against genai-prices' own engine
for every Anthropic model the package knows.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price, data_snapshot

from spendgate.logic.pricing import (
    GEO_PREMIUM_UNPRICED,
    REFUSAL_NOT_BILLED,
    UNKNOWN_MODEL,
    PriceBook,
    PriceSource,
    Tokens,
    merge_delta_usage,
    tokens_from_usage,
)
from spendgate.policy.bundle import ModelPrice, PricingEntry

TODAY = date(2026, 11, 24)
M = Decimal(1_000_000)


def usage(input_tokens: int = 0, output: int = 0, cache_5m: int = 0, cache_1h: int = 0, cache_read: int = 0,
          **extra: Any) -> dict[str, Any]:
    return {"input_tokens": input_tokens, "output_tokens": output, "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": cache_5m + cache_1h,
            "cache_creation": {"ephemeral_5m_input_tokens": cache_5m, "ephemeral_1h_input_tokens": cache_1h},
            **extra}


@pytest.fixture
def book() -> PriceBook:
    return PriceBook(PricingEntry())


@pytest.mark.parametrize(("model", "tokens", "expected"), [
    # Opus 5.5: $4 in, $5 5m write, $8 1h write, $0.20 read, $20 out
    ("claude-opus-5-5", usage(1000, 800, cache_5m=2000, cache_1h=3000, cache_read=50000),
     (1000 * 4 + 2000 * 5 + 3000 * 8 + 50000 * Decimal("0.2") + 800 * 20) / M),
    # Sonnet 5.5: $2 in, $2.50 write, $0.10 read, $10 out
    ("claude-sonnet-5-5", usage(3000, 1500, cache_5m=10000, cache_read=100000),
     (3000 * 2 + 10000 * Decimal("2.5") + 100000 * Decimal("0.1") + 1500 * 10) / M),
    # Haiku 5.5 under its 100K tier: $0.10 in, $0.125 write, $0.01 read, $0.50 out
    ("claude-haiku-5-5", usage(2000, 500, cache_5m=1000, cache_read=20000),
     (2000 * Decimal("0.1") + 1000 * Decimal("0.125") + 20000 * Decimal("0.01") + 500 * Decimal("0.5")) / M),
    # Haiku 5.5 past 100K total input: every token at the tier rate ($0.50 in, $0.05 read, $2.50 out)
    ("claude-haiku-5-5", usage(10000, 1000, cache_read=95000),
     (10000 * Decimal("0.5") + 95000 * Decimal("0.05") + 1000 * Decimal("2.5")) / M),
    # Fable 5.2: $8 in, $16 1h write, $40 out
    ("claude-fable-5-2", usage(500, 200, cache_1h=4000), (500 * 8 + 4000 * 16 + 200 * 40) / M),
    # Sonnet 4.5 past 200K (its 1M-context tier): $6 in, $0.60 read, $22.50 out (contract 5.4: input $0.936)
    ("claude-sonnet-4-5", usage(150000, 1000, cache_read=60000),
     (150000 * 6 + 60000 * Decimal("0.6") + 1000 * Decimal("22.5")) / M),
    # Sonnet 4.5 with cache writes and reads (contract 5.4: input $0.0135, output $0.0075)
    ("claude-sonnet-4-5", usage(1000, 500, cache_5m=2000, cache_read=10000), Decimal("0.0135") + Decimal("0.0075")),
    # Haiku 4.5: $1 in, $2 1h write, $0.10 read, $5 out
    ("claude-haiku-4-5", usage(4000, 600, cache_1h=1000, cache_read=30000),
     (4000 * 1 + 1000 * 2 + 30000 * Decimal("0.1") + 600 * 5) / M),
    # The tool-use stream of contract 1.5.5 on Opus 5: 472 x $5 + 89 x $25 = $0.004585
    ("claude-opus-5", usage(472, 89), Decimal("0.004585")),
])
def test_worked_examples(book: PriceBook, model: str, tokens: dict[str, Any], expected: Decimal) -> None:
    charge = book.charge(model, tokens, TODAY)
    assert type(charge.cost) is Decimal
    assert charge.cost == expected
    assert (charge.model, charge.source, charge.flags) == (model, PriceSource.GENAI_PRICES, frozenset())


def test_web_search_is_billed_per_search(book: PriceBook) -> None:
    """Contract 1.5.3: billable input is the final 10,682, plus $10 per 1,000 searches: $0.07616."""
    charge = book.charge("claude-opus-4-8", usage(10682, 510, server_tool_use={"web_search_requests": 1}), TODAY)
    assert charge.cost == Decimal("0.07616")
    assert charge.tokens.web_searches == 1


def test_long_context_tier_follows_the_date_of_the_request(book: PriceBook) -> None:
    """Opus 4.6 charged $10/$37.50 past 200K until 2026-03-13, standard rates after."""
    tokens = usage(150000, 1000, cache_read=60000)
    assert book.charge("claude-opus-4-6", tokens, date(2026, 3, 1)).cost == (
        150000 * 10 + 60000 * 1 + 1000 * Decimal("37.5")) / M
    assert book.charge("claude-opus-4-6", tokens, TODAY).cost == (
        150000 * 5 + 60000 * Decimal("0.5") + 1000 * 25) / M


def test_fast_mode_uses_the_fast_rates(book: PriceBook) -> None:
    """usage.speed == "fast": Opus 5.5 at $8 in / $40 out."""
    assert book.charge("claude-opus-5-5", usage(1000, 1000, speed="fast"), TODAY).cost == (1000 * 8 + 1000 * 40) / M


def test_dated_ids_price_as_their_model(book: PriceBook) -> None:
    charge = book.charge("claude-opus-5-5-20261101", usage(1000, 100), TODAY)
    assert (charge.model, charge.cost) == ("claude-opus-5-5", (1000 * 4 + 100 * 20) / M)


def test_unknown_model_is_never_free(book: PriceBook) -> None:
    """The bundle's fallback ($5/$25, cache at Anthropic's factors), flagged."""
    charge = book.charge("my-gateway-alias", usage(1000, 100, cache_5m=1000, cache_read=10000), TODAY)
    assert charge.cost == (1000 * 5 + 1000 * Decimal("6.25") + 10000 * Decimal("0.5") + 100 * 25) / M
    assert (charge.source, charge.flags, charge.model) == (PriceSource.FALLBACK, {UNKNOWN_MODEL}, "my-gateway-alias")


def test_fallback_price_is_configurable() -> None:
    book = PriceBook(PricingEntry(fallback=ModelPrice(inputMTok="15", outputMTok="75")))
    assert book.charge("mystery", usage(1000, 1000), TODAY).cost == (1000 * 15 + 1000 * 75) / M


def test_override_wins_and_covers_dated_ids() -> None:
    """A negotiated price for claude-opus-5-5 applies to claude-opus-5-5-20261101 too."""
    book = PriceBook(PricingEntry(overrides={"claude-opus-5-5": ModelPrice(inputMTok="3", outputMTok="15")}))
    tokens = usage(1000, 100, cache_5m=1000, cache_1h=1000, cache_read=10000)
    expected = (1000 * 3 + 1000 * Decimal("3.75") + 1000 * 6 + 10000 * Decimal("0.3") + 100 * 15) / M
    for model in ("claude-opus-5-5", "claude-opus-5-5-20261101"):
        charge = book.charge(model, tokens, TODAY)
        assert (charge.cost, charge.source, charge.model) == (expected, PriceSource.OVERRIDE, "claude-opus-5-5")


def test_override_cache_prices_can_be_explicit() -> None:
    price = ModelPrice(inputMTok="1", outputMTok="2", cacheReadMTok="0.05", cacheWrite5mMTok="1.1",
                       cacheWrite1hMTok="1.9")
    book = PriceBook(PricingEntry(overrides={"house-model": price}))
    charge = book.charge("house-model", usage(100, 100, cache_5m=100, cache_1h=100, cache_read=100), TODAY)
    assert charge.cost == (100 * 1 + 100 * 2 + 100 * Decimal("0.05") + 100 * Decimal("1.1") + 100 * Decimal("1.9")) / M


def test_iterations_are_the_bill(book: PriceBook) -> None:
    """Advisor: each iteration at its own model; the top-level usage (executor only) is not added."""
    tokens = usage(1200, 300, iterations=[
        {"type": "message", "input_tokens": 1000, "output_tokens": 200},
        {"type": "advisor_message", "model": "claude-opus-5-5", "input_tokens": 3000, "output_tokens": 500},
        {"type": "message", "input_tokens": 1200, "output_tokens": 300},
    ])
    charge = book.charge("claude-sonnet-5-5", tokens, TODAY)
    sonnet = (2200 * 2 + 500 * 10) / M
    opus = (3000 * 4 + 500 * 20) / M
    assert charge.cost == sonnet + opus
    assert charge.tokens == Tokens(input=5200, output=1000)


def test_a_fallback_attempt_declined_before_output_is_free(book: PriceBook) -> None:
    tokens = usage(5000, 100, iterations=[
        {"type": "message", "model": "claude-fable-5-2", "input_tokens": 5000, "output_tokens": 0},
        {"type": "fallback_message", "model": "claude-opus-5-5", "input_tokens": 5000, "output_tokens": 100},
    ])
    assert book.charge("claude-opus-5-5", tokens, TODAY).cost == (5000 * 4 + 100 * 20) / M


def test_a_refusal_before_any_output_is_free(book: PriceBook) -> None:
    charge = book.charge("claude-opus-5-5", usage(120, 0), TODAY, refused_before_output=True)
    assert (charge.cost, charge.flags, charge.tokens.input) == (Decimal(0), {REFUSAL_NOT_BILLED}, 120)


def test_us_inference_geo_is_flagged_as_unpriced(book: PriceBook) -> None:
    assert book.charge("claude-opus-5-5", usage(10, 10, inference_geo="us"), TODAY).flags == {GEO_PREMIUM_UNPRICED}


def test_cache_writes_beyond_the_split_are_5_minute_writes() -> None:
    """message_start's split says 1,000 5m + 2,000 1h, the final total says 5,000: 2,000 more 5m."""
    tokens = tokens_from_usage({**usage(10, 10, cache_5m=1000, cache_1h=2000), "cache_creation_input_tokens": 5000})
    assert (tokens.cache_write_5m, tokens.cache_write_1h) == (3000, 2000)


def test_cache_writes_without_a_split_are_5_minute_writes() -> None:
    tokens = tokens_from_usage({"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 700})
    assert (tokens.cache_write_5m, tokens.cache_write_1h) == (700, 0)


def test_garbage_counts_count_as_zero() -> None:
    assert tokens_from_usage({"input_tokens": "12", "output_tokens": -3, "cache_read_input_tokens": None}) == Tokens()


def test_stream_usage_merges_by_overwriting_never_adding() -> None:
    """Contract 1.5.2: start from message_start, overwrite each non-null field of each message_delta."""
    merged = usage(2679, 3, cache_5m=100, cache_1h=50, cache_read=10)
    merge_delta_usage(merged, {"input_tokens": 10682, "output_tokens": 200, "cache_read_input_tokens": None})
    merge_delta_usage(merged, {"output_tokens": 510, "server_tool_use": {"web_search_requests": 1}})
    assert merged["input_tokens"] == 10682
    assert merged["output_tokens"] == 510
    assert merged["cache_read_input_tokens"] == 10
    assert merged["cache_creation"] == {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 50}
    assert merged["server_tool_use"] == {"web_search_requests": 1}


def _anthropic_models() -> list[str]:
    provider = next(p for p in data_snapshot.get_snapshot().providers if p.id == "anthropic")
    return [model.id for model in provider.models]


USAGES = [usage(1000, 500), usage(1500, 800, cache_5m=3000, cache_1h=700, cache_read=40000),
          usage(180000, 2000, cache_1h=5000, cache_read=30000, server_tool_use={"web_search_requests": 3})]


@pytest.mark.parametrize("model", _anthropic_models())
def test_same_result_as_the_genai_prices_engine(book: PriceBook, model: str) -> None:
    """The cached rates and the arithmetic agree with genai-prices' own calc_price, tiers and dates included."""
    for tokens, day, speed in itertools.product(USAGES, (date(2026, 3, 1), TODAY), (None, "fast")):
        counts = tokens_from_usage(tokens)
        searches = tokens.get("server_tool_use", {}).get("web_search_requests")
        engine = calc_price(
            Usage(input_tokens=counts.total_input, cache_write_tokens=counts.cache_write_5m + counts.cache_write_1h,
                  cache_write_1h_tokens=counts.cache_write_1h, cache_read_tokens=counts.cache_read,
                  output_tokens=counts.output, web_searches=searches),
            model, provider_id="anthropic", genai_request_timestamp=datetime(day.year, day.month, day.day, tzinfo=UTC),
            price_context={"speed": speed} if speed else None)
        assert book.charge(model, {**tokens, "speed": speed}, day).cost == engine.total_price, (tokens, day, speed)
