"""Reconciliation, pure: dollars split by Anthropic's own amounts, the likely cause of each kind of mismatch."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from spendgate.logic.adminreports import CostLine, Coverage, UsageLine
from spendgate.logic.pricing import Tokens
from spendgate.logic.reconcile import ReconcileError, Status, parse_tolerance, reconcile
from spendgate.logic.usage import Month, UsageRow, UsageTotals

NOVEMBER = Month(2026, 11)
DAY = date(2026, 11, 10)
OPUS = "claude-opus-5-5"
GATEWAY, OTHER = "apikey_gateway", "apikey_other"
COVERED = Coverage(frozenset(NOVEMBER.days()), frozenset(), frozenset({"description", "api_key_id", "model"}))


def same(model: str, day: date) -> str:
    return model


def ledger(tokens: Tokens, cost: str, day: date = DAY, estimated: int = 0, geo: str = "0") -> UsageRow:
    return UsageRow((day.isoformat(), OPUS), UsageTotals(requests=1, tokens=tokens, cost=Decimal(cost), records=1,
                                                         estimated=estimated, geo_unpriced_cost=Decimal(geo)))


def usage(tokens: Tokens, key: str = GATEWAY, day: date = DAY, tier: str | None = "standard") -> UsageLine:
    return UsageLine(day, tokens, OPUS, key, tier, None, None)


def cost(dollars: str, token_type: str = "output", day: date = DAY, model: str | None = OPUS,
         cost_type: str = "tokens", tier: str | None = "standard") -> CostLine:
    return CostLine(day, Decimal(dollars), model, token_type, cost_type, tier, None, None)


def run(rows: list[UsageRow], costs: list[CostLine], lines: list[UsageLine], keys: tuple[str, ...] = (GATEWAY,),
        usage_coverage: Coverage = COVERED) -> list[tuple[Status, tuple[str, ...]]]:
    result = reconcile(NOVEMBER, rows, costs, COVERED, lines, usage_coverage, same, keys, parse_tolerance("0.05%"))
    return [(comparison.status, comparison.causes) for comparison in result.comparisons]


def test_amounts_are_split_by_the_keys_tokens_and_the_other_keys_line_is_what_is_left() -> None:
    result = reconcile(NOVEMBER, [ledger(Tokens(output=1000), "0.02")],
                       [cost("0.03", "output"), cost("0.01", token_type="", cost_type="code_execution", model=None)],
                       COVERED, [usage(Tokens(output=1000)), usage(Tokens(output=500), key=OTHER)], COVERED, same,
                       (GATEWAY,))

    assert [c.status for c in result.comparisons] == [Status.MATCH]
    assert result.comparisons[0].anthropic.dollars == Decimal("0.02")
    assert result.outside_by_day[DAY].dollars == Decimal("0.01")
    assert result.outside_share == Decimal("0.25")
    assert [(item.what, item.dollars) for item in result.unapportioned] == [("code_execution", Decimal("0.01"))]


def test_the_unpriced_geo_premium_is_named() -> None:
    causes = run([ledger(Tokens(output=1000), "0.10", geo="0.10")], [cost("0.11")], [usage(Tokens(output=1000))])

    assert causes[0][0] is Status.MISMATCH
    assert causes[0][1][0].startswith("unpriced geo premium: $0.10 of requests ran with inference_geo us (1.1x)")


def test_usage_with_no_ledger_record_is_a_missing_proxy_ledger() -> None:
    causes = run([], [cost("0.10")], [usage(Tokens(output=1000))])

    assert causes[0][1][0].startswith("missing proxy ledger: Anthropic counted the gateway's key this day")


def test_estimated_usage_and_late_reports_are_named_when_the_ledger_has_more() -> None:
    causes = run([ledger(Tokens(output=1200), "0.12", estimated=3)], [cost("0.10")], [usage(Tokens(output=1000))])

    assert causes[0][1] == (
        "the ledger has 200 more tokens: Anthropic's report may not be final for this day (usage arrives late; "
        "fetch again after 48 hours)",
        "3 requests with estimated usage (streams cut short): the ledger holds a floor, Anthropic billed what ran")


def test_batch_traffic_on_the_gateway_key_is_listed_apart() -> None:
    grouped = Coverage(COVERED.days, frozenset(), frozenset({"api_key_id", "model", "service_tier"}))
    result = reconcile(NOVEMBER, [ledger(Tokens(output=1000), "0.10")],
                       [cost("0.10"), cost("0.025", tier="batch")], COVERED,
                       [usage(Tokens(output=1000)), usage(Tokens(output=500), tier="batch")], grouped, same,
                       (GATEWAY,))

    assert [c.status for c in result.comparisons] == [Status.MATCH]
    assert result.other_tiers["batch"].dollars == Decimal("0.025")
    assert result.other_tiers["batch"].tokens.output == 500


def test_days_the_reports_do_not_cover_are_listed_not_judged() -> None:
    partial = Coverage(frozenset(day for day in NOVEMBER.days() if day < DAY), frozenset({DAY}),
                       frozenset({"api_key_id", "model"}))

    causes = run([ledger(Tokens(output=1000), "0.10")], [], [], usage_coverage=partial)

    assert causes == [(Status.NOT_COVERED, ("the reports do not cover this whole UTC day (fetched before it ended, "
                                            "or a partial month): not compared",))]


@pytest.mark.parametrize(("coverage", "message"), [
    (Coverage(frozenset(), frozenset(), frozenset({"model"})), "the usage report is not grouped by api_key_id"),
])
def test_reports_not_grouped_as_needed_are_refused_with_what_to_fetch(coverage: Coverage, message: str) -> None:
    with pytest.raises(ReconcileError, match=message):
        reconcile(NOVEMBER, [], [], COVERED, [], coverage, same)
    with pytest.raises(ReconcileError, match="the cost report is not grouped by description"):
        reconcile(NOVEMBER, [], [], Coverage(frozenset(), frozenset(), frozenset()), [], COVERED, same)


def test_the_only_key_is_the_gateway_key_and_the_report_says_so() -> None:
    result = reconcile(NOVEMBER, [], [], COVERED, [usage(Tokens(output=1))], COVERED, same)

    assert result.gateway_keys == (GATEWAY,)
    assert result.notes == (f"gateway key {GATEWAY}: the only API key in the usage report",)
