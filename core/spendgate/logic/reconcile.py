"""The ledger against Anthropic's own reports, per UTC day and model: tokens exactly, dollars within a tolerance.

Inputs: the ledger's usage per (UTC day, served model), the messages usage report grouped by API key
and model (which keys are the gateway's is given, or the only key there is), and the cost report
grouped by description (amounts per model and token type). How the dollars are compared:

- Anthropic's cost report has no API key. For each (day, model, token type) its amount is split
  between the gateway's keys and the others by their share of that token type's tokens in the
  usage report (web search amounts by web search requests). So the gateway's dollars are
  Anthropic's own prices applied to the gateway's own usage, and the other keys' share, the spend
  that did not pass through the gateway, is its own line.
- Costs the reports cannot tie to a key and model (code execution, a token type no key used) are
  listed as not apportioned, never silently dropped.
- Batch and priority service tiers on the gateway's keys did not pass through the gateway's
  pricing (the Batches API, the priority tier) and are listed apart when the usage report is
  grouped by service tier.

Every mismatch comes with its likely causes, read off the numbers: usage on days a proxy's ledger
does not cover, usage moved across a UTC day boundary, requests with estimated usage, the 1.1x
US-inference premium the gateway does not price, a price table that differs from the bill, batch
traffic, a report fetched before the day ended.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal, localcontext
from enum import StrEnum
from typing import Final

from spendgate.logic.adminreports import WEB_SEARCH, CostLine, Coverage, UsageLine
from spendgate.logic.pricing import Tokens
from spendgate.logic.usage import Month, UsageRow

DEFAULT_TOLERANCE: Final = Decimal("0.0005")  # 0.05%
GEO_PREMIUM: Final = Decimal("0.1")  # inference_geo "us" costs 1.1x
GATEWAY_TIERS: Final = frozenset({"standard", None})  # what the gateway prices; batch / priority are not
TOKEN_FIELDS: Final = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output", "web_searches")
ModelKey = Callable[[str, date], str]


class Status(StrEnum):
    MATCH = "match"
    MISMATCH = "mismatch"
    NOT_COVERED = "not covered"  # the reports do not cover the whole day: listed, not judged


@dataclass(frozen=True)
class Side:
    tokens: Tokens = field(default_factory=Tokens)
    dollars: Decimal = Decimal(0)

    def __add__(self, other: Side) -> Side:
        return Side(self.tokens + other.tokens, self.dollars + other.dollars)


@dataclass(frozen=True)
class Comparison:
    day: date
    model: str
    ledger: Side
    anthropic: Side  # the gateway's keys: tokens from the usage report, dollars apportioned from the cost report
    status: Status
    tokens_match: bool
    dollars_match: bool
    causes: tuple[str, ...] = ()

    @property
    def difference(self) -> Decimal:
        return self.ledger.dollars - self.anthropic.dollars


@dataclass(frozen=True)
class Unapportioned:
    day: date
    what: str  # the cost type or description
    dollars: Decimal
    reason: str


@dataclass(frozen=True)
class Reconciliation:
    period: Month
    tolerance: Decimal
    gateway_keys: tuple[str, ...]
    comparisons: list[Comparison]
    outside_by_day: dict[date, Side]  # other API keys: spend that did not pass through the gateway
    outside_keys: tuple[str, ...]
    other_tiers: dict[str, Side]  # batch / priority usage on the gateway's keys, by service tier
    unapportioned: list[Unapportioned]
    organisation_dollars: Decimal  # everything in the cost report for the period's days
    uncovered_days: tuple[date, ...]  # days of the period the reports do not cover whole
    notes: tuple[str, ...] = ()

    @property
    def judged(self) -> list[Comparison]:
        return [comparison for comparison in self.comparisons if comparison.status is not Status.NOT_COVERED]

    @property
    def mismatches(self) -> list[Comparison]:
        return [comparison for comparison in self.comparisons if comparison.status is Status.MISMATCH]

    @property
    def ledger_dollars(self) -> Decimal:
        return sum((comparison.ledger.dollars for comparison in self.judged), Decimal(0))

    @property
    def gateway_dollars(self) -> Decimal:
        return sum((comparison.anthropic.dollars for comparison in self.judged), Decimal(0))

    @property
    def outside_dollars(self) -> Decimal:
        return sum((side.dollars for side in self.outside_by_day.values()), Decimal(0))

    @property
    def outside_share(self) -> Decimal | None:
        """The part of the organisation's spend that did not pass through the gateway (0..1)."""
        return self.outside_dollars / self.organisation_dollars if self.organisation_dollars else None

    @property
    def total_matches(self) -> bool:
        return within(self.ledger_dollars, self.gateway_dollars, self.tolerance)


