"""Exact Decimal prices of Anthropic responses, from the usage the upstream returns.

Shared by the proxy (every response), the dry-run and the chargeback tools (re-pricing a ledger),
so the streaming and non-streaming paths and the offline tools all price with one function.

Where the numbers come from, in order:
1. the bundle's `pricing.overrides` (negotiated prices), matched on the model id as sent or on the
   id genai-prices resolves it to (so an override of `claude-opus-5-5` covers its dated ids);
2. the `genai-prices` package (maintained data; date-conditional prices, long-context tiers,
   fast-mode variants), resolved once per (model, UTC day, speed) and cached, because running the
   package's generic engine per request costs ~50 us;
3. the bundle's fallback price for ids neither knows, flagged `unknown_model`, never free.

The arithmetic follows genai-prices' semantics (and Anthropic's rules): a tier applies to ALL
tokens once the total input (uncached + cache writes + cache reads) passes its threshold; a
cache unit without its own price is billed at its parent's (1h write -> write -> input).
tests/proxy/test_pricing.py checks that for every Anthropic model the package knows.

Usage rules (docs: reference anthropic-contract.md section 1.5):
- `input_tokens` excludes cache tokens; `cache_creation` splits writes into 5 minute and 1 hour,
  and writes beyond that split are 5 minute ones;
- streamed usage is `message_start` overwritten field by field by each cumulative
  `message_delta` (`merge_delta_usage`), never added;
- `usage.iterations[]` (advisor, compaction, server-side fallback), when present, is the bill:
  each iteration at its own model, a fallback attempt declined before any output is free;
- a refusal before any output is free.
Not priced here (flagged or documented in docs/proxy.md): the 1.1x `inference_geo: "us"`
premium (flag `geo_premium_unpriced`), batch results, code-execution container hours.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from genai_prices import Usage, calc_price

from spendgate.policy.bundle import ModelPrice, PricingEntry

MILLION: Final = Decimal(1_000_000)
THOUSAND: Final = Decimal(1_000)
# Anthropic's list price of web search, the same for every model; used where genai-prices has none.
WEB_SEARCH_PER_THOUSAND: Final = Decimal(10)
# Anthropic's cache multipliers of the input price, for overrides that give only input and output.
CACHE_READ_FACTOR: Final = Decimal("0.1")
CACHE_WRITE_5M_FACTOR: Final = Decimal("1.25")
CACHE_WRITE_1H_FACTOR: Final = Decimal(2)
# Bounds the rates cache: model ids come from clients, so an endless stream of made-up ids must
# not grow memory without limit.
RATES_CACHE_SIZE: Final = 4096

UNKNOWN_MODEL: Final = "unknown_model"
REFUSAL_NOT_BILLED: Final = "refusal_not_billed"
GEO_PREMIUM_UNPRICED: Final = "geo_premium_unpriced"
USAGE_INVALID: Final = "usage_invalid"  # a count that is not a non-negative integer: counted as 0
USAGE_IMPLAUSIBLE: Final = "usage_implausible"  # a count past MAX_PLAUSIBLE_TOKENS: priced at the bound


class PriceSource(StrEnum):
    GENAI_PRICES = "genai-prices"
    OVERRIDE = "override"
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class Rate:
    """USD per million units; each tier's price replaces the base once total input passes its start."""

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...] = ()

    def at(self, total_input: int) -> Decimal:
        for start, price in reversed(self.tiers):
            if total_input > start:
                return price
        return self.base


@dataclass(frozen=True, slots=True)
class ModelRates:
    model: str  # the id the price was found under (genai-prices id, override key, or the id as sent)
    source: PriceSource
    input: Rate
    output: Rate
    cache_read: Rate
    cache_write_5m: Rate
    cache_write_1h: Rate
    web_searches_per_thousand: Decimal


