"""Budget, CostCenter and RoutingPolicy status as pure functions of their inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from spendgate.api import v1alpha1 as api
from spendgate.operator.budgetstatus import BudgetInputs, budget_status, next_change
from spendgate.operator.conditions import ready_condition, set_condition
from spendgate.operator.policystatus import BudgetSummary, cost_center_statuses, routing_policy_status
from spendgate.operator.reporting import reporters
from spendgate.operator.spendindex import SpendIndex
from spendgate.policy.errors import PolicyError

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(minutes=2)
REF = "team/daily"


def make_budget(limit: str = "10.00", time_zone: str = "Europe/Berlin", **annotations: str) -> api.Budget:
    return api.Budget.model_validate({
        "metadata": {"name": "daily", "namespace": "team", "generation": 3, "annotations": annotations},
        "spec": {"costCenter": "platform", "scope": {"kind": "Developer", "name": "alice"}, "limitUSD": limit,
                 "window": {"period": "Daily", "timeZone": time_zone}},
    })


def reports(*entries: tuple[str, str, str]) -> SpendIndex:
    index = SpendIndex()
    for number, (proxy, window, spent) in enumerate(entries):
        spec = api.SpendReportSpec(proxy=proxy, sequence=1, reportedAt=f"2026-11-24T11:{number:02d}:00Z",
                                   entries=[api.SpendEntry(budget=REF, window=window, spentUSD=spent)])
        index.put(f"system/{proxy}", spec)
    return index


def status_of(spend: SpendIndex, previous: api.BudgetStatus | None = None, now: datetime = NOW,
              errors: tuple[PolicyError, ...] = (), budget: api.Budget | None = None) -> api.BudgetStatus:
    known = reporters(spend.reports(), now, timedelta(seconds=60))
    inputs = BudgetInputs(budget or make_budget(), errors, previous or api.BudgetStatus(), now, TIMEOUT, known)
    return budget_status(inputs, spend)


def test_a_fresh_budget_shows_its_window_and_reported_spend() -> None:
    status = status_of(reports(("a", "2026-11-24", "1.25"), ("b", "2026-11-24", "2.5")))

    assert (status.spentUSD, status.remainingUSD, status.percentUsed, status.state) == (
        "3.75", "6.25", "37.5%", api.BudgetState.OK)
    assert (status.window, status.windowStart, status.windowEnd) == (
        "2026-11-24", "2026-11-23T23:00:00Z", "2026-11-24T23:00:00Z")
    assert (status.reportingProxies, status.lastReportTime, status.scope) == (2, "2026-11-24T11:01:00Z",
                                                                              "Developer/alice")
    assert (status.observedGeneration, status.conditions[0].reason) == (3, "Compiled")


def test_spend_never_goes_down_within_a_window() -> None:
    first = status_of(reports(("a", "2026-11-24", "5")))

    assert status_of(SpendIndex(), previous=first).spentUSD == "5"


def test_a_closed_window_moves_into_history_and_late_reports_raise_it() -> None:
    today = status_of(reports(("a", "2026-11-24", "9")))
    tomorrow = NOW + timedelta(days=1)

    rolled = status_of(reports(("a", "2026-11-24", "9")), previous=today, now=tomorrow)
    late = status_of(reports(("a", "2026-11-24", "11.5")), previous=rolled, now=tomorrow)
    pruned = status_of(SpendIndex(), previous=late, now=tomorrow)

    assert (rolled.window, rolled.spentUSD) == ("2026-11-25", "0")
    assert [(h.window, h.spentUSD, h.peakState) for h in rolled.history] == [("2026-11-24", "9", api.BudgetState.ALERT)]
    assert [(h.spentUSD, h.peakState) for h in late.history] == [("11.5", api.BudgetState.PAUSED)]
    assert pruned.history == late.history


def test_windows_the_operator_never_saw_as_current_still_reach_history() -> None:
    status = status_of(reports(("a", "2026-11-20", "1"), ("b", "2026-11-22", "2"), ("c", "2026-11-25", "7")))

    assert [(h.window, h.windowStart) for h in status.history] == [
        ("2026-11-22", "2026-11-21T23:00:00Z"), ("2026-11-20", "2026-11-19T23:00:00Z")]
    assert status.spentUSD == "0"  # a proxy whose clock runs ahead does not count early


def test_history_keeps_the_newest_twelve_windows() -> None:
    index = reports(*((f"proxy-{day}", f"2026-11-{day:02d}", "1") for day in range(1, 24)))

    assert [h.window for h in status_of(index).history][::11] == ["2026-11-23", "2026-11-12"]
    assert len(status_of(index).history) == 12


def test_a_bad_time_zone_leaves_no_window_and_an_error_claims_no_alert() -> None:
    zone_error = PolicyError("Budget", "team", "daily", "BadTimeZone", "spec.window.timeZone: unknown")
    bad_zone = status_of(SpendIndex(), budget=make_budget(time_zone="Mars/Olympus"), errors=(zone_error,))
    cost_center_error = PolicyError("Budget", "team", "daily", "UnknownCostCenter", "no such cost center")
    unclaimed = status_of(reports(("a", "2026-11-24", "20")), errors=(cost_center_error,))

    assert (bad_zone.window, bad_zone.spentUSD, bad_zone.conditions[0].reason) == (None, None, "BadTimeZone")
    assert unclaimed.state == api.BudgetState.PAUSED and unclaimed.alerts == []


def test_crossing_thresholds_claims_each_once_per_window() -> None:
    crossed = status_of(reports(("a", "2026-11-24", "9.6")))
    again = status_of(reports(("a", "2026-11-24", "9.7")), previous=crossed)

    assert [(r.threshold, r.outcome) for r in crossed.alerts] == [
        (api.BudgetState.DOWNGRADE, "Sending"), (api.BudgetState.ALERT, "Sending")]
    assert again.alerts == crossed.alerts
    assert next_change(crossed, TIMEOUT) == datetime(2026, 11, 24, 12, 2, 1, tzinfo=UTC)


def test_a_sending_record_left_by_a_dead_operator_turns_unknown_and_is_not_claimed_again() -> None:
    crossed = status_of(reports(("a", "2026-11-24", "8")))

    later = status_of(reports(("a", "2026-11-24", "8")), previous=crossed, now=NOW + TIMEOUT + timedelta(seconds=1))

    assert [r.outcome.split(":")[0] for r in later.alerts] == ["Unknown"]
    assert next_change(later, TIMEOUT) == datetime(2026, 11, 24, 23, 0, tzinfo=UTC)


def test_ready_keeps_its_transition_time_until_its_status_changes() -> None:
    earlier = [ready_condition((), 1, "Compiled", "ok", NOW)]
    same = set_condition(earlier, ready_condition((), 2, "Compiled", "ok", NOW + timedelta(hours=1)))
    error = PolicyError("Budget", "t", "b", "MissingRoutingPolicy", "spec.routingPolicyRef 'x' names nothing")
    changed = set_condition(same, ready_condition((error,), 2, "Compiled", "ok", NOW + timedelta(hours=2)))

    assert (same[0].lastTransitionTime, same[0].observedGeneration) == ("2026-11-24T12:00:00Z", 2)
    assert (changed[0].status, changed[0].reason, changed[0].lastTransitionTime) == (
        api.ConditionStatus.FALSE, "MissingRoutingPolicy", "2026-11-24T14:00:00Z")


def cost_center(name: str, parent: str | None = None) -> api.CostCenter:
    return api.CostCenter.model_validate({"metadata": {"name": name, "generation": 1},
                                          "spec": {"code": name.upper(), "parent": parent}})


def test_cost_centers_roll_up_their_team_budgets_or_else_their_children() -> None:
    centers = {c.metadata.name: c for c in (cost_center("eng"), cost_center("platform", "eng"),
                                            cost_center("data", "eng"), cost_center("infra"),
                                            cost_center("network", "infra"), cost_center("storage", "infra"))}
    budgets = [BudgetSummary("eng", True, Decimal("30")), BudgetSummary("eng", True, Decimal("4")),
               BudgetSummary("platform", True, Decimal("10.5")), BudgetSummary("platform", False, Decimal(99)),
               BudgetSummary("network", True, Decimal("2")), BudgetSummary("storage", True, Decimal("0.25")),
               BudgetSummary("data", True, None)]

    statuses = cost_center_statuses(centers, budgets, {}, {}, NOW)

    assert (statuses["eng"].spentUSD, statuses["eng"].budgets, statuses["eng"].children) == (
        "30", 5, ["data", "platform"])  # its monthly budget already counts platform's and data's requests
    assert (statuses["platform"].spentUSD, statuses["platform"].budgets) == ("10.5", 2)
    assert (statuses["infra"].spentUSD, statuses["data"].spentUSD) == ("2.25", "0")  # no team budget: the children
    assert statuses["eng"].conditions[0].message == "5 budgets, 2 child cost centers"


def test_a_cost_center_cycle_is_not_ready_and_does_not_recurse_forever() -> None:
    centers = {"a": cost_center("a", "b"), "b": cost_center("b", "a")}
    cycle = [PolicyError("CostCenter", None, "a", "HierarchyCycle", "spec.parent forms a cycle: a -> b -> a")]

    statuses = cost_center_statuses(centers, [BudgetSummary("a", True, Decimal(1))], {"a": cycle}, {}, NOW)

    assert statuses["a"].conditions[0].reason == "HierarchyCycle"
    assert sorted(statuses) == ["a", "b"]


def test_a_routing_policy_says_how_many_budgets_use_it() -> None:
    policy = api.RoutingPolicy.model_validate({"metadata": {"name": "p", "namespace": "t", "generation": 2},
                                               "spec": {"cascade": ["claude-opus-5-5"]}})

    status = routing_policy_status(policy, 3, api.RoutingPolicyStatus(), NOW)

    assert (status.observedGeneration, status.conditions[0].message) == (2, "used by 3 budgets")