class ReconcileError(ValueError):
    """The reports cannot be compared as given (not grouped as needed, no gateway key); says what to do."""


def within(ours: Decimal, theirs: Decimal, tolerance: Decimal) -> bool:
    return abs(ours - theirs) <= tolerance * abs(theirs)


def parse_tolerance(text: str) -> Decimal:
    """"0.05%" or "0.0005" as a fraction; refuses negatives and anything that is not a number."""
    percent = text.strip().endswith("%")
    try:
        value = Decimal(text.strip().removesuffix("%"))
    except ArithmeticError:
        raise ValueError(f"tolerance {text!r} is not a number like 0.05%") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"tolerance {text!r} must be zero or a positive number like 0.05%")
    return value / 100 if percent else value


def _tokens_by_field(tokens: Tokens) -> dict[str, int]:
    return {name: getattr(tokens, name) for name in TOKEN_FIELDS}


def gateway_keys_of(usage: Sequence[UsageLine], given: Sequence[str]) -> tuple[str, ...]:
    keys = sorted({line.api_key_id for line in usage if line.api_key_id})
    if given:
        return tuple(sorted(set(given)))
    if len(keys) == 1:
        return (keys[0],)
    if not keys:
        raise ReconcileError("the usage report names no API key: fetch it with group_by[]=api_key_id "
                             "(and group_by[]=model), or name the gateway's key with --gateway-key")
    raise ReconcileError(f"the usage report has {len(keys)} API keys ({', '.join(keys[:6])}"
                         f"{', ...' if len(keys) > 6 else ''}); name the gateway's with --gateway-key")


def check_grouping(cost: Coverage, usage: Coverage) -> None:
    if "description" not in cost.grouped_by:
        raise ReconcileError("the cost report is not grouped by description, so it has no model or token type: "
                             "fetch it with group_by[]=description")
    missing = {"api_key_id", "model"} - usage.grouped_by
    if missing:
        raise ReconcileError(f"the usage report is not grouped by {' and '.join(sorted(missing))}: "
                             "fetch it with group_by[]=api_key_id&group_by[]=model")


Destination = tuple[str, ...]  # ("gateway", day, model) | ("tier", service tier) | ("outside", day)


