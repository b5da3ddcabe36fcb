"""Restarts converge from the API, stale reports are cleaned up, metrics are exposed."""

from __future__ import annotations

import socket
import urllib.request
from datetime import timedelta

import pytest
from operator_harness import Api, FakeProxy, ManualClock, OperatorThread, budget, cost_center, manifests

from cluster.controlplane import ControlPlane
from cluster.polling import eventually
from spendgate.policy import bundlemap
from spendgate.policy.bundle import loads

pytestmark = pytest.mark.cluster

WINDOW = "2026-11-24"


def limits_in_bundle(api: Api, namespace: str) -> dict[str, str]:
    configmap = api.configmap(namespace, bundlemap.NAME)
    document = bundlemap.document(configmap) if configmap else None
    return {b.id: b.limitUSD for b in loads(document).bundle.budgets} if document else {}


def test_a_restarted_operator_converges_from_the_api_and_loses_no_spend(
        control_plane: ControlPlane, api: Api, clock: ManualClock, run_id: str, operator_namespace: str,
        policy_namespace: str, start_operator: type[OperatorThread]) -> None:
    first = start_operator()
    cc = f"team-{run_id}"
    control_plane.apply(manifests(cost_center(cc, run_id), budget("kept", policy_namespace, cc),
                                  budget("dropped", policy_namespace, cc)))
    proxy = FakeProxy(control_plane, operator_namespace, "proxy-a")
    proxy.spend(f"{policy_namespace}/kept", WINDOW, "3.00")
    proxy.report(clock.now())
    eventually(lambda: api.status("Budget", "kept", policy_namespace).get("spentUSD") == "3", what="3.00")
    first.stop()

    # While no operator runs: more spend, an edit, a delete.
    proxy.spend(f"{policy_namespace}/kept", WINDOW, "2.25")
    proxy.report(clock.now())
    control_plane.apply(manifests(budget("kept", policy_namespace, cc, limit="50.00")))
    control_plane.kubectl("delete", "budget", "dropped", "-n", policy_namespace)
    start_operator()

    limits = eventually(lambda: (found := limits_in_bundle(api, operator_namespace)) and len(found) == 1 and
                        found.get(f"{policy_namespace}/kept") == "50.00" and found, what="the converged bundle")
    status = eventually(lambda: (s := api.status("Budget", "kept", policy_namespace)).get("spentUSD") == "5.25" and s,
                        what="the spend reported while the operator was down")
    assert limits == {f"{policy_namespace}/kept": "50.00"}
    assert (status["percentUsed"], status["observedGeneration"]) == ("10.5%", 2)


def test_a_gone_proxys_report_is_deleted_once_its_windows_are_history(
        control_plane: ControlPlane, api: Api, clock: ManualClock, run_id: str, operator_namespace: str,
        policy_namespace: str, start_operator: type[OperatorThread]) -> None:
    start_operator()
    control_plane.apply(manifests(cost_center(f"team-{run_id}", run_id),
                                  budget("team", policy_namespace, f"team-{run_id}")))
    gone, alive = (FakeProxy(control_plane, operator_namespace, name) for name in ("gone", "alive"))
    gone.spend(f"{policy_namespace}/team", WINDOW, "7.00")
    gone.report(clock.now())
    eventually(lambda: api.status("Budget", "team", policy_namespace).get("spentUSD") == "7", what="7.00")

    clock.advance(timedelta(days=2))
    alive.spend(f"{policy_namespace}/team", "2026-11-26", "1.00")
    alive.report(clock.now())

    eventually(lambda: api.get("SpendReport", "gone", operator_namespace) is None, what="the stale report deleted")
    status = api.status("Budget", "team", policy_namespace)
    assert api.get("SpendReport", "alive", operator_namespace) is not None
    assert [(h["window"], h["spentUSD"]) for h in status["history"]] == [(WINDOW, "7")]


def test_metrics_expose_reconciles_and_budget_spend_and_state(
        control_plane: ControlPlane, clock: ManualClock, run_id: str, operator_namespace: str, policy_namespace: str,
        start_operator: type[OperatorThread]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start_operator(metrics_port=port)
    control_plane.apply(manifests(cost_center(f"team-{run_id}", run_id),
                                  budget("team", policy_namespace, f"team-{run_id}", limit="10.00")))
    proxy = FakeProxy(control_plane, operator_namespace, "proxy-a")
    proxy.spend(f"{policy_namespace}/team", WINDOW, "8.25")
    proxy.report(clock.now())
    labels = f'budget="team",cost_center="team-{run_id}",namespace="{policy_namespace}"'

    def scraped() -> str | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text: str = reply.read().decode()
        return text if f"spendgate_budget_spent_usd{{{labels}}} 8.25" in text else None

    text = eventually(scraped, what="the spend gauge")
    assert f'spendgate_budget_state{{{labels},state="Alert"}} 1.0' in text
    assert f"spendgate_budget_used_ratio{{{labels}}} 0.825" in text
    assert 'spendgate_operator_reconcile_total{phase="compile",result="ok"}' in text
    assert "spendgate_operator_reconcile_seconds_bucket" in text
    assert "spendgate_operator_synced 1.0" in text