@dataclass(frozen=True, slots=True)
class Tokens:
    """Billable units of one response. `input` is uncached input, as Anthropic reports it."""

    input: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    output: int = 0
    web_searches: int = 0

    @property
    def total_input(self) -> int:
        return self.input + self.cache_write_5m + self.cache_write_1h + self.cache_read

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            input=self.input + other.input,
            cache_write_5m=self.cache_write_5m + other.cache_write_5m,
            cache_write_1h=self.cache_write_1h + other.cache_write_1h,
            cache_read=self.cache_read + other.cache_read,
            output=self.output + other.output,
            web_searches=self.web_searches + other.web_searches,
        )

    def cost(self, rates: ModelRates) -> Decimal:
        tier = self.total_input
        per_million = (self.input * rates.input.at(tier)
                       + self.cache_write_5m * rates.cache_write_5m.at(tier)
                       + self.cache_write_1h * rates.cache_write_1h.at(tier)
                       + self.cache_read * rates.cache_read.at(tier)
                       + self.output * rates.output.at(tier))
        return per_million / MILLION + self.web_searches * rates.web_searches_per_thousand / THOUSAND


@dataclass(frozen=True, slots=True)
class Charge:
    cost: Decimal
    tokens: Tokens
    model: str
    source: PriceSource
    flags: frozenset[str] = frozenset()


# No Claude response comes near this many tokens of one kind (contexts are at most ~1M tokens, outputs
# far less): a count above it is a broken or hostile upstream, priced at the bound and flagged, never
# at trillions of dollars.
MAX_PLAUSIBLE_TOKENS: Final = 10_000_000
MAX_PLAUSIBLE_WEB_SEARCHES: Final = 10_000


def _count(value: Any, problems: set[str], bound: int = MAX_PLAUSIBLE_TOKENS) -> int:
    """A count from upstream JSON. A non-negative integer up to `bound` is taken as is (the fast
    path); null means none; a count past the bound is capped (`usage_implausible`); anything else
    (a string, a float, a negative number, a boolean, an object) counts as 0 (`usage_invalid`)."""
    if type(value) is int and 0 <= value <= bound:
        return value
    if value is None:
        return 0
    if type(value) is int and value > bound:
        problems.add(USAGE_IMPLAUSIBLE)
        return bound
    problems.add(USAGE_INVALID)
    return 0


def read_tokens(usage: Mapping[str, Any], problems: set[str]) -> Tokens:
    """One Anthropic `usage` object (or one of its iterations) as billable units, web searches aside;
    what cannot be read is added to `problems` as a ledger flag.

    Usage is decoded JSON, so nested objects are checked as dicts (an isinstance check against the
    Mapping ABC costs ten times more, on a path that runs for every response).
    """
    split = usage.get("cache_creation")
    one_hour = _count(split.get("ephemeral_1h_input_tokens"), problems) if isinstance(split, dict) else 0
    written = usage.get("cache_creation_input_tokens")
    if written is None and isinstance(split, dict):
        written = one_hour + _count(split.get("ephemeral_5m_input_tokens"), problems)
    written = _count(written, problems)
    one_hour = min(one_hour, written)
    return Tokens(
        input=_count(usage.get("input_tokens"), problems),
        cache_write_5m=written - one_hour,
        cache_write_1h=one_hour,
        cache_read=_count(usage.get("cache_read_input_tokens"), problems),
        output=_count(usage.get("output_tokens"), problems),
    )


def tokens_from_usage(usage: Mapping[str, Any]) -> Tokens:
    """`read_tokens` for callers that do not keep the problems (tests, estimates)."""
    return read_tokens(usage, set())


def web_searches(usage: Mapping[str, Any], problems: set[str]) -> int:
    server_tools = usage.get("server_tool_use")
    if not isinstance(server_tools, dict):
        return 0
    return _count(server_tools.get("web_search_requests"), problems, MAX_PLAUSIBLE_WEB_SEARCHES)


