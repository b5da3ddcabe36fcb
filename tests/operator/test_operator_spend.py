"""Spend reports into Budget.status: exact totals whatever the proxies do."""

from __future__ import annotations

import pytest
from operator_harness import (
    Api,
    FakeProxy,
    ManualClock,
    OperatorThread,
    budget,
    cost_center,
    manifests,
)

from cluster.controlplane import ControlPlane
from cluster.polling import eventually
from spendgate.adapters.reporter import SequenceConflict

pytestmark = pytest.mark.cluster

WINDOW = "2026-11-24"  # the clock starts at 2026-11-24 12:00 UTC; Berlin is on the same day


@pytest.fixture
def team_budget(control_plane: ControlPlane, run_id: str, policy_namespace: str,
                start_operator: type[OperatorThread]) -> str:
    start_operator()
    control_plane.apply(manifests(cost_center(f"team-{run_id}", run_id),
                                  budget("team", policy_namespace, f"team-{run_id}", limit="100.00")))
    return f"{policy_namespace}/team"


def spent(api: Api, budget_ref: str) -> str | None:
    namespace, name = budget_ref.split("/")
    return api.status("Budget", name, namespace).get("spentUSD")


def test_reports_from_several_proxies_add_up_exactly(control_plane: ControlPlane, api: Api, clock: ManualClock,
                                                     operator_namespace: str, team_budget: str) -> None:
    first, second = (FakeProxy(control_plane, operator_namespace, name) for name in ("proxy-a", "proxy-b"))
    first.spend(team_budget, WINDOW, "1.10")
    first.spend(team_budget, WINDOW, "0.000000015")
    second.spend(team_budget, WINDOW, "2.25")
    first.report(clock.now())
    second.report(clock.now())
    first.spend(team_budget, WINDOW, "0.65", requests=3)
    first.report(clock.now())

    eventually(lambda: spent(api, team_budget) == "4.000000015", what="the exact sum in status")
    namespace, name = team_budget.split("/")
    status = api.status("Budget", name, namespace)
    assert (status["reportingProxies"], status["percentUsed"], status["remainingUSD"]) == (2, "4.0%", "95.999999985")
    assert status["lastReportTime"] == "2026-11-24T12:00:00Z"


def test_duplicated_and_reordered_reports_count_nothing(control_plane: ControlPlane, api: Api, clock: ManualClock,
                                                        operator_namespace: str, team_budget: str) -> None:
    proxy = FakeProxy(control_plane, operator_namespace, "proxy-a")
    proxy.spend(team_budget, WINDOW, "1.00")
    proxy.report(clock.now())
    first = proxy.state.next_report(clock.now()).model_copy(update={"sequence": 1})
    proxy.spend(team_budget, WINDOW, "2.00")
    proxy.report(clock.now())
    second = proxy.state.next_report(clock.now()).model_copy(update={"sequence": 2})

    with pytest.raises(SequenceConflict):
        proxy.send(0, first)  # the first report, delivered late
    with pytest.raises(SequenceConflict):
        proxy.send(1, second)  # the second report, retried after it had succeeded
    # A copy of an older report of the same proxy under another object name is superseded, not added.
    copy = FakeProxy(control_plane, operator_namespace, "proxy-a-copy")
    copy.state.proxy = "proxy-a"
    copy.spend(team_budget, WINDOW, "1.00")
    copy.report(clock.now())

    eventually(lambda: spent(api, team_budget) == "3", what="the total of the newest report")
    assert api.get("SpendReport", "proxy-a", operator_namespace)["spec"]["sequence"] == 2


def test_a_restarted_proxy_continues_from_its_report(control_plane: ControlPlane, api: Api, clock: ManualClock,
                                                     operator_namespace: str, team_budget: str) -> None:
    before = FakeProxy(control_plane, operator_namespace, "proxy-a")
    before.spend(team_budget, WINDOW, "2.50")
    before.report(clock.now())
    eventually(lambda: spent(api, team_budget) == "2.5", what="the first report in status")

    after = FakeProxy(control_plane, operator_namespace, "proxy-a")  # same pod name, empty memory
    after.resume()
    after.spend(team_budget, WINDOW, "0.50")
    after.report(clock.now())

    eventually(lambda: spent(api, team_budget) == "3", what="the resumed total in status")
    assert after.state.sequence == 2


def test_a_restarted_proxy_with_unreported_journal_spend_reports_the_larger_total(
        control_plane: ControlPlane, api: Api, clock: ManualClock, operator_namespace: str, team_budget: str) -> None:
    before = FakeProxy(control_plane, operator_namespace, "proxy-a")
    before.spend(team_budget, WINDOW, "2.50")
    before.report(clock.now())

    after = FakeProxy(control_plane, operator_namespace, "proxy-a")
    after.spend(team_budget, WINDOW, "4.00")  # replayed from its journal: more than it had reported
    after.resume()
    after.report(clock.now())

    eventually(lambda: spent(api, team_budget) == "4", what="the journal's total in status")
