"""Budget arithmetic: cumulative reports fold to exact totals, whatever the order or repetition."""

from __future__ import annotations

import re
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from spendgate.api.v1alpha1 import BudgetState, SpendEntry, SpendReportSpec
from spendgate.logic.spend import (
    exact,
    fold_entries,
    fold_reports,
    format_money,
    format_percent,
    format_usd,
    latest_reports,
    state_for,
    to_cents,
)
from spendgate.policy.bundle import ThresholdEntry

BUDGET, WINDOW = "ai-budgets/alice-daily", "2026-11-24"
THRESHOLDS = ThresholdEntry(alertPercent=80, downgradePercent=95, pausePercent=110)


def report(proxy: str, sequence: int, *amounts: tuple[str, str, str]) -> SpendReportSpec:
    entries = [SpendEntry(budget=budget, window=window, spentUSD=spent, requests=1)
               for budget, window, spent in amounts]
    return SpendReportSpec(proxy=proxy, sequence=sequence, entries=entries)


def test_each_proxys_latest_report_counts_once() -> None:
    reports = [
        report("a", 1, (BUDGET, WINDOW, "1.10")),
        report("a", 2, (BUDGET, WINDOW, "2.25")),
        report("b", 7, (BUDGET, WINDOW, "0.000000015")),
    ]
    assert fold_reports(reports, BUDGET, WINDOW).spent == Decimal("2.250000015")
    assert fold_reports(reports, BUDGET, WINDOW).proxies == 2


def test_a_duplicated_or_reordered_report_changes_nothing() -> None:
    first, second = report("a", 1, (BUDGET, WINDOW, "1")), report("a", 2, (BUDGET, WINDOW, "3"))
    assert fold_reports([second, first, second], BUDGET, WINDOW).spent == Decimal(3)


def test_other_budgets_and_windows_are_left_out() -> None:
    reports = [report("a", 1, (BUDGET, WINDOW, "1"), (BUDGET, "2026-11-23", "5"), ("x/y", WINDOW, "9"))]
    assert fold_reports(reports, BUDGET, WINDOW).spent == Decimal(1)


def test_latest_reports_keeps_the_highest_sequence_per_proxy() -> None:
    old, new, other = report("a", 4), report("a", 5), report("b", 1)
    assert sorted((r.proxy, r.sequence) for r in latest_reports([new, other, old])) == [("a", 5), ("b", 1)]


def test_fold_entries_sums_spend_and_requests_and_counts_proxies() -> None:
    entries = [SpendEntry(budget=BUDGET, window=WINDOW, spentUSD=v, requests=2) for v in ("0.1", "0.2")]
    folded = fold_entries(entries)
    assert (folded.spent, folded.requests, folded.proxies) == (Decimal("0.3"), 4, 2)


def test_states_follow_the_thresholds() -> None:
    limit = Decimal(40)
    assert state_for(Decimal("31.99"), limit, THRESHOLDS) is BudgetState.OK
    assert state_for(Decimal(32), limit, THRESHOLDS) is BudgetState.ALERT
    assert state_for(Decimal(38), limit, THRESHOLDS) is BudgetState.DOWNGRADE
    assert state_for(Decimal(44), limit, THRESHOLDS) is BudgetState.PAUSED


def test_formatting_for_people_and_machines() -> None:
    assert to_cents(Decimal("12.345")) == "12.35"
    assert exact(Decimal("1.500000")) == "1.5"
    assert exact(Decimal("1E+2")) == "100"
    assert format_percent(Decimal(1), Decimal(3)) == "33.3%"


def test_money_for_people_keeps_amounts_under_a_cent_readable() -> None:
    assert [format_money(Decimal(text)) for text in ("0", "0.0042", "0.014", "0.005", "0.00995", "0.1",
                                                       "1234.567", "-0.00000004")] == [
        "$0.00", "$0.0042", "$0.014", "$0.005", "$0.01", "$0.10", "$1,234.57", "-$0.00000004"]


AMOUNTS = st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e15"), max_value=Decimal("1e15"))


def shown_value(text: str) -> Decimal:
    return Decimal(text.replace("$", "").replace(",", ""))


@given(AMOUNTS)
def test_money_is_within_five_percent_and_never_zero_for_a_non_zero_amount(amount: Decimal) -> None:
    text = format_money(amount)
    assert re.fullmatch(r"-?\$\d{1,3}(,\d{3})*\.\d{2,}", text), text
    shown = shown_value(text)
    if amount == 0:
        assert text == "$0.00"
        return
    assert shown != 0 and (shown < 0) == (amount < 0)
    # two significant digits at least: the rounding error is at most half of the second digit
    assert abs(shown - amount) <= abs(amount) / 20


@given(AMOUNTS.filter(lambda amount: abs(amount) >= Decimal("0.1")))
def test_money_from_ten_cents_up_is_the_reports_format(amount: Decimal) -> None:
    assert format_money(amount) == format_usd(amount)


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal(0), max_value=Decimal("1e6"), places=12))
def test_money_never_hides_a_cent_or_more_than_it_needs(amount: Decimal) -> None:
    """Cents at least; past the cent only the digits that carry the two significant ones."""
    fraction = format_money(amount).partition(".")[2]
    assert len(fraction) >= 2
    assert len(fraction) == 2 or not fraction.endswith("0")