def merge_delta_usage(merged: dict[str, Any], delta: Mapping[str, Any]) -> None:
    """Fold one `message_delta` usage into the running usage: overwrite each non-null field, never add.

    The 5m/1h split (`cache_creation`) exists only in `message_start`, so it is kept; writes
    beyond it count as 5 minute writes in `tokens_from_usage`.
    """
    for field, value in delta.items():
        if value is not None and field != "cache_creation":
            merged[field] = value


def _billable_iterations(iterations: Iterable[Any]) -> list[dict[str, Any]]:
    """Server-side fallback: an attempt declined before producing output is not billed."""
    entries: list[dict[str, Any]] = [entry for entry in iterations if isinstance(entry, dict)]
    if not any(entry.get("type") == "fallback_message" for entry in entries):
        return entries
    return [entry for entry in entries
            if not (entry.get("type") == "message" and _count(entry.get("output_tokens"), set()) == 0)]


def _rate(value: Any) -> Rate | None:
    """A genai-prices price (a Decimal, or tiered prices) as a Rate; None when the unit has no price."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return Rate(value)
    return Rate(value.base, tuple((tier.start, tier.price) for tier in value.tiers))


def _genai_rates(model: str, day: date, speed: str | None, provider: str) -> ModelRates | None:
    at = datetime(day.year, day.month, day.day)
    context = {"speed": speed} if speed else None
    try:
        resolved = calc_price(Usage(), model, provider_id=provider, genai_request_timestamp=at,
                              price_context=context)
    except LookupError:
        return None
    prices = resolved.model_price
    input_rate = _rate(prices.input_mtok) or Rate(Decimal(0))
    cache_write = _rate(prices.cache_write_mtok) or input_rate
    return ModelRates(
        model=resolved.model.id,
        source=PriceSource.GENAI_PRICES,
        input=input_rate,
        output=_rate(prices.output_mtok) or Rate(Decimal(0)),
        cache_read=_rate(prices.cache_read_mtok) or input_rate,
        cache_write_5m=_rate(prices.cache_write_5m_mtok) or cache_write,
        cache_write_1h=_rate(prices.cache_write_1h_mtok) or cache_write,
        web_searches_per_thousand=(_rate(prices.web_searches_kcount) or Rate(Decimal(0))).base,
    )


def _declared_rates(model: str, price: ModelPrice, source: PriceSource) -> ModelRates:
    """Rates from the bundle (an override or the fallback): cache prices default to Anthropic's factors."""
    input_price = Decimal(price.inputMTok)

    def declared(value: str | None, factor: Decimal) -> Rate:
        return Rate(Decimal(value) if value is not None else input_price * factor)

    return ModelRates(
        model=model,
        source=source,
        input=Rate(input_price),
        output=Rate(Decimal(price.outputMTok)),
        cache_read=declared(price.cacheReadMTok, CACHE_READ_FACTOR),
        cache_write_5m=declared(price.cacheWrite5mMTok, CACHE_WRITE_5M_FACTOR),
        cache_write_1h=declared(price.cacheWrite1hMTok, CACHE_WRITE_1H_FACTOR),
        web_searches_per_thousand=WEB_SEARCH_PER_THOUSAND,
    )


ANTHROPIC: Final = "anthropic"


