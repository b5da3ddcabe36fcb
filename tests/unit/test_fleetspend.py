"""Where the fleet's spend of each budget is published (spendgate.logic.fleetspend): the operator and
every proxy compute the same shards from the same bundle, whatever order its budgets come in."""

from __future__ import annotations

import re
from decimal import Decimal
from math import ceil
from random import Random

from hypothesis import given
from hypothesis import strategies as st

from spendgate.api.v1alpha1 import Enforcement, FleetSpendEntry, FleetSpendSpec, Period
from spendgate.logic import fleetspend
from spendgate.policy.bundle import BudgetEntry, ScopeEntry, ThresholdEntry, WindowEntry

LABEL_VALUE = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)


def entry(budget_id: str, cost_center: str) -> BudgetEntry:
    return BudgetEntry(id=budget_id, costCenter=cost_center, scope=ScopeEntry(kind="CostCenter"), limitUSD="10",
                       window=WindowEntry(period=Period.DAILY, timeZone="UTC"),
                       thresholds=ThresholdEntry(alertPercent=80, downgradePercent=95, pausePercent=110),
                       enforcement=Enforcement.ENFORCE)


BUDGETS = st.lists(st.tuples(st.sampled_from(["ns-a", "ns-b"]), NAMES, st.sampled_from(["ml", "web", "data"])),
                   unique_by=lambda b: (b[0], b[1]), max_size=120).map(
    lambda found: [entry(f"{ns}/{name}", center) for ns, name, center in found])


@given(BUDGETS, st.randoms())
def test_every_budget_has_one_shard_of_its_namespace_and_cost_center_in_any_order(
        budgets: list[BudgetEntry], random: Random) -> None:
    placed = fleetspend.shards(budgets)
    shuffled = list(budgets)
    random.shuffle(shuffled)

    assert fleetspend.shards(shuffled) == placed  # the operator and the proxies agree
    assert placed.keys() == {budget.id for budget in budgets}
    for budget in budgets:
        shard = placed[budget.id]
        assert shard.namespace == budget.id.partition("/")[0] and shard.cost_center == budget.costCenter
        assert shard.name.startswith(f"{budget.costCenter}.") and LABEL_VALUE.fullmatch(shard.name)
    per_center = {(b.id.partition("/")[0], b.costCenter) for b in budgets}
    shards_of: dict[tuple[str, str], set[str]] = {(s.namespace, s.cost_center): set() for s in placed.values()}
    for shard in placed.values():
        shards_of[(shard.namespace, shard.cost_center)].add(shard.name)
    for group in per_center:
        members = sum(1 for b in budgets if (b.id.partition("/")[0], b.costCenter) == group)
        assert len(shards_of[group]) <= ceil(members / fleetspend.SHARD_BUDGETS)


@given(BUDGETS, NAMES)
def test_a_new_budget_moves_no_other_unless_its_cost_center_needs_another_shard(
        budgets: list[BudgetEntry], name: str) -> None:
    added = entry(f"ns-a/new-{name}", "ml")
    before, after = fleetspend.shards(budgets), fleetspend.shards([*budgets, added])
    members = sum(1 for b in budgets if b.id.startswith("ns-a/") and b.costCenter == "ml")
    same_count = ceil(members / fleetspend.SHARD_BUDGETS) == ceil((members + 1) / fleetspend.SHARD_BUDGETS)

    if same_count:
        assert {k: v for k, v in after.items() if k != added.id} == before


def test_a_cost_center_too_long_for_a_label_value_goes_by_a_digest() -> None:
    long = "c" * 62
    name = fleetspend.shard_name(long, 3)

    assert name.startswith("cc-") and name.endswith(".3") and len(name) <= fleetspend.LABEL_VALUE_LENGTH
    assert name == fleetspend.shard_name(long, 3) != fleetspend.shard_name(long + "d", 3)
    assert fleetspend.shard_name("ml", 0) == "ml.0"


def test_a_proxy_follows_the_shards_of_the_budgets_it_charges_per_namespace_and_selects_them_by_label() -> None:
    placed = fleetspend.shards([entry("ns-a/x", "ml"), entry("ns-a/y", "web"), entry("ns-b/z", "ml")])

    following = fleetspend.to_follow(["ns-a/x", "ns-b/z", "ns-a/gone"], placed)  # gone: not in the bundle

    assert following == {"ns-a": frozenset({"ml.0"}), "ns-b": frozenset({"ml.0"})}
    assert fleetspend.selector({"web.0", "ml.0"}) == "spendgate.io/fleet-spend in (ml.0,web.0)"


def test_a_shards_figures_name_their_budgets_by_id_in_exact_decimals() -> None:
    spec = FleetSpendSpec(costCenter="ml", budgets=[FleetSpendEntry(budget="x", window="2026-12-04",
                                                                    spentUSD="1.000000015")])

    assert fleetspend.figures("ns-a", spec) == [fleetspend.Figure("ns-a/x", "2026-12-04", Decimal("1.000000015"))]
