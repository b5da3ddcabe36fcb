"""What `kubectl get budgets` shows, without a cluster: a bundle's budgets with a spend figure each.

The same arithmetic as the operator's Budget.status (spendgate.logic.spend for the state and the
percentage, spendgate.logic.windows for the window): `spendgate status`, the gateway's admin
`/budgets` and a developer's own `/spendgate/v1/budgets` all serve these views, and `spendgate status`
and `spendgate statusline` read them back through the same model, so a gateway that answers
something else is a clear error, not a wrong figure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from spendgate.api.v1alpha1 import BudgetState, Enforcement, ScopeKind
from spendgate.logic.spend import exact, format_money, format_percent, state_for
from spendgate.logic.windows import rfc3339, window_at
from spendgate.policy.bundle import RFC3339_UTC, BudgetEntry

DECIMAL: Final = r"^-?[0-9]+(\.[0-9]+)?$"
Amount = Annotated[str, StringConstraints(pattern=DECIMAL, max_length=64)]
Instant = Annotated[str, StringConstraints(pattern=RFC3339_UTC)]


class BudgetView(BaseModel):
    """One budget as its Budget.status would read now: the fields of `kubectl get budgets -o json`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=253)
    namespace: str = Field(min_length=1, max_length=253)
    costCenter: str = Field(min_length=1, max_length=253)
    scope: str = Field(min_length=1, max_length=600, description='e.g. "Developer/alice", as kubectl shows it')
    enforcement: Enforcement
    limitUSD: Amount
    spentUSD: Amount
    remainingUSD: Amount = Field(description="May be negative once over the limit.")
    percentUsed: str = Field(max_length=32, description='e.g. "42.5%"')
    state: BudgetState
    window: str = Field(min_length=1, max_length=64)
    windowStart: Instant
    windowEnd: Instant = Field(description="When the window resets.")

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def used(self) -> Decimal:
        """Spent / limit."""
        return Decimal(self.spentUSD) / Decimal(self.limitUSD)


class BudgetViews(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: Instant = Field(description="When the gateway read its spend.")
    budgets: list[BudgetView]


def scope_text(kind: ScopeKind, name: str | None) -> str:
    """The scope in one word, as Budget.status.scope has it."""
    return kind.value if name is None else f"{kind.value}/{name}"


def budget_view(budget: BudgetEntry, spent: Callable[[str, str], Decimal], now: datetime) -> BudgetView:
    """`spent(budget id, window id)`: what is known to be spent in that window."""
    window = window_at(budget.window.period, budget.window.timeZone, now)
    amount, limit = spent(budget.id, window.id), Decimal(budget.limitUSD)
    namespace, _, name = budget.id.partition("/")
    return BudgetView(
        name=name, namespace=namespace, costCenter=budget.costCenter,
        scope=scope_text(budget.scope.kind, budget.scope.name), enforcement=budget.enforcement,
        limitUSD=budget.limitUSD, spentUSD=exact(amount), remainingUSD=exact(limit - amount),
        percentUsed=format_percent(amount, limit), state=state_for(amount, limit, budget.thresholds),
        window=window.id, windowStart=rfc3339(window.start), windowEnd=rfc3339(window.end))


def budget_views(budgets: Iterable[BudgetEntry], spent: Callable[[str, str], Decimal], now: datetime) -> BudgetViews:
    return BudgetViews(at=rfc3339(now), budgets=[budget_view(budget, spent, now) for budget in budgets])


def fullest(views: BudgetViews) -> BudgetView | None:
    """The budget closest to its limit (a paused one first): what one line should show."""
    return max(views.budgets, key=lambda view: view.used, default=None)


def status_line(views: BudgetViews, zone: tzinfo) -> str:
    """One short line for Claude Code's status line: the fullest budget, e.g.
    "alice-daily 85% · Alert · $34.00 of $40.00 · resets 00:00" (the reset in `zone`, the reader's)."""
    view = fullest(views)
    if view is None:
        return "spendgate: no budget covers you"
    percent = view.used * 100
    shown = "<1%" if 0 < percent < 1 else f"{int(percent)}%"
    now = datetime.fromisoformat(views.at)
    resets = _when(datetime.fromisoformat(view.windowEnd), now, zone)
    return (f"{view.name} {shown} · {view.state.value} · {format_money(Decimal(view.spentUSD))} of "
            f"{format_money(Decimal(view.limitUSD))} · resets {resets}")


def _when(instant: datetime, now: datetime, zone: tzinfo) -> str:
    """A reset time as short as it can be read: "00:00" within a day, "Mon 00:00" within a week, else the date."""
    local = instant.astimezone(zone)
    if instant - now < timedelta(days=1):
        return local.strftime("%H:%M")
    if instant - now < timedelta(days=7):
        return local.strftime("%a %H:%M")
    return local.strftime("%Y-%m-%d")
