"""Anthropic Admin API reports for a ledger, in the documented response shape: for tests and demos of
`spendgate reconcile`, and a local Admin API that serves them page by page.

What Anthropic would report for an organisation whose gateway key carried exactly the ledger's
traffic, plus other keys' traffic (a data team's batch job) that never passed through the gateway:
- the usage report grouped by api_key_id, model and service_tier, one bucket per UTC day;
- the cost report grouped by description: per day, model and token type, the ledger's cost of the
  gateway's usage split over token types by list price (so the sums match the ledger exactly), the
  other keys' usage at list price, web searches at $10 per thousand.
Amounts are cents as decimal strings, as the API writes them. Scenarios change the truth on purpose
(`Change`): more usage than the ledger has, a different price, usage moved across midnight.

    python -m spendgate.testing.adminreports --ledger LEDGER --period 2026-11 --out DIR
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from spendgate.logic.focus import METERS, meter_rate, split_exactly
from spendgate.logic.ledgerrecord import LedgerRecord
from spendgate.logic.pricing import PriceBook, Tokens
from spendgate.logic.usage import Month, utc_day_bounds
from spendgate.logic.windows import rfc3339
from spendgate.policy.bundle import PricingEntry

GATEWAY_KEY: Final = "apikey_01GatewaySpendgateExample"
OTHER_KEY: Final = "apikey_01DataTeamNightlyBatch"
WORKSPACE: Final = "wrkspc_01SpendgateExample"
OTHER_MODEL: Final = "claude-sonnet-5-5"
TOKEN_TYPES: Final = {"input": "uncached_input_tokens", "cache_write_5m": "cache_creation.ephemeral_5m_input_tokens",
                      "cache_write_1h": "cache_creation.ephemeral_1h_input_tokens",
                      "cache_read": "cache_read_input_tokens", "output": "output_tokens"}
LABELS: Final = {"input": "Input Tokens", "cache_write_5m": "Cache Write Tokens (5m)",
                 "cache_write_1h": "Cache Write Tokens (1h)", "cache_read": "Cache Read Tokens",
                 "output": "Output Tokens"}
BOOK: Final = PriceBook(PricingEntry())


@dataclass(frozen=True)
class Usage:
    """One key's usage of one model on one UTC day, and what it cost."""

    day: date
    model: str
    api_key_id: str
    tokens: Tokens
    dollars: Decimal
    service_tier: str = "standard"


def from_ledger(records: Iterable[LedgerRecord], key: str = GATEWAY_KEY) -> list[Usage]:
    """The gateway key's usage: the ledger's tokens and cost per UTC day and served model."""
    sums: dict[tuple[date, str], tuple[Tokens, Decimal]] = defaultdict(lambda: (Tokens(), Decimal(0)))
    for record in records:
        if record.tokens is not None and record.served_model:
            key_of = (record.time.date(), record.served_model)
            tokens, dollars = sums[key_of]
            sums[key_of] = (tokens + record.tokens, dollars + record.cost)
    return [Usage(day, model, key, tokens, dollars) for (day, model), (tokens, dollars) in sorted(sums.items())]


def other_traffic(month: Month, seed: int = 11, key: str = OTHER_KEY, model: str = OTHER_MODEL) -> list[Usage]:
    """A nightly job on another key: a few million tokens a day at list price, never through the gateway."""
    generator = random.Random(seed)
    usage = []
    for day in month.days():
        tokens = Tokens(input=generator.randrange(200_000, 900_000),
                        cache_read=generator.randrange(1_000_000, 4_000_000),
                        output=generator.randrange(50_000, 250_000))
        usage.append(Usage(day, model, key, tokens, tokens.cost(BOOK.rates(model, day))))
    return usage


@dataclass(frozen=True)
class Change:
    """A difference between Anthropic's truth and the ledger, for the mismatching scenarios."""

    day: date
    model: str
    extra: Decimal = Decimal(0)  # the gateway key used this share more than the ledger saw (a proxy's ledger missing)
    price: Decimal = Decimal(1)  # Anthropic's price of the model that day is the price table's times this (every key)
    to_next_day: Decimal = Decimal(0)  # this share of the gateway key's usage counted on the next UTC day


