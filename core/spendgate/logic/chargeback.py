"""The monthly chargeback table: one row per cost-center code, its hierarchy, budget and variance. Pure.

Basis: the period is a UTC calendar month, like Anthropic's bill and the FOCUS export. A budget's
spend is shown in its own window (a monthly budget's month in its IANA time zone), labelled as
such: the two bases differ by the hours between midnight UTC and local midnight, and mixing them
is how other gateways over-counted.

Money: exact sums from the ledger, and dollars-and-cents figures that add up. Each cost is rounded
to the cent by the largest-remainder method from the top: the total is the exact total rounded
half-up, each parent's figure is split among its own direct spend and its children's subtrees,
so every subtotal is the sum of the rows above it and the total is the sum of every row, to the
cent, and no figure is more than a cent off its exact value. Exact values are kept beside them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Final

from spendgate.api.v1alpha1 import Period, ScopeKind
from spendgate.logic.usage import Dimension, Month, UsageRow, UsageTotals, total
from spendgate.logic.windows import Window, rfc3339, window_by_id
from spendgate.policy.bundle import BudgetEntry, CostCenterEntry

CENT: Final = Decimal("0.01")
NO_COST_CENTER: Final = "(none)"  # requests without a known key: refused, or before a key was checked
PATH_SEPARATOR: Final = " > "


class GroupBy(StrEnum):
    COST_CENTER = "cost-center"
    DEVELOPER = "developer"
    REPOSITORY = "repository"
    MODEL = "model"
    SESSION = "session"


ITEM_DIMENSIONS: Final = {GroupBy.DEVELOPER: Dimension.DEVELOPER, GroupBy.REPOSITORY: Dimension.REPOSITORY,
                          GroupBy.MODEL: Dimension.MODEL, GroupBy.SESSION: Dimension.SESSION}


class RowKind(StrEnum):
    COST_CENTER = "cost-center"  # a cost center's own spend (a parent's: without its children's)
    ITEM = "item"  # one developer / repository / model / session within a cost center
    SUBTOTAL = "subtotal"  # a cost center and everything below it
    TOTAL = "total"


@dataclass(frozen=True)
class BudgetFigure:
    """Monthly budgets on one row's scope, with their spend in their own windows (not the UTC month)."""

    budgets: tuple[str, ...]  # namespace/name
    limit: Decimal
    spent: Decimal  # in the window below: what Budget.status shows for it
    basis: str  # e.g. "monthly 2026-11, America/New_York"

    @property
    def used(self) -> Decimal:
        return self.spent * 100 / self.limit if self.limit else Decimal(0)


@dataclass(frozen=True)
class ChargebackRow:
    kind: RowKind
    code: str  # the finance code ("" for a cost center the policies do not know)
    cost_center: str  # the CostCenter's name as in the ledger
    name: str  # display name
    path: str  # codes from the root, e.g. "ENG-1000 > ENG-1200"
    depth: int
    item: str | None  # the --by value of an ITEM row
    totals: UsageTotals
    cost: Decimal  # to the cent, adding up (see module docstring)
    previous: Decimal  # the previous period, to the cent, adding up the same way
    previous_exact: Decimal
    budget: BudgetFigure | None = None
    note: str = ""

    @property
    def variance(self) -> Decimal:
        return self.cost - self.previous

    @property
    def variance_percent(self) -> Decimal | None:
        return (self.variance * 100 / self.previous) if self.previous else None


@dataclass(frozen=True)
class Chargeback:
    period: Month
    group_by: GroupBy
    rows: list[ChargebackRow]
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> ChargebackRow:
        return self.rows[-1]


@dataclass
class _Node:
    """A cost center in the tree, with its own spend per item (one item "" when grouped by cost center)."""

    name: str
    entry: CostCenterEntry | None
    children: list[_Node] = field(default_factory=list)
    items: dict[str, tuple[UsageTotals, UsageTotals]] = field(default_factory=dict)  # item -> (current, previous)

    def subtree(self, previous: bool = False) -> UsageTotals:
        index = 1 if previous else 0
        return total([*(pair[index] for pair in self.items.values()),
                      *(child.subtree(previous) for child in self.children)])


def cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def allocate(whole: Decimal, parts: Sequence[Decimal]) -> list[Decimal]:
    """Split `whole` (a multiple of a cent) into cents, one per exact part, by largest remainders.

    The results add up to `whole`; each is its part's floor or ceiling in cents when the parts add
    up to within a cent of `whole` (the ties go to the earlier part, so the split is stable).
    """
    floors = [part.quantize(CENT, rounding=ROUND_FLOOR) for part in parts]
    left = int((whole - sum(floors, Decimal(0))) / CENT)
    order = sorted(range(len(parts)), key=lambda index: (-(parts[index] - floors[index]), index))
    result = list(floors)
    if not order:
        return result
    for step in range(abs(left)):
        index = order[step % len(order)] if left > 0 else order[-1 - step % len(order)]
        result[index] += CENT if left > 0 else -CENT
    return result


def build(period: Month, group_by: GroupBy, current: Sequence[UsageRow], previous: Sequence[UsageRow],
          cost_centers: Sequence[CostCenterEntry], budgets: Mapping[tuple[str, str | None], BudgetFigure]
          ) -> Chargeback:
    """Rows from usage keyed by (cost center,) or (cost center, item); `budgets` by (cost center, item or None)."""
    roots, notes = _tree(current, previous, cost_centers)
    rows: list[ChargebackRow] = []
    exact_total = total(node.subtree() for node in roots)
    exact_previous = total(node.subtree(previous=True) for node in roots)
    shares = allocate(cents(exact_total.cost), [node.subtree().cost for node in roots])
    earlier = allocate(cents(exact_previous.cost), [node.subtree(previous=True).cost for node in roots])
    for node, share, before in zip(roots, shares, earlier, strict=True):
        _emit(node, share, before, group_by, budgets, (), rows)
    rows.append(ChargebackRow(kind=RowKind.TOTAL, code="", cost_center="", name="Total", path="", depth=0, item=None,
                              totals=exact_total, cost=cents(exact_total.cost), previous=cents(exact_previous.cost),
                              previous_exact=exact_previous.cost))
    if not cost_centers:
        notes.append("no policies given (--policies DIR): cost centers by name, without codes, hierarchy or budgets")
    return Chargeback(period, group_by, rows, notes)


def _tree(current: Sequence[UsageRow], previous: Sequence[UsageRow], cost_centers: Sequence[CostCenterEntry]
          ) -> tuple[list[_Node], list[str]]:
    nodes = {entry.name: _Node(entry.name, entry) for entry in cost_centers}
    usage: dict[str, dict[str, list[UsageTotals]]] = defaultdict(lambda: defaultdict(lambda: [UsageTotals()] * 2))
    for index, rows in enumerate((current, previous)):
        for row in rows:
            cost_center = row.key[0] or NO_COST_CENTER
            item = "" if len(row.key) == 1 else (row.key[1] or "(none)")
            pair = usage[cost_center][item]
            pair[index] = pair[index] + row.totals
    notes = []
    unknown = sorted(name for name in usage if name not in nodes and name != NO_COST_CENTER)
    if unknown and cost_centers:
        notes.append(f"not in the policies (shown by name, at the top level): {', '.join(unknown)}")
    for name in [*unknown, *([NO_COST_CENTER] if NO_COST_CENTER in usage else [])]:
        nodes[name] = _Node(name, None)
    for name, items in usage.items():
        nodes[name].items = {item: (pair[0], pair[1]) for item, pair in sorted(items.items())}
    roots: list[_Node] = []
    for node in sorted(nodes.values(), key=_sort_key):
        parent = node.entry.parent if node.entry else None
        (nodes[parent].children if parent in nodes else roots).append(node)
    for node in nodes.values():
        node.children.sort(key=_sort_key)
    roots.sort(key=_sort_key)
    return roots, notes


def _sort_key(node: _Node) -> tuple[int, str]:
    """Cost centers by code; the unknown ones by name after them; requests without one last."""
    if node.name == NO_COST_CENTER:
        return (2, "")
    return (0, node.entry.code) if node.entry else (1, node.name)