class PriceBook:
    """Prices for one bundle's pricing section, as one provider's ids name the models. Build a new
    one when the bundle changes.

    The provider is genai-prices' id: `anthropic` (the default), `aws` (Amazon Bedrock: its model ids,
    and the regional endpoints' premium) or `google` (Vertex AI). Overrides and the fallback are the
    bundle's, the same for every provider.
    """

    def __init__(self, pricing: PricingEntry, provider: str = ANTHROPIC) -> None:
        self._pricing = pricing
        self._provider = provider
        self._cache: dict[tuple[str, date, str | None], ModelRates] = {}
        self._others: dict[str, PriceBook] = {}

    def for_provider(self, provider: str) -> PriceBook:
        """The same bundle's prices for another provider's ids (built once, then shared)."""
        if provider == self._provider:
            return self
        found = self._others.get(provider)
        if found is None:
            found = self._others[provider] = PriceBook(self._pricing, provider)
        return found

    def rates(self, model: str, day: date, speed: str | None = None) -> ModelRates:
        key = (model, day, speed)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= RATES_CACHE_SIZE:
                self._cache.clear()
            found = self._cache[key] = self._resolve(model, day, speed)
        return found

    def _resolve(self, model: str, day: date, speed: str | None) -> ModelRates:
        overrides = self._pricing.overrides
        if model in overrides:
            return _declared_rates(model, overrides[model], PriceSource.OVERRIDE)
        known = _genai_rates(model, day, speed, self._provider)
        if known is not None and known.model in overrides:
            return _declared_rates(known.model, overrides[known.model], PriceSource.OVERRIDE)
        return known or _declared_rates(model, self._pricing.fallback, PriceSource.FALLBACK)

    def charge(self, model: str, usage: Mapping[str, Any], day: date, refused_before_output: bool = False) -> Charge:
        """The cost of one response whose (merged) usage is `usage`, served by `model`.

        Never raises on what the upstream sent: unreadable counts are flagged (`usage_invalid`,
        `usage_implausible`) and priced as documented in `_count`."""
        speed = "fast" if usage.get("speed") == "fast" else None
        top = self.rates(model, day, speed)
        problems: set[str] = set()
        parts = self._parts(top, usage, day, speed, problems)
        unknown = any(rates.source is PriceSource.FALLBACK for rates, _ in parts)
        flags = _flags(usage, unknown, refused_before_output, problems)
        source = PriceSource.FALLBACK if unknown else top.source
        if len(parts) == 1:  # the common case, kept cheap: it runs for every response
            rates, tokens = parts[0]
            return Charge(Decimal(0) if refused_before_output else tokens.cost(rates), tokens, top.model, source, flags)
        tokens = sum((part for _, part in parts), Tokens())
        cost = Decimal(0) if refused_before_output else sum((part.cost(rates) for rates, part in parts), Decimal(0))
        return Charge(cost, tokens, top.model, source, flags)

    def _parts(self, top: ModelRates, usage: Mapping[str, Any], day: date, speed: str | None, problems: set[str]
               ) -> list[tuple[ModelRates, Tokens]]:
        """What to price at which rates: each billable iteration at its model, or the usage at the response's."""
        iterations = usage.get("iterations")
        if isinstance(iterations, list) and iterations:
            parts = [(self._iteration_rates(entry, top, day, speed, problems), read_tokens(entry, problems))
                     for entry in _billable_iterations(iterations)]
        else:
            parts = [(top, read_tokens(usage, problems))]
        searches = web_searches(usage, problems)
        if searches:
            parts.append((top, Tokens(web_searches=searches)))
        return parts

    def _iteration_rates(self, entry: Mapping[str, Any], top: ModelRates, day: date, speed: str | None,
                         problems: set[str]) -> ModelRates:
        model = entry.get("model")
        if model is None:
            return top
        if not isinstance(model, str) or not model:
            problems.add(USAGE_INVALID)
            return top
        return self.rates(model, day, speed)


NO_FLAGS: Final = frozenset[str]()


def _flags(usage: Mapping[str, Any], unknown: bool, refused_before_output: bool, problems: set[str]
           ) -> frozenset[str]:
    geo = usage.get("inference_geo") == "us"
    if not (unknown or refused_before_output or geo or problems):
        return NO_FLAGS
    return frozenset(problems) | frozenset(
        flag for flag, raised in ((UNKNOWN_MODEL, unknown), (REFUSAL_NOT_BILLED, refused_before_output),
                                  (GEO_PREMIUM_UNPRICED, geo)) if raised)
