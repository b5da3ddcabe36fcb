"""The chargeback table, pure: hierarchy, subtotals and totals that add up to the cent, budgets in their
own windows, variance against the previous month."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from spendgate.api.v1alpha1 import Period, ScopeKind
from spendgate.logic.chargeback import (
    CENT,
    GroupBy,
    RowKind,
    allocate,
    budget_figures,
    build,
    cents,
)
from spendgate.logic.pricing import Tokens
from spendgate.logic.usage import Month, UsageRow, UsageTotals
from spendgate.policy.bundle import BudgetEntry, CostCenterEntry, ScopeEntry, ThresholdEntry, WindowEntry

NOVEMBER = Month(2026, 11)
COST_CENTERS = [
    CostCenterEntry(name="engineering", code="ENG-1000", displayName="Engineering"),
    CostCenterEntry(name="platform", code="ENG-1200", displayName="Platform Engineering", parent="engineering",
                    ancestors=["engineering"]),
    CostCenterEntry(name="mobile", code="ENG-1300", displayName="Mobile", parent="engineering",
                    ancestors=["engineering"]),
    CostCenterEntry(name="finance", code="FIN-2000", displayName="Finance"),
]
EXACT = st.decimals(min_value=0, max_value=10_000, places=9, allow_nan=False, allow_infinity=False)


def usage(cost: str, requests: int = 1, output: int = 10) -> UsageTotals:
    return UsageTotals(requests=requests, tokens=Tokens(input=100, output=output), cost=Decimal(cost),
                       records=requests)


def budget(name: str, cost_center: str, limit: str, time_zone: str = "UTC", period: Period = Period.MONTHLY,
           scope: ScopeEntry | None = None) -> BudgetEntry:
    return BudgetEntry(id=f"ai-budgets/{name}", costCenter=cost_center,
                       scope=scope or ScopeEntry(kind=ScopeKind.COST_CENTER), limitUSD=limit,
                       window=WindowEntry(period=period, timeZone=time_zone),
                       thresholds=ThresholdEntry(alertPercent=80, downgradePercent=95, pausePercent=110),
                       enforcement="Enforce")


@given(parts=st.lists(EXACT, min_size=1, max_size=30))
def test_rounded_parts_add_up_to_the_rounded_total_each_within_a_cent(parts: list[Decimal]) -> None:
    whole = cents(sum(parts, Decimal(0)))

    split = allocate(whole, parts)

    assert sum(split, Decimal(0)) == whole
    assert all(abs(rounded - exact) < CENT for rounded, exact in zip(split, parts, strict=True))
    assert all(rounded == rounded.quantize(CENT) for rounded in split)


def test_three_thirds_of_a_dollar_add_up_to_a_dollar() -> None:
    assert allocate(Decimal("1.00"), [Decimal(1) / 3] * 3) == [Decimal("0.34"), Decimal("0.33"), Decimal("0.33")]


def test_rows_follow_the_hierarchy_with_subtotals_that_add_up_to_the_cent() -> None:
    current = [UsageRow(("engineering",), usage("0.004")), UsageRow(("platform",), usage("10.005", 3)),
               UsageRow(("mobile",), usage("2.003")), UsageRow(("finance",), usage("0.001")),
               UsageRow(("ghost",), usage("1.0")), UsageRow((None,), usage("0", 0))]
    previous = [UsageRow(("platform",), usage("8.00")), UsageRow(("finance",), usage("1.00"))]

    table = build(NOVEMBER, GroupBy.COST_CENTER, current, previous, COST_CENTERS, {})

    shown = [(row.kind, row.code or row.cost_center, row.path, row.cost) for row in table.rows]
    assert shown == [
        (RowKind.COST_CENTER, "ENG-1000", "ENG-1000", Decimal("0.00")),
        (RowKind.COST_CENTER, "ENG-1200", "ENG-1000 > ENG-1200", Decimal("10.01")),
        (RowKind.COST_CENTER, "ENG-1300", "ENG-1000 > ENG-1300", Decimal("2.00")),
        (RowKind.SUBTOTAL, "ENG-1000", "ENG-1000", Decimal("12.01")),
        (RowKind.COST_CENTER, "FIN-2000", "FIN-2000", Decimal("0.00")),
        (RowKind.COST_CENTER, "ghost", "ghost", Decimal("1.00")),
        (RowKind.COST_CENTER, "(none)", "(none)", Decimal("0.00")),
        (RowKind.TOTAL, "", "", Decimal("13.01")),
    ]
    own = [row for row in table.rows if row.kind is RowKind.COST_CENTER]
    assert sum(row.cost for row in own) == table.total.cost == cents(Decimal("13.013"))
    assert table.total.totals.cost == Decimal("13.013")  # the exact total is kept
    assert [row.variance for row in own[:2]] == [Decimal("0.00"), Decimal("2.01")]
    assert own[3].variance_percent == Decimal(-100)
    assert table.rows[0].note == "own spend, without the cost centers below"
    assert table.notes == ["not in the policies (shown by name, at the top level): ghost"]


def test_grouped_by_developer_each_cost_center_gets_a_subtotal() -> None:
    current = [UsageRow(("platform", "alice"), usage("1.005")), UsageRow(("platform", "bob"), usage("1.005")),
               UsageRow(("finance", "carol"), usage("0.5"))]

    table = build(NOVEMBER, GroupBy.DEVELOPER, current, [], COST_CENTERS, {})

    shown = [(row.kind, row.cost_center, row.item, row.cost) for row in table.rows if row.totals.records]
    assert shown == [
        (RowKind.ITEM, "platform", "alice", Decimal("1.01")),
        (RowKind.ITEM, "platform", "bob", Decimal("1.00")),
        (RowKind.SUBTOTAL, "platform", None, Decimal("2.01")),
        (RowKind.SUBTOTAL, "engineering", None, Decimal("2.01")),
        (RowKind.ITEM, "finance", "carol", Decimal("0.50")),
        (RowKind.SUBTOTAL, "finance", None, Decimal("0.50")),
        (RowKind.TOTAL, "", None, Decimal("2.51")),
    ]


def test_monthly_budgets_show_their_spend_in_their_own_time_zone() -> None:
    budgets = [budget("eng-monthly", "engineering", "5000.00", "America/New_York"),
               budget("eng-tight", "engineering", "100.00", "America/New_York"),
               budget("platform-daily", "platform", "40.00", period=Period.DAILY),
               budget("alice-monthly", "platform", "50.00", scope=ScopeEntry(kind=ScopeKind.DEVELOPER, name="alice"))]
    window_usage = {"America/New_York": [UsageRow(("platform",), usage("7.00")), UsageRow(("finance",), usage("1"))],
                    "UTC": []}

    figures = budget_figures(NOVEMBER, GroupBy.COST_CENTER, budgets, COST_CENTERS, window_usage)

    (key, figure), = figures.items()
    assert key == ("engineering", None)
    assert (figure.budgets, figure.limit, figure.spent) == (("ai-budgets/eng-tight", "ai-budgets/eng-monthly"),
                                                            Decimal("100.00"), Decimal("7.00"))
    assert figure.basis == "monthly 2026-11 in America/New_York: 2026-11-01T04:00:00Z to 2026-12-01T05:00:00Z"
    table = build(NOVEMBER, GroupBy.COST_CENTER, [UsageRow(("platform",), usage("7"))], [], COST_CENTERS, figures)
    assert [row.budget for row in table.rows if row.kind is RowKind.SUBTOTAL] == [figure]
