"""Ledger usage summed over a dimension: what every report command (chargeback, FOCUS, reconcile) reads.

A ledger store (files through DuckDB, or PostgreSQL) answers one question, `UsageSource.usage`:
the totals of the ledger records whose `time` falls in [start, end), grouped by some dimensions.
Everything after that (hierarchies, budgets, rounding, FOCUS rows, the comparison with Anthropic's
reports) is pure and shared, so both stores give the same report from the same records.

Reporting periods are UTC calendar months, ends exclusive (`Month`): exports and reconciliation
use UTC days, like Anthropic's reports; budget windows keep their own time zones (logic.windows).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from spendgate.logic.pricing import Tokens

PERIOD_PATTERN = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class Dimension(StrEnum):
    """What usage can be grouped by: a ledger field each (docs/ledger.md), or the UTC day of `time`."""

    DAY = "day"  # the UTC calendar day of the record's arrival
    COST_CENTER = "costCenter"  # the CostCenter name from the virtual key
    DEVELOPER = "developer"
    REPOSITORY = "repo"
    SESSION = "session"
    MODEL = "servedModel"  # the model that ran (what Anthropic's reports show)
    PRICED_MODEL = "pricedModel"  # the id the price was found under


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """The sums over a group of ledger records. Money is exact."""

    requests: int = 0  # records with usage (billed responses)
    tokens: Tokens = field(default_factory=Tokens)
    cost: Decimal = Decimal(0)
    records: int = 0  # every record, refused and failed ones included
    estimated: int = 0  # records flagged `estimated` (a stream cut short: usage is a floor)
    geo_unpriced_cost: Decimal = Decimal(0)  # cost of records flagged `geo_premium_unpriced` (1.1x not in it)

    def __add__(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(self.requests + other.requests, self.tokens + other.tokens, self.cost + other.cost,
                           self.records + other.records, self.estimated + other.estimated,
                           self.geo_unpriced_cost + other.geo_unpriced_cost)


def total(totals: Iterable[UsageTotals]) -> UsageTotals:
    return sum(totals, UsageTotals())


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One group: its value per requested dimension (None where the ledger field was null), and its totals."""

    key: tuple[str | None, ...]
    totals: UsageTotals


class UsageSource(Protocol):
    """A ledger store the report commands can read."""

    def usage(self, start: datetime, end: datetime, by: Sequence[Dimension]) -> list[UsageRow]:
        """Totals of the records with start <= time < end, one row per distinct value of `by`."""
        ...

    def describe(self) -> str:
        """What was read, for the report's header (files and their count, or the database)."""
        ...


@dataclass(frozen=True)
class Month:
    """A UTC calendar month, [start, end)."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        matched = PERIOD_PATTERN.match(text)
        if matched is None:
            raise ValueError(f"period {text!r} is not a month like 2026-11")
        return cls(int(matched.group(1)), int(matched.group(2)))

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.following().start

    def following(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def days(self) -> list[date]:
        first = self.start.date()
        return [first + timedelta(days=offset) for offset in range((self.end - self.start).days)]

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def utc_day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)