def _emit(node: _Node, share: Decimal, before: Decimal, group_by: GroupBy,
          budgets: Mapping[tuple[str, str | None], BudgetFigure], path: tuple[str, ...],
          rows: list[ChargebackRow]) -> None:
    code = node.entry.code if node.entry else ""
    here = (*path, code or node.name)
    name = (node.entry.displayName or node.name) if node.entry else node.name
    note = "" if node.entry or node.name == NO_COST_CENTER else "not in the policies"
    items = list(node.items.items()) if group_by is not GroupBy.COST_CENTER else \
        [("", (node.items.get("", (UsageTotals(), UsageTotals()))))]
    current_parts = [pair[0].cost for _, pair in items] + [child.subtree().cost for child in node.children]
    previous_parts = [pair[1].cost for _, pair in items] + [child.subtree(True).cost for child in node.children]
    split, split_before = allocate(share, current_parts), allocate(before, previous_parts)
    direct = group_by is GroupBy.COST_CENTER and bool(node.children)
    for index, (item, (now, then)) in enumerate(items):
        is_item = group_by is not GroupBy.COST_CENTER
        rows.append(ChargebackRow(
            kind=RowKind.ITEM if is_item else RowKind.COST_CENTER, code=code, cost_center=node.name, name=name,
            path=PATH_SEPARATOR.join(here), depth=len(path), item=item if is_item else None, totals=now,
            cost=split[index], previous=split_before[index], previous_exact=then.cost,
            budget=budgets.get((node.name, item if is_item else None)) if is_item or not direct else None,
            note="; ".join(filter(None, [note, "own spend, without the cost centers below" if direct else ""]))))
    for offset, child in enumerate(node.children, start=len(items)):
        _emit(child, split[offset], split_before[offset], group_by, budgets, here, rows)
    if node.children or group_by is not GroupBy.COST_CENTER:
        rows.append(ChargebackRow(
            kind=RowKind.SUBTOTAL, code=code, cost_center=node.name, name=name, path=PATH_SEPARATOR.join(here),
            depth=len(path), item=None, totals=node.subtree(), cost=share, previous=before,
            previous_exact=node.subtree(previous=True).cost,
            budget=budgets.get((node.name, None)) if direct or group_by is not GroupBy.COST_CENTER else None,
            note=note))


def subtree_names(cost_centers: Sequence[CostCenterEntry], root: str) -> set[str]:
    """`root` and every cost center below it: what a CostCenter budget on `root` covers."""
    return {root} | {entry.name for entry in cost_centers if root in entry.ancestors}


# The budget scope whose monthly budgets a grouping shows: a CostCenter budget on a cost center's
# row, a Developer or Repository budget on that developer's or repository's row.
BUDGET_SCOPES: Final = {GroupBy.COST_CENTER: ScopeKind.COST_CENTER, GroupBy.DEVELOPER: ScopeKind.DEVELOPER,
                        GroupBy.REPOSITORY: ScopeKind.REPOSITORY}


def monthly_budgets(group_by: GroupBy, budgets: Sequence[BudgetEntry]) -> list[BudgetEntry]:
    """The budgets a chargeback of `group_by` shows: monthly ones of the matching scope (a day's or a
    week's limit has no place in a month's table)."""
    scope = BUDGET_SCOPES.get(group_by)
    return [budget for budget in budgets if budget.window.period is Period.MONTHLY and budget.scope.kind is scope]


def window_of(budget: BudgetEntry, period: Month) -> Window:
    """The budget's window for the month `period` names, in the budget's own time zone."""
    return window_by_id(Period.MONTHLY, budget.window.timeZone, str(period))


def budget_figures(period: Month, group_by: GroupBy, budgets: Sequence[BudgetEntry],
                   cost_centers: Sequence[CostCenterEntry], window_usage: Mapping[str, Sequence[UsageRow]]
                   ) -> dict[tuple[str, str | None], BudgetFigure]:
    """Each shown budget's limit and its spend in its own window; `window_usage` per time zone, keyed by
    (cost center,) for CostCenter budgets or (cost center, developer or repository) otherwise.
    Where several budgets share a row, the one with the smallest limit (the one that binds) is shown."""
    figures: dict[tuple[str, str | None], BudgetFigure] = {}
    for budget in sorted(monthly_budgets(group_by, budgets), key=lambda b: (Decimal(b.limitUSD), b.id)):
        covered = subtree_names(cost_centers, budget.costCenter)
        item = budget.scope.name if budget.scope.kind is not ScopeKind.COST_CENTER else None
        spent = total(row.totals for row in window_usage.get(budget.window.timeZone, ())
                      if row.key[0] in covered and (item is None or row.key[1] == item)).cost
        window = window_of(budget, period)
        basis = (f"monthly {window.id} in {budget.window.timeZone}: "
                 f"{rfc3339(window.start)} to {rfc3339(window.end)}")
        key = (budget.costCenter, item)
        known = figures.get(key)
        if known is None:
            figures[key] = BudgetFigure((budget.id,), Decimal(budget.limitUSD), spent, basis)
        else:
            figures[key] = BudgetFigure((*known.budgets, budget.id), known.limit, known.spent, known.basis)
    return figures
