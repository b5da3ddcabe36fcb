"""Budget views without a cluster: the operator's Budget.status arithmetic, and the status line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from spendgate.api import v1alpha1 as api
from spendgate.logic.budgetview import BudgetViews, budget_view, budget_views, fullest, status_line
from spendgate.logic.spend import exact
from spendgate.operator.budgetstatus import BudgetInputs, budget_status
from spendgate.operator.reporting import reporters
from spendgate.operator.spendindex import SpendIndex
from spendgate.policy.bundle import BudgetEntry, ScopeEntry, ThresholdEntry, WindowEntry

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def entry(name: str = "alice-daily", limit: str = "40.00", period: str = "Daily", zone: str = "Europe/Berlin",
          kind: str = "Developer", scope: str | None = "alice") -> BudgetEntry:
    return BudgetEntry(id=f"ai-budgets/{name}", costCenter="platform", scope=ScopeEntry(kind=kind, name=scope),
                       limitUSD=limit, window=WindowEntry(period=period, timeZone=zone),
                       thresholds=ThresholdEntry(alertPercent=80, downgradePercent=95, pausePercent=110),
                       enforcement=api.Enforcement.ENFORCE)


def spent(amount: str) -> Callable[[str, str], Decimal]:
    return lambda budget, window: Decimal(amount)


def test_a_view_reads_like_kubectl_get_budgets() -> None:
    view = budget_view(entry(), spent("38.61"), NOW)
    assert (view.id, view.scope, view.spentUSD, view.remainingUSD, view.percentUsed, view.state) == (
        "ai-budgets/alice-daily", "Developer/alice", "38.61", "1.39", "96.5%", api.BudgetState.DOWNGRADE)
    assert (view.window, view.windowStart, view.windowEnd) == (
        "2026-11-24", "2026-11-23T23:00:00Z", "2026-11-24T23:00:00Z")
    assert budget_view(entry(kind="CostCenter", scope=None), spent("0"), NOW).scope == "CostCenter"


@given(amount=st.decimals(min_value=0, max_value=Decimal("1e6"), places=9),
       limit=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1e6"), places=2),
       zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
       period=st.sampled_from(["Daily", "Weekly", "Monthly"]),
       hours=st.integers(0, 24 * 400))
def test_a_view_says_what_the_operators_status_says(amount: Decimal, limit: Decimal, zone: str, period: str,
                                                    hours: int) -> None:
    """The same arithmetic, not a second copy: for any spend, limit, zone and instant, the fields agree."""
    now, amount_text, limit_text = NOW + timedelta(hours=hours), exact(amount), exact(limit)
    budget = api.Budget.model_validate({
        "metadata": {"name": "alice-daily", "namespace": "ai-budgets"},
        "spec": {"costCenter": "platform", "scope": {"kind": "Developer", "name": "alice"}, "limitUSD": limit_text,
                 "window": {"period": period, "timeZone": zone}}})
    view = budget_view(entry(limit=limit_text, period=period, zone=zone), spent(amount_text), now)
    index = SpendIndex()
    index.put("system/proxy", api.SpendReportSpec(proxy="proxy", sequence=1, entries=[
        api.SpendEntry(budget="ai-budgets/alice-daily", window=view.window, spentUSD=amount_text)]))
    status = budget_status(BudgetInputs(budget, (), api.BudgetStatus(), now, timedelta(minutes=2),
                                        reporters(index.reports(), now, timedelta(seconds=60))), index)
    assert (view.spentUSD, view.remainingUSD, view.percentUsed, view.state, view.scope, view.window,
            view.windowStart, view.windowEnd) == (
        status.spentUSD, status.remainingUSD, status.percentUsed, status.state, status.scope, status.window,
        status.windowStart, status.windowEnd)


def views(*budgets: tuple[BudgetEntry, str], now: datetime = NOW) -> BudgetViews:
    amounts = {budget.id: Decimal(amount) for budget, amount in budgets}
    return budget_views([budget for budget, _ in budgets], lambda budget, window: amounts[budget], now)


def test_the_status_line_shows_the_fullest_budget_in_the_readers_time() -> None:
    shown = views((entry(), "34"), (entry("platform-monthly", "5000", "Monthly", "America/New_York", "CostCenter",
                                          None), "4000"))
    assert fullest(shown) is not None and fullest(shown).name == "alice-daily"  # type: ignore[union-attr]
    assert status_line(shown, BERLIN) == "alice-daily 85% · Alert · $34.00 of $40.00 · resets 00:00"
    assert status_line(shown, UTC).endswith("resets 23:00")


def test_the_status_line_keeps_amounts_under_a_cent_readable() -> None:
    assert status_line(views((entry(limit="0.005"), "0.0042")), BERLIN) == (
        "alice-daily 84% · Alert · $0.0042 of $0.005 · resets 00:00")
    assert status_line(views((entry(), "0.0041")), BERLIN).startswith("alice-daily <1% · Ok · $0.0041 of $40.00")


def test_the_status_line_for_a_paused_far_reset_and_nobody() -> None:
    weekly = views((entry("team-weekly", "100", "Weekly"), "120"))  # Tuesday noon: resets Monday
    assert status_line(weekly, BERLIN) == "team-weekly 120% · Paused · $120.00 of $100.00 · resets Mon 00:00"
    monthly = views((entry("team-monthly", "100", "Monthly"), "1"), now=NOW - timedelta(days=14))
    assert status_line(monthly, BERLIN).endswith("resets 2026-12-01")
    assert status_line(views(), BERLIN) == "spendgate: no budget covers you"
