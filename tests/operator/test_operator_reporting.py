"""The operator says when a Budget is enforced by no reporting proxy, and when a proxy's reports stop
arriving while its spend counts in a current window: a condition on the Budget, a log line once per
change, and a metric."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from operator_harness import Api, FakeProxy, ManualClock, OperatorThread, budget, cost_center, manifests

from cluster.controlplane import ControlPlane
from cluster.polling import eventually

pytestmark = pytest.mark.cluster

WINDOW = "2026-11-24"


def reporting(api: Api, namespace: str, reason: str) -> dict[str, Any] | None:
    conditions = api.status("Budget", "team", namespace).get("conditions") or []
    found = next((c for c in conditions if c["type"] == "Reporting"), None)
    return found if found is not None and found["reason"] == reason else None


def sample(operator: OperatorThread, name: str) -> float | None:
    return operator.metrics.registry.get_sample_value(name)


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


def test_no_reporting_proxy_then_reporting_then_silent_then_stopped(
        control_plane: ControlPlane, api: Api, clock: ManualClock, run_id: str, operator_namespace: str,
        policy_namespace: str, start_operator: type[OperatorThread], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spendgate.operator.reconciler")
    operator = start_operator(report_timeout=timedelta(seconds=60))
    control_plane.apply(manifests(cost_center(f"team-{run_id}", run_id),
                                  budget("team", policy_namespace, f"team-{run_id}", limit="100.00")))

    # No proxy reports at all: the budget is enforced by no reporting proxy.
    nobody = eventually(lambda: reporting(api, policy_namespace, "NoReportingProxy"), what="NoReportingProxy")
    assert nobody["status"] == "False" and "no proxy has reported spend in the last 60s" in nobody["message"]
    assert sample(operator, "spendgate_operator_reporting_proxies") == 0

    # A proxy reports: fine.
    proxy = FakeProxy(control_plane, operator_namespace, "proxy-a")
    proxy.spend(f"{policy_namespace}/team", WINDOW, "1.25")
    proxy.report(clock.now())
    fine = eventually(lambda: reporting(api, policy_namespace, "ProxiesReporting"), what="ProxiesReporting")
    assert fine["status"] == "True"
    assert sample(operator, "spendgate_operator_reporting_proxies") == 1

    # A minute without a report and without a clean stop, while its spend counts in this window.
    clock.advance(timedelta(seconds=61))
    stopped = eventually(lambda: reporting(api, policy_namespace, "ReportsStopped"), what="ReportsStopped")
    assert "proxy-a (last report 2026-11-24T12:00:00Z)" in stopped["message"]
    assert sample(operator, "spendgate_operator_silent_proxies") == 1

    # It reports again; then it stops cleanly: an expected silence, but now nobody reports.
    proxy.spend(f"{policy_namespace}/team", WINDOW, "0.25")
    proxy.report(clock.now())
    eventually(lambda: reporting(api, policy_namespace, "ProxiesReporting"), what="ProxiesReporting again")
    assert sample(operator, "spendgate_operator_silent_proxies") == 0
    proxy.state.stop()
    proxy.report(clock.now())
    eventually(lambda: reporting(api, policy_namespace, "NoReportingProxy"), what="NoReportingProxy after the stop")
    assert sample(operator, "spendgate_operator_silent_proxies") == 0

    # Once per change: at the start, when the only proxy went silent, and after its clean stop.
    assert len(warnings(caplog, "no proxy has reported spend")) == 3
    assert len(warnings(caplog, "proxy proxy-a (SpendReport")) == 1
    assert api.status("Budget", "team", policy_namespace)["spentUSD"] == "1.5"
