"""FleetSpend shards: the fleet's spend the proxies enforce on, published by the operator, exact
whatever the proxies and the operator do (docs/fleet.md)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from operator_harness import Api, FakeProxy, ManualClock, OperatorThread, budget, cost_center, manifests

from cluster.controlplane import ControlPlane
from cluster.polling import eventually
from spendgate.adapters.reporter import SequenceConflict
from spendgate.logic import fleetspend

pytestmark = pytest.mark.cluster

WINDOW = "2026-11-24"  # the clock starts at 2026-11-24 12:00 UTC; Berlin is on the same day


def figures(api: Api, namespace: str, shard: str) -> dict[str, tuple[str, Decimal]]:
    """budget name -> (window, spend) as the shard holds them; empty while there is no shard."""
    found = api.get("FleetSpend", shard, namespace)
    entries = found["spec"]["budgets"] if found else []
    return {entry["budget"]: (entry["window"], Decimal(entry["spentUSD"])) for entry in entries}


def shard(api: Api, namespace: str, name: str) -> dict[str, Any]:
    found = api.get("FleetSpend", name, namespace)
    assert found is not None, f"FleetSpend {namespace}/{name}"
    return found


@pytest.fixture
def team(control_plane: ControlPlane, run_id: str, policy_namespace: str) -> str:
    """A cost center with two budgets: one shard, `<cost center>.0`."""
    center = f"team-{run_id}"
    control_plane.apply(manifests(cost_center(center, run_id), budget("alpha", policy_namespace, center),
                                  budget("beta", policy_namespace, center)))
    return center


def test_the_shard_holds_the_exact_sum_of_every_proxys_newest_report_and_how_fresh_it_is(
        control_plane: ControlPlane, api: Api, clock: ManualClock, operator_namespace: str, policy_namespace: str,
        team: str, start_operator: type[OperatorThread]) -> None:
    start_operator()
    name = fleetspend.shard_name(team, 0)
    eventually(lambda: set(figures(api, policy_namespace, name)) == {"alpha", "beta"}, what="the shard, written")
    first, second = (FakeProxy(control_plane, operator_namespace, proxy) for proxy in ("proxy-a", "proxy-b"))
    first.spend(f"{policy_namespace}/alpha", WINDOW, "1.10")
    first.spend(f"{policy_namespace}/alpha", WINDOW, "0.000000015")
    second.spend(f"{policy_namespace}/alpha", WINDOW, "2.25")
    second.spend(f"{policy_namespace}/beta", WINDOW, "0.40")
    first.report(clock.now())
    second.report(clock.now())

    eventually(lambda: figures(api, policy_namespace, name) == {
        "alpha": (WINDOW, Decimal("3.350000015")), "beta": (WINDOW, Decimal("0.4"))}, what="the exact sums")
    written = shard(api, policy_namespace, name)
    assert written["metadata"]["labels"][fleetspend.SHARD_LABEL] == name  # what the proxies select
    assert written["spec"]["costCenter"] == team
    assert written["spec"]["asOf"] == "2026-11-24T12:00:00Z"  # the newest report folded in
    assert written["spec"]["reportIntervalSeconds"] == 1  # two proxies: once a second


def test_duplicated_and_reordered_reports_and_a_restarted_operator_change_no_figure(
        control_plane: ControlPlane, api: Api, clock: ManualClock, operator_namespace: str, policy_namespace: str,
        team: str, start_operator: type[OperatorThread]) -> None:
    operator = start_operator()
    name = fleetspend.shard_name(team, 0)
    proxy = FakeProxy(control_plane, operator_namespace, "proxy-a")
    proxy.spend(f"{policy_namespace}/alpha", WINDOW, "1.00")
    proxy.report(clock.now())
    first = proxy.state.next_report(clock.now()).model_copy(update={"sequence": 1})
    proxy.spend(f"{policy_namespace}/alpha", WINDOW, "2.00")
    proxy.report(clock.now())
    with pytest.raises(SequenceConflict):
        proxy.send(0, first)  # the first report, delivered late
    copy = FakeProxy(control_plane, operator_namespace, "proxy-a-copy")  # an older copy under another name
    copy.state.proxy = "proxy-a"
    copy.spend(f"{policy_namespace}/alpha", WINDOW, "1.00")
    copy.report(clock.now())
    eventually(lambda: figures(api, policy_namespace, name).get("alpha") == (WINDOW, Decimal(3)), what="3.00")
    operator.stop()

    proxy.spend(f"{policy_namespace}/alpha", WINDOW, "0.25")  # reported while no operator runs
    proxy.report(clock.now())
    start_operator()

    eventually(lambda: figures(api, policy_namespace, name).get("alpha") == (WINDOW, Decimal("3.25")),
               what="the spend reported while the operator was down")
    eventually(lambda: api.status("Budget", "alpha", policy_namespace).get("spentUSD") == "3.25", what="status")


def test_a_figure_someone_else_lowered_is_restored_and_a_shard_of_no_budget_is_deleted(
        control_plane: ControlPlane, api: Api, clock: ManualClock, operator_namespace: str, policy_namespace: str,
        team: str, start_operator: type[OperatorThread]) -> None:
    start_operator()
    name = fleetspend.shard_name(team, 0)
    proxy = FakeProxy(control_plane, operator_namespace, "proxy-a")
    proxy.spend(f"{policy_namespace}/beta", WINDOW, "4.50")
    proxy.report(clock.now())
    eventually(lambda: figures(api, policy_namespace, name).get("beta") == (WINDOW, Decimal("4.5")), what="4.50")

    lowered = shard(api, policy_namespace, name)
    lowered["spec"]["budgets"] = [{**entry, "spentUSD": "0"} for entry in lowered["spec"]["budgets"]]
    api.custom.replace_namespaced_custom_object("spendgate.io", "v1alpha1", policy_namespace, "fleetspends", name,
                                                lowered)
    eventually(lambda: figures(api, policy_namespace, name).get("beta") == (WINDOW, Decimal("4.5")),
               what="the figure restored")

    control_plane.kubectl("delete", "budget", "alpha", "beta", "-n", policy_namespace)
    eventually(lambda: api.get("FleetSpend", name, policy_namespace) is None, what="the shard of no budget deleted")


def test_a_large_fleet_is_asked_to_report_less_often(
        control_plane: ControlPlane, api: Api, clock: ManualClock, operator_namespace: str, policy_namespace: str,
        team: str, start_operator: type[OperatorThread]) -> None:
    start_operator(report_writes_per_second=2.0)  # a fleet of 5 proxies then writes 2.5 s apart each
    name = fleetspend.shard_name(team, 0)
    for number in range(5):
        proxy = FakeProxy(control_plane, operator_namespace, f"proxy-{number}")
        proxy.spend(f"{policy_namespace}/alpha", WINDOW, "0.01")
        assert proxy.report(clock.now())

    eventually(lambda: ((api.get("FleetSpend", name, policy_namespace) or {}).get("spec") or {}).get(
        "reportIntervalSeconds") == 2.5, what="reportIntervalSeconds 2.5")