@dataclass
class _Apportioned:
    gateway: dict[tuple[date, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    tiers: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    outside: dict[date, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    unapportioned: list[Unapportioned] = field(default_factory=list)

    def add(self, destination: Destination, dollars: Decimal) -> None:
        kind = destination[0]
        if kind == "gateway":
            self.gateway[(date.fromisoformat(destination[1]), destination[2])] += dollars
        elif kind == "tier":
            self.tiers[destination[1]] += dollars
        else:
            self.outside[date.fromisoformat(destination[1])] += dollars


def _destination(line: UsageLine, model: str, is_gateway: Callable[[UsageLine], bool]) -> Destination:
    if not is_gateway(line):
        return ("outside", line.day.isoformat())
    if line.service_tier in GATEWAY_TIERS:
        return ("gateway", line.day.isoformat(), model)
    return ("tier", str(line.service_tier))


def _apportion(costs: Iterable[CostLine], usage: Sequence[UsageLine], is_gateway: Callable[[UsageLine], bool],
               model_key: ModelKey, by_tier: bool) -> _Apportioned:
    """Split each cost amount between the gateway's keys (per model), its other tiers and the other keys,
    by their share of the tokens (or web searches) the amount is for. `by_tier`: the usage report is
    grouped by service tier, so a batch amount is split by batch tokens only."""
    tokens: dict[tuple[date, str, str, str | None], dict[Destination, int]] = defaultdict(lambda: defaultdict(int))
    searches: dict[date, dict[Destination, int]] = defaultdict(lambda: defaultdict(int))
    for line in usage:
        model = model_key(line.model or "", line.day)
        destination = _destination(line, model, is_gateway)
        tier = line.service_tier if by_tier else None
        for name, count in _tokens_by_field(line.tokens).items():
            if name == "web_searches":
                searches[line.day][destination] += count
            else:
                tokens[(line.day, model, name, tier)][destination] += count
    result = _Apportioned()
    for cost in costs:
        if cost.cost_type == WEB_SEARCH:
            shares = searches.get(cost.day, {})
        elif cost.model and cost.token_type in TOKEN_FIELDS:
            tier = cost.service_tier if by_tier else None
            shares = tokens.get((cost.day, model_key(cost.model, cost.day), cost.token_type, tier), {})
        else:
            result.unapportioned.append(Unapportioned(cost.day, cost.description or cost.cost_type or "other",
                                                      cost.dollars, "not tied to a model's tokens"))
            continue
        whole = sum(shares.values())
        if not whole:
            result.unapportioned.append(Unapportioned(
                cost.day, cost.description or f"{cost.model} {cost.token_type or cost.cost_type}", cost.dollars,
                "the usage report has no usage for it"))
            continue
        with localcontext() as context:
            context.prec = 50
            for destination, count in shares.items():
                if count:
                    result.add(destination, cost.dollars * count / whole)
    return result


def _usage_sides(usage: Iterable[UsageLine], model_key: ModelKey, keep: Callable[[UsageLine], bool]
                 ) -> dict[tuple[date, str], Tokens]:
    found: dict[tuple[date, str], Tokens] = defaultdict(Tokens)
    for line in usage:
        if keep(line):
            key = (line.day, model_key(line.model or "", line.day))
            found[key] = found[key] + line.tokens
    return found


def reconcile(period: Month, ledger: Sequence[UsageRow], costs: Sequence[CostLine], cost_coverage: Coverage,
              usage: Sequence[UsageLine], usage_coverage: Coverage, model_key: ModelKey,
              gateway_keys: Sequence[str] = (), tolerance: Decimal = DEFAULT_TOLERANCE) -> Reconciliation:
    """Compare; `ledger` rows are keyed by (UTC day, served model). `model_key` names a model id the same
    way on both sides (the price table's id, so dated and undated ids meet)."""
    check_grouping(cost_coverage, usage_coverage)
    keys = gateway_keys_of(usage, gateway_keys)
    days = set(period.days())
    costs = [cost for cost in costs if cost.day in days]
    usage = [line for line in usage if line.day in days]

    def is_gateway(line: UsageLine) -> bool:
        return line.api_key_id in keys

    ledger_sides = _ledger_sides(ledger, days, model_key)
    apportioned = _apportion(costs, usage, is_gateway, model_key, "service_tier" in usage_coverage.grouped_by)
    gateway_tokens = _usage_sides(usage, model_key,
                                  lambda line: is_gateway(line) and line.service_tier in GATEWAY_TIERS)
    other_tiers: dict[str, Side] = defaultdict(Side)
    for line in usage:
        if is_gateway(line) and line.service_tier not in GATEWAY_TIERS:
            other_tiers[str(line.service_tier)] += Side(line.tokens)
    for tier, dollars in apportioned.tiers.items():
        other_tiers[tier] += Side(dollars=dollars)
    outside_tokens: dict[date, Tokens] = defaultdict(Tokens)
    for line in usage:
        if not is_gateway(line):
            outside_tokens[line.day] = outside_tokens[line.day] + line.tokens
    covered = cost_coverage.days & usage_coverage.days
    comparisons = [
        _compare(day, model, ledger_sides.get((day, model), Side()),
                 Side(gateway_tokens.get((day, model), Tokens()), apportioned.gateway.get((day, model), Decimal(0))),
                 day in covered, tolerance)
        for day, model in sorted(set(ledger_sides) | set(gateway_tokens) | set(apportioned.gateway))
    ]
    comparisons = _explain(comparisons, _flagged(ledger, model_key), other_tiers, costs, tolerance)
    outside_by_day = {day: Side(outside_tokens.get(day, Tokens()), apportioned.outside.get(day, Decimal(0)))
                      for day in sorted(set(outside_tokens) | set(apportioned.outside))}
    return Reconciliation(
        period=period, tolerance=tolerance, gateway_keys=keys, comparisons=comparisons,
        outside_by_day=outside_by_day,
        outside_keys=tuple(sorted({line.api_key_id or "(no key)" for line in usage if not is_gateway(line)})),
        other_tiers=dict(other_tiers), unapportioned=apportioned.unapportioned,
        organisation_dollars=sum((cost.dollars for cost in costs), Decimal(0)),
        uncovered_days=tuple(sorted(days - covered)),
        notes=() if gateway_keys else (f"gateway key {keys[0]}: the only API key in the usage report",),
    )


def _ledger_sides(rows: Sequence[UsageRow], days: set[date], model_key: ModelKey) -> dict[tuple[date, str], Side]:
    sides: dict[tuple[date, str], Side] = defaultdict(Side)
    for row in rows:
        day_text, model = row.key
        if day_text is None or (not row.totals.requests and not row.totals.cost):
            continue  # records without usage: nothing was billed
        day = date.fromisoformat(day_text)
        if day in days:
            key = (day, model_key(model or "", day))
            sides[key] += Side(row.totals.tokens, row.totals.cost)
    return sides


def _compare(day: date, model: str, ledger: Side, anthropic: Side, covered: bool, tolerance: Decimal) -> Comparison:
    tokens_match = ledger.tokens == anthropic.tokens
    dollars_match = within(ledger.dollars, anthropic.dollars, tolerance)
    matched = Status.MATCH if tokens_match and dollars_match else Status.MISMATCH
    status = matched if covered else Status.NOT_COVERED
    return Comparison(day, model, ledger, anthropic, status, tokens_match, dollars_match)


def _explain(comparisons: list[Comparison], flagged: dict[tuple[date, str], _Flagged], other_tiers: dict[str, Side],
             costs: Sequence[CostLine], tolerance: Decimal) -> list[Comparison]:
    by_key = {(comparison.day, comparison.model): comparison for comparison in comparisons}
    batch_days = {cost.day for cost in costs if cost.service_tier == "batch"}
    explained = []
    for comparison in comparisons:
        causes: list[str] = []
        if comparison.status is Status.NOT_COVERED:
            causes.append("the reports do not cover this whole UTC day (fetched before it ended, or a partial "
                          "month): not compared")
        elif comparison.status is Status.MISMATCH:
            causes = _causes(comparison, by_key, flagged.get((comparison.day, comparison.model)), other_tiers,
                             comparison.day in batch_days, tolerance)
        explained.append(replace(comparison, causes=tuple(causes)))
    return explained


@dataclass(frozen=True)
class _Flagged:
    estimated: int
    geo_unpriced_cost: Decimal


def _flagged(rows: Sequence[UsageRow], model_key: ModelKey) -> dict[tuple[date, str], _Flagged]:
    found: dict[tuple[date, str], _Flagged] = defaultdict(lambda: _Flagged(0, Decimal(0)))
    for row in rows:
        day_text, model = row.key
        if day_text is not None:
            day = date.fromisoformat(day_text)
            key = (day, model_key(model or "", day))
            known = found[key]
            found[key] = _Flagged(known.estimated + row.totals.estimated,
                                  known.geo_unpriced_cost + row.totals.geo_unpriced_cost)
    return found


def _total_tokens(side: Side) -> int:
    return sum(_tokens_by_field(side.tokens).values())


def _causes(comparison: Comparison, by_key: dict[tuple[date, str], Comparison], flagged: _Flagged | None,
            other_tiers: dict[str, Side], batch_day: bool, tolerance: Decimal) -> list[str]:
    causes = []
    ours, theirs = comparison.ledger, comparison.anthropic
    if not comparison.tokens_match:
        causes.extend(_token_causes(comparison, by_key, flagged, other_tiers, batch_day))
    elif not comparison.dollars_match:
        causes.extend(_dollar_causes(ours, theirs, flagged, tolerance))
    return causes or ["unexplained: compare the day's ledger records with the Console's usage page"]


def _token_causes(comparison: Comparison, by_key: dict[tuple[date, str], Comparison], flagged: _Flagged | None,
                  other_tiers: dict[str, Side], batch_day: bool) -> list[str]:
    causes = []
    ours, theirs = _total_tokens(comparison.ledger), _total_tokens(comparison.anthropic)
    for neighbour in (comparison.day - timedelta(days=1), comparison.day + timedelta(days=1)):
        other = by_key.get((neighbour, comparison.model))
        if other is not None and not other.tokens_match and \
                comparison.ledger.tokens + other.ledger.tokens == comparison.anthropic.tokens + other.anthropic.tokens:
            causes.append(f"day boundary: the usage of {min(neighbour, comparison.day)} and "
                          f"{max(neighbour, comparison.day)} matches in sum, so records fell on the other side of "
                          "midnight UTC (a ledger or report bucketed in another time zone, or a proxy's clock)")
            break
    if ours == 0:
        causes.append("missing proxy ledger: Anthropic counted the gateway's key this day and no ledger given has "
                      "a record (a proxy's ledger not passed with --ledger, rotated away or lost)")
    elif ours < theirs:
        causes.append(f"the ledger has {theirs - ours:,} fewer tokens: a proxy's ledger missing for part of the day, "
                      "or the gateway's key used by something that bypassed the gateway")
    else:
        causes.append(f"the ledger has {ours - theirs:,} more tokens: Anthropic's report may not be final for this "
                      "day (usage arrives late; fetch again after 48 hours)")
    if flagged and flagged.estimated:
        causes.append(f"{flagged.estimated} requests with estimated usage (streams cut short): the ledger holds a "
                      "floor, Anthropic billed what ran")
    if batch_day or other_tiers.get("batch"):
        causes.append("batch traffic: Message Batches on the gateway's key are billed but not priced by the gateway "
                      "(fetch the usage report with group_by[]=service_tier to list them apart)")
    return causes


def _dollar_causes(ours: Side, theirs: Side, flagged: _Flagged | None, tolerance: Decimal) -> list[str]:
    causes = []
    difference = theirs.dollars - ours.dollars
    if flagged and flagged.geo_unpriced_cost and \
            within(ours.dollars + flagged.geo_unpriced_cost * GEO_PREMIUM, theirs.dollars, tolerance):
        causes.append(f"unpriced geo premium: ${flagged.geo_unpriced_cost} of requests ran with inference_geo us "
                      "(1.1x), which the gateway does not price (flag geo_premium_unpriced)")
    elif ours.dollars:
        ratio = theirs.dollars / ours.dollars
        causes.append(f"the price differs: Anthropic billed {ratio:.4f}x the gateway's price for the same tokens "
                      f"({'+' if difference > 0 else '-'}${abs(difference):.6f}); a negotiated price or a price "
                      "change the gateway's table lacks (set pricing.overrides in the bundle)")
    return causes
