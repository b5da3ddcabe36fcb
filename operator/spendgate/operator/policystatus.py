"""CostCenter and RoutingPolicy status, pure.

A request counts against the CostCenter-scoped budgets of its cost center and of every ancestor
(docs/bundle.md), so a cost center's own CostCenter-scoped budget already sees its children's
spend. A CostCenter's `spentUSD` is therefore the largest current-window spend among its own
CostCenter-scoped budgets (they all count the same traffic; the largest is the longest window),
and only a cost center without one adds up its children's `spentUSD`. Developer, repository and
virtual-key budgets are views inside a cost center; they count towards `budgets`, not `spentUSD`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from spendgate.api import v1alpha1 as api
from spendgate.logic.spend import exact, to_cents
from spendgate.operator.conditions import ready_condition, set_condition
from spendgate.policy.errors import PolicyError


@dataclass(frozen=True)
class BudgetSummary:
    """What a CostCenter rollup needs of one Budget."""

    cost_center: str
    whole_cost_center: bool  # scope kind CostCenter
    spent: Decimal | None


def cost_center_statuses(
    cost_centers: Mapping[str, api.CostCenter],
    budgets: Sequence[BudgetSummary],
    errors: Mapping[str, Sequence[PolicyError]],
    previous: Mapping[str, api.CostCenterStatus],
    now: datetime,
) -> dict[str, api.CostCenterStatus]:
    children = _children(cost_centers)
    own_budgets = {name: [b for b in budgets if b.cost_center == name] for name in cost_centers}
    totals: dict[str, tuple[int, Decimal]] = {}

    def total(name: str, path: frozenset[str]) -> tuple[int, Decimal]:
        if name not in totals:
            below = [total(child, path | {name}) for child in children[name] if child not in path]
            mine = own_budgets[name]
            count = len(mine) + sum(count for count, _ in below)
            team_budgets = [b.spent or Decimal(0) for b in mine if b.whole_cost_center]
            spent = max(team_budgets) if team_budgets else sum((amount for _, amount in below), Decimal(0))
            totals[name] = (count, spent)
        return totals[name]

    statuses = {}
    for name, cost_center in cost_centers.items():
        count, spent = total(name, frozenset())
        generation = cost_center.metadata.generation or 0
        message = f"{count} budgets, {len(children[name])} child cost centers"
        ready = ready_condition(errors.get(name, ()), generation, "Compiled", message, now)
        old = previous.get(name, api.CostCenterStatus())
        statuses[name] = api.CostCenterStatus(
            observedGeneration=generation, conditions=set_condition(old.conditions, ready),
            spentUSD=exact(spent), spentUSDRounded=to_cents(spent), budgets=count, children=children[name],
        )
    return statuses


def _children(cost_centers: Mapping[str, api.CostCenter]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {name: [] for name in cost_centers}
    for name, cost_center in sorted(cost_centers.items()):
        parent = cost_center.spec.parent
        if parent in children and parent != name:
            children[parent].append(name)
    return children


def routing_policy_status(policy: api.RoutingPolicy, users: int, previous: api.RoutingPolicyStatus,
                          now: datetime) -> api.RoutingPolicyStatus:
    generation = policy.metadata.generation or 0
    ready = ready_condition((), generation, "Compiled", f"used by {users} budgets", now)
    return api.RoutingPolicyStatus(observedGeneration=generation, conditions=set_condition(previous.conditions, ready))