def _scaled(tokens: Tokens, share: Decimal) -> Tokens:
    return Tokens(**{name: int(Decimal(getattr(tokens, name)) * share) for name in
                     ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output", "web_searches")})


def apply(usage: Sequence[Usage], changes: Sequence[Change]) -> list[Usage]:
    result = list(usage)
    for change in changes:
        for index, item in enumerate(result):
            if (item.day, item.model) != (change.day, change.model):
                continue
            if change.price != 1:
                result[index] = item = replace(item, dollars=item.dollars * change.price)
            if item.api_key_id != GATEWAY_KEY:
                continue
            if change.extra:
                more = _scaled(item.tokens, change.extra)
                result[index] = item = replace(item, tokens=item.tokens + more,
                                               dollars=item.dollars + more.cost(BOOK.rates(item.model, item.day)))
            if change.to_next_day:
                moved = _scaled(item.tokens, change.to_next_day)
                share = item.dollars * change.to_next_day
                result[index] = replace(item, tokens=_minus(item.tokens, moved), dollars=item.dollars - share)
                result.append(replace(item, day=item.day + timedelta(days=1), tokens=moved, dollars=share))
    return _merged(result)


def _minus(tokens: Tokens, other: Tokens) -> Tokens:
    return Tokens(**{name: getattr(tokens, name) - getattr(other, name) for name in
                     ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output", "web_searches")})


def _merged(usage: Iterable[Usage]) -> list[Usage]:
    sums: dict[tuple[date, str, str, str], Usage] = {}
    for item in usage:
        key = (item.day, item.model, item.api_key_id, item.service_tier)
        known = sums.get(key)
        sums[key] = item if known is None else replace(known, tokens=known.tokens + item.tokens,
                                                       dollars=known.dollars + item.dollars)
    return [sums[key] for key in sorted(sums)]


def _cents(dollars: Decimal) -> str:
    return format((dollars * 100).normalize(), "f")


def _display(model: str) -> str:
    """claude-opus-5-5 -> Claude Opus 5.5"""
    parts = model.split("-")
    words = [part.capitalize() for part in parts if not part.isdigit()]
    numbers = [part for part in parts if part.isdigit()]
    return " ".join(words) + (" " + ".".join(numbers) if numbers else "")


def _buckets(start: datetime, end: datetime, results: dict[date, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    buckets = []
    day = start.date()
    while datetime(day.year, day.month, day.day, tzinfo=start.tzinfo) < end:
        bucket_start, bucket_end = utc_day_bounds(day)
        buckets.append({"starting_at": rfc3339(bucket_start), "ending_at": rfc3339(bucket_end),
                        "results": results.get(day, [])})
        day += timedelta(days=1)
    return buckets


def _pages(buckets: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    pages = []
    for offset in range(0, max(len(buckets), 1), limit):
        more = offset + limit < len(buckets)
        following = buckets[offset + limit]["starting_at"] if more else None
        pages.append({"data": buckets[offset:offset + limit], "has_more": more,
                      "next_page": f"page_{following}" if following else None})
    return pages


def cost_report(usage: Sequence[Usage], start: datetime, end: datetime, limit: int = 31) -> list[dict[str, Any]]:
    """The cost report grouped by description, as the pages of one response."""
    amounts: dict[tuple[date, str, str, str], Decimal] = defaultdict(Decimal)
    searches: dict[date, Decimal] = defaultdict(Decimal)
    for item in usage:
        rates = BOOK.rates(item.model, item.day)
        weights = [Decimal(getattr(item.tokens, meter.field)) * meter_rate(rates, meter) / meter.per
                   for meter in METERS]
        for meter, amount in zip(METERS, split_exactly(item.dollars, weights), strict=True):
            if meter.field == "web_searches":
                searches[item.day] += amount
            elif amount:
                amounts[(item.day, item.model, meter.field, item.service_tier)] += amount
    results: dict[date, list[dict[str, Any]]] = defaultdict(list)
    for (day, model, token_type, tier), amount in sorted(amounts.items()):
        results[day].append({
            "currency": "USD", "amount": _cents(amount), "workspace_id": None,
            "description": f"{_display(model)} Usage - {LABELS[token_type]}", "cost_type": "tokens",
            "context_window": "0-200k", "model": model, "service_tier": tier, "token_type": TOKEN_TYPES[token_type],
            "inference_geo": None, "speed": None})
    for day, amount in sorted(searches.items()):
        results[day].append({"currency": "USD", "amount": _cents(amount), "workspace_id": None,
                             "description": "Web Search Usage", "cost_type": "web_search", "context_window": None,
                             "model": None, "service_tier": None, "token_type": None, "inference_geo": None,
                             "speed": None})
    return _pages(_buckets(start, end, results), limit)


def usage_report(usage: Sequence[Usage], start: datetime, end: datetime, limit: int = 31) -> list[dict[str, Any]]:
    """The messages usage report grouped by api_key_id, model and service_tier, as the pages of one response."""
    results: dict[date, list[dict[str, Any]]] = defaultdict(list)
    for item in usage:
        tokens = item.tokens
        results[item.day].append({
            "api_key_id": item.api_key_id, "workspace_id": None, "model": item.model,
            "service_tier": item.service_tier, "context_window": None, "inference_geo": None, "speed": None,
            "account_id": None, "service_account_id": None,
            "uncached_input_tokens": tokens.input, "cache_read_input_tokens": tokens.cache_read,
            "cache_creation": {"ephemeral_5m_input_tokens": tokens.cache_write_5m,
                               "ephemeral_1h_input_tokens": tokens.cache_write_1h},
            "output_tokens": tokens.output, "server_tool_use": {"web_search_requests": tokens.web_searches}})
    return _pages(_buckets(start, end, results), limit)


def write_reports(usage: Sequence[Usage], start: datetime, end: datetime, folder: Path, month: Month) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cost = folder / f"cost-report-{month}.json"
    used = folder / f"usage-report-{month}.json"
    inside = [item for item in usage if start <= datetime.combine(item.day, datetime.min.time(), start.tzinfo) < end]
    cost.write_text(json.dumps(cost_report(inside, start, end), indent=1) + "\n", encoding="utf-8")
    used.write_text(json.dumps(usage_report(inside, start, end), indent=1) + "\n", encoding="utf-8")
    return [cost, used]


# a local Admin API ----------------------------------------------------------------------------------


REQUESTS: Final = web.AppKey("requests", list[tuple[str, list[tuple[str, str]]]])


def admin_api(usage: Sequence[Usage], key: str, page_size: int = 7) -> web.Application:
    """Serves both reports for any `starting_at`/`ending_at` to requests with `key`, at most `page_size` buckets a
    page (whatever `limit` asks), so that clients must follow `next_page`; records each request's path and query
    (never its headers) in `app[REQUESTS]`."""
    application = web.Application()
    application[REQUESTS] = []

    async def report(request: web.Request) -> web.Response:
        application[REQUESTS].append((request.path, list(request.query.items())))
        if request.headers.get("x-api-key") != key:
            return web.json_response({"type": "error", "error": {"type": "authentication_error",
                                                                 "message": "invalid x-api-key"}}, status=401)
        start = datetime.fromisoformat(request.query["starting_at"])
        end = datetime.fromisoformat(request.query["ending_at"])
        limit = min(int(request.query.get("limit", "7")), page_size)
        build = cost_report if request.path.endswith("cost_report") else usage_report
        pages = build([item for item in usage if start.date() <= item.day < end.date()], start, end, limit)
        page = request.query.get("page")
        index = next((number for number, body in enumerate(pages) if body["data"]
                      and f"page_{body['data'][0]['starting_at']}" == page), 0) if page else 0
        return web.json_response(pages[index])

    application.router.add_get("/v1/organizations/cost_report", report)
    application.router.add_get("/v1/organizations/usage_report/messages", report)
    return application


def main() -> None:
    from spendgate.adapters.ledgerfiles import read_ledgers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", nargs="+", required=True)
    parser.add_argument("--period", required=True, type=Month.parse)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--until", help="the reports end at this UTC day (exclusive), e.g. 2026-11-18: a partial month")
    args = parser.parse_args()
    month: Month = args.period
    end = datetime.fromisoformat(args.until + "T00:00:00+00:00") if args.until else month.end
    usage = [*from_ledger(read_ledgers(args.ledger).records), *other_traffic(month)]
    for path in write_reports(usage, month.start, end, args.out, month):
        print(path)


if __name__ == "__main__":
    main()
