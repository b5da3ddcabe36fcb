"""Anthropic's Admin API reports as documented: exact dollars from cent strings, pages, coverage, and bad
files refused with the place and the field."""

from __future__ import annotations

import contextlib
import copy
import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finance.mutations import JSON_VALUES, changed, paths
from spendgate.logic.adminreports import ReportError, read_cost_report, read_usage_report

# The documented example responses (platform.claude.com, Admin API: Get Cost Report, Get Messages Usage Report).
COST_EXAMPLE: dict[str, Any] = {
    "data": [{
        "starting_at": "2025-08-01T00:00:00Z", "ending_at": "2025-08-02T00:00:00Z",
        "results": [{"currency": "USD", "amount": "123.78912", "workspace_id": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ",
                     "description": "Claude Sonnet 4 Usage - Input Tokens", "cost_type": "tokens",
                     "context_window": "0-200k", "model": "claude-sonnet-4-20250514", "service_tier": "standard",
                     "token_type": "uncached_input_tokens"}],
    }],
    "has_more": False, "next_page": None,
}
USAGE_EXAMPLE: dict[str, Any] = {
    "data": [{
        "starting_at": "2025-08-01T00:00:00Z", "ending_at": "2025-08-02T00:00:00Z",
        "results": [{"api_key_id": "apikey_01Rj2N8SVvo6BePZj99NhmiT",
                     "cache_creation": {"ephemeral_1h_input_tokens": 1000, "ephemeral_5m_input_tokens": 500},
                     "cache_read_input_tokens": 200, "context_window": "0-200k", "model": "claude-sonnet-4-20250514",
                     "output_tokens": 500, "server_tool_use": {"web_search_requests": 10}, "service_tier": "standard",
                     "uncached_input_tokens": 1500, "workspace_id": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ"}],
    }],
    "has_more": False, "next_page": None,
}


def test_the_documented_cost_report_in_dollars_exactly() -> None:
    lines, coverage = read_cost_report(json.dumps(COST_EXAMPLE))

    (line,) = lines
    assert line.dollars == Decimal("1.2378912")  # "123.78912" cents
    assert (line.day, line.model, line.token_type, line.service_tier) == (
        date(2025, 8, 1), "claude-sonnet-4-20250514", "input", "standard")
    assert coverage.days == {date(2025, 8, 1)} and coverage.partial_days == frozenset()
    assert coverage.grouped_by == {"description", "workspace_id"}


def test_the_documented_usage_report_as_ledger_token_types() -> None:
    lines, coverage = read_usage_report(json.dumps(USAGE_EXAMPLE))

    (line,) = lines
    tokens = line.tokens
    assert (tokens.input, tokens.cache_write_5m, tokens.cache_write_1h, tokens.cache_read, tokens.output,
            tokens.web_searches) == (1500, 500, 1000, 200, 500, 10)
    assert line.api_key_id == "apikey_01Rj2N8SVvo6BePZj99NhmiT"
    assert coverage.grouped_by == {"api_key_id", "model", "service_tier", "workspace_id"}


def test_pages_saved_as_an_array_are_read_together_and_fields_the_api_adds_are_ignored() -> None:
    first = copy.deepcopy(USAGE_EXAMPLE) | {"has_more": True, "next_page": "page_MjAyNS0wOC0wMg=="}
    second = copy.deepcopy(USAGE_EXAMPLE)
    second["data"][0] |= {"starting_at": "2025-08-02T00:00:00Z", "ending_at": "2025-08-03T00:00:00Z"}
    second["data"][0]["results"][0]["a_field_from_next_year"] = {"nested": True}

    lines, coverage = read_usage_report(json.dumps([first, second]))

    assert [line.day for line in lines] == [date(2025, 8, 1), date(2025, 8, 2)]
    assert coverage.days == {date(2025, 8, 1), date(2025, 8, 2)}


def test_hourly_buckets_cover_a_day_only_when_all_its_hours_are_there() -> None:
    hours = [{"starting_at": f"2025-08-01T{hour:02d}:00:00Z", "ending_at": f"2025-08-01T{hour + 1:02d}:00:00Z",
              "results": []} for hour in range(23)]
    hours.append({"starting_at": "2025-08-01T23:00:00Z", "ending_at": "2025-08-02T00:00:00Z", "results": []})
    hours.append({"starting_at": "2025-08-02T00:00:00Z", "ending_at": "2025-08-02T01:00:00Z", "results": []})

    _, coverage = read_usage_report(json.dumps({"data": hours, "has_more": False, "next_page": None}))

    assert coverage.days == {date(2025, 8, 1)} and coverage.partial_days == {date(2025, 8, 2)}


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.update(has_more=True, next_page="page_x"),
     "the last page says has_more: true (next_page 'page_x'); fetch every page"),
    (lambda r: r["data"][0]["results"][0].update(currency="EUR"),
     "data[0].results[0].currency: Value error, currency 'EUR': only USD is reconciled"),
    (lambda r: r["data"][0]["results"][0].update(amount="12,50"),
     "data[0].results[0].amount: Value error, amount '12,50' is not a decimal string"),
    (lambda r: r["data"][0]["results"][0].update(amount=12.5),
     "data[0].results[0].amount: Input should be a valid string"),
    (lambda r: r["data"][0]["results"][0].update(amount="NaN"),
     "amount 'NaN' is not a finite decimal"),
    (lambda r: r["data"][0].update(ending_at="2025-08-03T00:00:00Z"),
     "bucket 1 (2025-08-01T00:00:00+00:00 to 2025-08-03T00:00:00+00:00) does not lie within one UTC day"),
    (lambda r: r["data"][0].update(starting_at="2025-08-01T00:00:00"),
     "data[0].starting_at: Value error, must be an RFC 3339 time with its offset"),
    (lambda r: r["data"].append(copy.deepcopy(r["data"][0])),
     "two buckets start at 2025-08-01T00:00:00+00:00 (a page saved twice?)"),
    (lambda r: r.pop("has_more"), "has_more: Field required"),
])
def test_a_bad_cost_report_is_refused_with_the_place_and_the_field(change: Any, message: str) -> None:
    report = copy.deepcopy(COST_EXAMPLE)
    change(report)

    with pytest.raises(ReportError) as refused:
        read_cost_report(json.dumps(report), "cost.json")

    assert str(refused.value).startswith("cost.json: ")
    assert message in str(refused.value)


