"""Windows reset on time in the Budget's time zone, with the clock injected (no sleeping)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from operator_harness import Api, FakeProxy, ManualClock, OperatorThread, budget, cost_center, manifests

from cluster.controlplane import ControlPlane
from cluster.polling import eventually

pytestmark = pytest.mark.cluster


def test_a_day_ends_at_midnight_in_berlin_and_goes_into_history(
        control_plane: ControlPlane, api: Api, clock: ManualClock, run_id: str, operator_namespace: str,
        policy_namespace: str, start_operator: type[OperatorThread]) -> None:
    start_operator()
    control_plane.apply(manifests(cost_center(f"team-{run_id}", run_id),
                                  budget("daily", policy_namespace, f"team-{run_id}", limit="10.00")))
    ref = f"{policy_namespace}/daily"
    proxy = FakeProxy(control_plane, operator_namespace, "proxy-a")
    proxy.spend(ref, "2026-11-24", "4.00")
    proxy.report(clock.now())
    eventually(lambda: api.status("Budget", "daily", policy_namespace).get("spentUSD") == "4", what="spend")

    clock.set(datetime(2026, 11, 24, 23, 0, 1, tzinfo=UTC))  # 00:00:01 in Berlin
    status = eventually(lambda: (s := api.status("Budget", "daily", policy_namespace)).get("window") == "2026-11-25"
                        and s, what="the next window")
    proxy.spend(ref, "2026-11-24", "5.00")  # a late report for the closed window
    proxy.report(clock.now())
    history = eventually(lambda: (h := api.status("Budget", "daily", policy_namespace)["history"])[0]["spentUSD"] == "9"
                         and h, what="the late report in history")
    reset = eventually(lambda: [e for e in api.events(policy_namespace, "daily") if e["reason"] == "WindowReset"],
                       what="a WindowReset Event")

    assert (status["spentUSD"], status["state"], status["windowStart"], status["windowEnd"]) == (
        "0", "Ok", "2026-11-24T23:00:00Z", "2026-11-25T23:00:00Z")
    assert history == [{"window": "2026-11-24", "windowStart": "2026-11-23T23:00:00Z",
                        "windowEnd": "2026-11-24T23:00:00Z", "spentUSD": "9", "peakState": "Alert"}]
    assert "window 2026-11-24 closed at $4" in reset[0]["message"]


def test_the_day_daylight_saving_ends_in_new_york_lasts_25_hours(
        control_plane: ControlPlane, api: Api, clock: ManualClock, run_id: str, policy_namespace: str,
        start_operator: type[OperatorThread]) -> None:
    clock.set(datetime(2026, 11, 1, 3, 0, tzinfo=UTC))  # 23:00 EDT on Saturday, October 31
    start_operator()
    control_plane.apply(manifests(cost_center(f"team-{run_id}", run_id),
                                  budget("ny", policy_namespace, f"team-{run_id}", time_zone="America/New_York"),
                                  budget("monthly", policy_namespace, f"team-{run_id}", period="Monthly",
                                         time_zone="America/New_York")))
    before = eventually(lambda: api.status("Budget", "ny", policy_namespace).get("window"), what="a window")

    clock.set(datetime(2026, 11, 1, 4, 0, 1, tzinfo=UTC))  # 00:00:01 EDT on Sunday; at 2:00 clocks go back
    after = eventually(lambda: (s := api.status("Budget", "ny", policy_namespace)).get("window") == "2026-11-01"
                       and s, what="Sunday's window")
    month = eventually(lambda: (s := api.status("Budget", "monthly", policy_namespace)).get("window") == "2026-11"
                       and s, what="November")

    assert before == "2026-10-31"
    assert (after["windowStart"], after["windowEnd"]) == ("2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z")
    assert (month["windowStart"], month["windowEnd"]) == ("2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z")
