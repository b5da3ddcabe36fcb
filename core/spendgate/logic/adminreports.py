"""Anthropic's Admin API usage and cost reports, parsed exactly as documented, reduced to UTC days.

- `GET /v1/organizations/cost_report`: daily buckets (`bucket_width` 1d only); each result has
  `amount`, the cost in the lowest currency unit (cents) as a decimal string ("123.78912" is
  $1.2378912), and `currency` (always "USD" so far). Grouped by `description`, a result also names
  `cost_type` (tokens, web_search, code_execution, ...), `model`, `service_tier`, `context_window`,
  `token_type` (uncached_input_tokens, output_tokens, cache_read_input_tokens,
  cache_creation.ephemeral_5m_input_tokens, cache_creation.ephemeral_1h_input_tokens); grouped by
  `workspace_id`, the workspace (null: the default one). Priority Tier costs are not in it.
- `GET /v1/organizations/usage_report/messages`: buckets of 1d, 1h or 1m; each result counts
  `uncached_input_tokens`, `cache_creation.{ephemeral_5m,ephemeral_1h}_input_tokens`,
  `cache_read_input_tokens`, `output_tokens`, `server_tool_use.web_search_requests`, with the
  dimensions it was grouped by (`api_key_id`, `model`, `service_tier`, `workspace_id`, ...; null
  when not grouped by them).

Both answer `{data: [{starting_at, ending_at, results: [...]}], has_more, next_page}`; ends are
exclusive and buckets are snapped to UTC. A saved report is one response, or a JSON array of the
pages of one (`has_more` true on every page but the last). Unknown fields are ignored (the API
grows); a known field with the wrong type, a missing page, a currency other than USD or a bucket
that spans UTC days is an error naming the file, the place and the field.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from spendgate.logic.pricing import Tokens

CENTS_PER_DOLLAR: Final = Decimal(100)
# The cost report's token types, as the ledger's token fields (docs/ledger.md).
TOKEN_TYPES: Final = {
    "uncached_input_tokens": "input",
    "cache_creation.ephemeral_5m_input_tokens": "cache_write_5m",
    "cache_creation.ephemeral_1h_input_tokens": "cache_write_1h",
    "cache_read_input_tokens": "cache_read",
    "output_tokens": "output",
}
WEB_SEARCH: Final = "web_search"


class ReportError(ValueError):
    """A report file that cannot be read as the documented response; the message says where and why."""


class _Documented(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class CostResult(_Documented):
    amount: str
    currency: str
    workspace_id: str | None = None
    description: str | None = None
    cost_type: str | None = None
    context_window: str | None = None
    model: str | None = None
    service_tier: str | None = None
    token_type: str | None = None
    inference_geo: str | None = None
    speed: str | None = None

    @field_validator("amount")
    @classmethod
    def _decimal_string(cls, value: str) -> str:
        try:
            amount = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"amount {value!r} is not a decimal string") from None
        if not amount.is_finite():
            raise ValueError(f"amount {value!r} is not a finite decimal")
        return value

    @field_validator("currency")
    @classmethod
    def _usd(cls, value: str) -> str:
        if value != "USD":
            raise ValueError(f"currency {value!r}: only USD is reconciled (the ledger is in USD)")
        return value

    @property
    def dollars(self) -> Decimal:
        return Decimal(self.amount) / CENTS_PER_DOLLAR


class CacheCreation(_Documented):
    ephemeral_5m_input_tokens: int = Field(default=0, ge=0)
    ephemeral_1h_input_tokens: int = Field(default=0, ge=0)


class ServerToolUse(_Documented):
    web_search_requests: int = Field(default=0, ge=0)


class UsageResult(_Documented):
    uncached_input_tokens: int = Field(ge=0)
    cache_creation: CacheCreation = Field(default_factory=CacheCreation)
    cache_read_input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    server_tool_use: ServerToolUse | None = None
    api_key_id: str | None = None
    workspace_id: str | None = None
    model: str | None = None
    service_tier: str | None = None
    context_window: str | None = None
    inference_geo: str | None = None
    speed: str | None = None
    account_id: str | None = None
    service_account_id: str | None = None

    @property
    def tokens(self) -> Tokens:
        return Tokens(input=self.uncached_input_tokens, cache_write_5m=self.cache_creation.ephemeral_5m_input_tokens,
                      cache_write_1h=self.cache_creation.ephemeral_1h_input_tokens,
                      cache_read=self.cache_read_input_tokens, output=self.output_tokens,
                      web_searches=self.server_tool_use.web_search_requests if self.server_tool_use else 0)


class _Bucket(_Documented):
    starting_at: datetime
    ending_at: datetime

    @field_validator("starting_at", "ending_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("must be an RFC 3339 time with its offset (the API answers in UTC)")
        return value


class CostBucket(_Bucket):
    results: list[CostResult]


class UsageBucket(_Bucket):
    results: list[UsageResult]


class CostReport(_Documented):
    data: list[CostBucket]
    has_more: bool
    next_page: str | None = None


class UsageReport(_Documented):
    data: list[UsageBucket]
    has_more: bool
    next_page: str | None = None


@dataclass(frozen=True)
class CostLine:
    """One cost report result, in dollars, on its UTC day."""

    day: date
    dollars: Decimal
    model: str | None
    token_type: str | None  # the ledger's name for it (TOKEN_TYPES), or Anthropic's if it has none
    cost_type: str | None
    service_tier: str | None
    workspace_id: str | None
    description: str | None


@dataclass(frozen=True)
class UsageLine:
    """One usage report result on its UTC day (finer buckets are summed by the reader)."""

    day: date
    tokens: Tokens
    model: str | None
    api_key_id: str | None
    service_tier: str | None
    workspace_id: str | None
    inference_geo: str | None


@dataclass(frozen=True)
class Coverage:
    """The UTC days a report's buckets cover whole, those they cover in part (a report fetched during
    the day, hourly buckets cut short), and the dimensions its results were grouped by."""

    days: frozenset[date]
    partial_days: frozenset[date]
    grouped_by: frozenset[str]


def _coverage(buckets: Sequence[_Bucket], grouped_by: frozenset[str]) -> Coverage:
    covered: dict[date, timedelta] = {}
    for bucket in buckets:
        day = bucket.starting_at.date()
        covered[day] = covered.get(day, timedelta(0)) + (bucket.ending_at - bucket.starting_at)
    whole = frozenset(day for day, span in covered.items() if span >= timedelta(days=1))
    return Coverage(whole, frozenset(covered) - whole, grouped_by)


def _pages(text: str, source: str) -> list[Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(f"{source}: not JSON ({error})") from None
    return document if isinstance(document, list) else [document]


def _located(error: ValidationError, source: str, page: int, pages: int) -> ReportError:
    first = error.errors()[0]
    where = ".".join(str(part) if not isinstance(part, int) else f"[{part}]" for part in first["loc"])
    where = where.replace(".[", "[")
    prefix = f"page {page + 1} of {pages}: " if pages > 1 else ""
    return ReportError(f"{source}: {prefix}{where or 'the response'}: {first['msg']}")


def _parse(text: str, source: str, model: type[CostReport] | type[UsageReport]) -> list[Any]:
    pages = _pages(text, source)
    if not pages:
        raise ReportError(f"{source}: an empty list holds no report page")
    parsed = []
    for index, page in enumerate(pages):
        try:
            parsed.append(model.model_validate(page))
        except ValidationError as error:
            raise _located(error, source, index, len(pages)) from None
    for index, page in enumerate(parsed):
        last = index == len(parsed) - 1
        if page.has_more and last:
            raise ReportError(f"{source}: the last page says has_more: true (next_page {page.next_page!r}); "
                              "fetch every page (follow next_page) and save them as one JSON array")
        if not page.has_more and not last:
            raise ReportError(f"{source}: page {index + 1} says has_more: false but more pages follow")
    buckets = [bucket for page in parsed for bucket in page.data]
    _check_buckets(buckets, source)
    return buckets


def _check_buckets(buckets: Sequence[_Bucket], source: str) -> None:
    seen: set[datetime] = set()
    for index, bucket in enumerate(buckets):
        start, end = bucket.starting_at, bucket.ending_at
        if end <= start:
            raise ReportError(f"{source}: bucket {index + 1} ends ({end.isoformat()}) before it starts")
        if start.utcoffset() != timedelta(0) or (end - start) > timedelta(days=1) or \
                (end - timedelta(microseconds=1)).date() != start.date():
            raise ReportError(f"{source}: bucket {index + 1} ({start.isoformat()} to {end.isoformat()}) does not lie "
                              "within one UTC day; reconciliation compares UTC days (bucket_width 1d, 1h or 1m)")
        if start in seen:
            raise ReportError(f"{source}: two buckets start at {start.isoformat()} (a page saved twice?)")
        seen.add(start)


def _grouped_by(results: Sequence[BaseModel], dimensions: Sequence[str]) -> frozenset[str]:
    return frozenset(name for name in dimensions if any(getattr(result, name) is not None for result in results))


def read_cost_report(text: str, source: str = "cost report") -> tuple[list[CostLine], Coverage]:
    buckets: list[CostBucket] = _parse(text, source, CostReport)
    lines = [CostLine(day=bucket.starting_at.date(), dollars=result.dollars, model=result.model,
                      token_type=TOKEN_TYPES.get(result.token_type or "", result.token_type),
                      cost_type=result.cost_type, service_tier=result.service_tier,
                      workspace_id=result.workspace_id, description=result.description)
             for bucket in buckets for result in bucket.results]
    results = [result for bucket in buckets for result in bucket.results]
    coverage = _coverage(buckets, _grouped_by(results, ("description", "workspace_id")))
    return lines, coverage


def read_usage_report(text: str, source: str = "usage report") -> tuple[list[UsageLine], Coverage]:
    buckets: list[UsageBucket] = _parse(text, source, UsageReport)
    lines = [UsageLine(day=bucket.starting_at.date(), tokens=result.tokens, model=result.model,
                       api_key_id=result.api_key_id, service_tier=result.service_tier,
                       workspace_id=result.workspace_id, inference_geo=result.inference_geo)
             for bucket in buckets for result in bucket.results]
    results = [result for bucket in buckets for result in bucket.results]
    coverage = _coverage(buckets, _grouped_by(results, ("api_key_id", "model", "service_tier", "workspace_id")))
    return lines, coverage
