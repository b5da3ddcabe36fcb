"""The one usage query both ledger stores run (DuckDB over files, PostgreSQL), and its rows as UsageRow.

Both stores expose the records under the same flat column names (`ledger_records`), with `time`
as a timestamp with time zone read in a UTC session, so `CAST(time AS DATE)` is the UTC day in both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any, Final

from spendgate.logic.pricing import Tokens
from spendgate.logic.usage import Dimension, UsageRow, UsageTotals

# The flat record the stores keep, in this order: the report columns of a ledger line (docs/ledger.md).
RECORD_COLUMNS: Final = (
    "time", "request_id", "endpoint", "key_name", "developer", "cost_center", "repo", "session",
    "requested_model", "served_model", "priced_model", "price_source", "outcome", "status",
    "input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens", "output_tokens",
    "web_searches", "cost_usd", "flags",
)

DIMENSION_COLUMNS: Final = {
    Dimension.DAY: "CAST(time AS DATE)",
    Dimension.COST_CENTER: "cost_center",
    Dimension.DEVELOPER: "developer",
    Dimension.REPOSITORY: "repo",
    Dimension.SESSION: "session",
    Dimension.MODEL: "served_model",
    Dimension.PRICED_MODEL: "priced_model",
}

TOTALS: Final = """
    count(*) FILTER (WHERE input_tokens IS NOT NULL) AS requests,
    coalesce(sum(input_tokens), 0) AS input_tokens,
    coalesce(sum(cache_write_5m_tokens), 0) AS cache_write_5m_tokens,
    coalesce(sum(cache_write_1h_tokens), 0) AS cache_write_1h_tokens,
    coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,
    coalesce(sum(output_tokens), 0) AS output_tokens,
    coalesce(sum(web_searches), 0) AS web_searches,
    coalesce(sum(cost_usd), 0) AS cost_usd,
    count(*) AS records,
    count(*) FILTER (WHERE 'estimated' = ANY(flags)) AS estimated,
    coalesce(sum(cost_usd) FILTER (WHERE 'geo_premium_unpriced' = ANY(flags)), 0) AS geo_unpriced_cost"""


def usage_query(table: str, by: Sequence[Dimension], start: str, end: str) -> str:
    """SELECT the totals per group of `by` over `table`; `start` and `end` are the engine's placeholders."""
    keys = [f"{DIMENSION_COLUMNS[dimension]} AS key_{index}" for index, dimension in enumerate(by)]
    group = f" GROUP BY {', '.join(str(index + 1) for index in range(len(by)))}" if by else ""
    return (f"SELECT {', '.join([*keys, TOTALS])} FROM {table} "
            f"WHERE time >= {start} AND time < {end}{group}")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, date) else str(value)


def usage_rows(rows: Sequence[Sequence[Any]], by: Sequence[Dimension],
               money: Callable[[Any], Decimal] = Decimal) -> list[UsageRow]:
    """The query's rows as UsageRow; a group without records (no row at all for `by` = ()) is left out."""
    width = len(by)
    result = []
    for row in rows:
        (requests, input_tokens, write_5m, write_1h, read, output, searches, cost, records, estimated,
         geo_cost) = row[width:]
        if not records:
            continue
        tokens = Tokens(input=int(input_tokens), cache_write_5m=int(write_5m), cache_write_1h=int(write_1h),
                        cache_read=int(read), output=int(output), web_searches=int(searches))
        totals = UsageTotals(requests=int(requests), tokens=tokens, cost=money(cost), records=int(records),
                             estimated=int(estimated), geo_unpriced_cost=money(geo_cost))
        result.append(UsageRow(tuple(_text(value) for value in row[:width]), totals))
    return result
