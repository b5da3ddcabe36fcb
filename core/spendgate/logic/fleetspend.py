"""Where the fleet's spend of each budget is published, and what a proxy follows. Pure.

The operator folds every proxy's SpendReport into one total per (budget, window) and publishes the
totals in FleetSpend objects: one per shard of a cost center's budgets in a namespace, each shard at
most about SHARD_BUDGETS budgets, so an object stays a few KB however large the cost center. A proxy
follows, with one watch per namespace and a label selector, only the shards of the budgets it has
spend on or in flight, and so receives a few small events a second whatever the size of the fleet
(docs/fleet.md has the reasoning and the figures).

A budget's shard is a pure function of the bundle's budgets, so the operator (from the bundle it
compiles) and every proxy (from the bundle it loaded) agree without telling each other: the
budgets of one (namespace, cost center), split by a stable hash of their names into
ceil(count / SHARD_BUDGETS) shards. Adding a budget moves no other budget, unless the count crosses a
multiple of SHARD_BUDGETS.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from hashlib import sha256
from math import ceil
from typing import Final

from spendgate.api.v1alpha1 import FleetSpendSpec
from spendgate.policy.bundle import BudgetEntry

SHARD_BUDGETS: Final = 32
SHARD_LABEL: Final = "spendgate.io/fleet-spend"
LABEL_VALUE_LENGTH: Final = 63  # a label value (and so a shard's name) is at most this long


@dataclass(frozen=True, slots=True)
class Shard:
    namespace: str
    name: str  # the FleetSpend's name, also its label value
    cost_center: str


def shards(budgets: Iterable[BudgetEntry]) -> dict[str, Shard]:
    """budget id (namespace/name) -> its shard."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for budget in budgets:
        namespace, _, name = budget.id.partition("/")
        groups[(namespace, budget.costCenter)].append(name)
    placed = {}
    for (namespace, cost_center), names in groups.items():
        count = ceil(len(names) / SHARD_BUDGETS)
        for name in names:
            index = zlib.crc32(name.encode()) % count
            placed[f"{namespace}/{name}"] = Shard(namespace, shard_name(cost_center, index), cost_center)
    return placed


def shard_name(cost_center: str, index: int) -> str:
    """`<cost center>.<index>`; a cost center whose name would not fit a label value goes by a digest."""
    suffix = f".{index}"
    if len(cost_center) + len(suffix) <= LABEL_VALUE_LENGTH:
        return cost_center + suffix
    return "cc-" + sha256(cost_center.encode()).hexdigest()[:40] + suffix


def to_follow(budget_ids: Iterable[str], placed: Mapping[str, Shard]) -> dict[str, frozenset[str]]:
    """namespace -> the shards holding these budgets (budgets not in the bundle have none)."""
    following: dict[str, set[str]] = defaultdict(set)
    for budget_id in budget_ids:
        shard = placed.get(budget_id)
        if shard is not None:
            following[shard.namespace].add(shard.name)
    return {namespace: frozenset(names) for namespace, names in following.items()}


def selector(names: Iterable[str]) -> str:
    """The label selector of these shards (one namespace's)."""
    return f"{SHARD_LABEL} in ({','.join(sorted(names))})"


@dataclass(frozen=True, slots=True)
class Figure:
    budget_id: str
    window: str
    spent: Decimal


def figures(namespace: str, spec: FleetSpendSpec) -> list[Figure]:
    return [Figure(f"{namespace}/{entry.budget}", entry.window, Decimal(entry.spentUSD)) for entry in spec.budgets]