def test_a_page_that_says_it_is_last_with_pages_after_it_is_refused() -> None:
    with pytest.raises(ReportError, match="page 1 says has_more: false but more pages follow"):
        read_usage_report(json.dumps([USAGE_EXAMPLE, USAGE_EXAMPLE]))


def test_negative_token_counts_and_text_that_is_not_json_are_refused() -> None:
    report = copy.deepcopy(USAGE_EXAMPLE)
    report["data"][0]["results"][0]["output_tokens"] = -1
    with pytest.raises(ReportError, match=r"data\[0\].results\[0\].output_tokens: Input should be greater"):
        read_usage_report(json.dumps(report))
    with pytest.raises(ReportError, match="not JSON"):
        read_usage_report("{\"data\": [")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), replacement=JSON_VALUES)
def test_any_value_anywhere_is_read_or_refused_with_report_error(data: st.DataObject, replacement: Any) -> None:
    """Whatever value replaces whatever part of a report, the reader answers with lines or a ReportError."""
    for example, reader in ((COST_EXAMPLE, read_cost_report), (USAGE_EXAMPLE, read_usage_report)):
        report = copy.deepcopy(example)
        changed(report, data.draw(st.sampled_from(paths(report)[1:])), replacement)
        with contextlib.suppress(ReportError):
            reader(json.dumps(report))  # type: ignore[operator]
