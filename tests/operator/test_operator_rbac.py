"""The operator works with exactly the RBAC of the Helm chart, and nothing more."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    Api,
    FakeProxy,
    ManualClock,
    OperatorThread,
    WebhookReceiver,
    budget,
    cost_center,
    manifests,
)

from cluster.controlplane import ControlPlane
from cluster.helm import rbac_only, render
from cluster.polling import eventually
from spendgate.adapters.keysecrets import LABEL
from spendgate.policy import bundlemap

pytestmark = pytest.mark.cluster

def service_account_kubeconfig(control_plane: ControlPlane, namespace: str, path: Path) -> Path:
    token = control_plane.kubectl("create", "token", "spendgate-operator", "-n", namespace).stdout.strip()
    kubeconfig: dict[str, Any] = json.loads(control_plane.kubeconfig.read_text())
    kubeconfig["users"][0]["user"] = {"token": token}
    path.write_text(json.dumps(kubeconfig))
    return path


def test_the_charts_rbac_is_enough(control_plane: ControlPlane, api: Api, clock: ManualClock, run_id: str,
                                       operator_namespace: str, policy_namespace: str, receiver: WebhookReceiver,
                                       tmp_path: Path, start_operator: type[OperatorThread]) -> None:
    sidecars = f"sg-team-{run_id}"
    control_plane.kubectl("create", "namespace", sidecars)
    control_plane.apply(rbac_only(render(operator_namespace, f"operator.policyNamespaces={{{policy_namespace}}}",
                                         f"operator.bundleNamespaces={{{sidecars}}}", release=f"rbac-{run_id}")))
    kubeconfig = service_account_kubeconfig(control_plane, operator_namespace, tmp_path / "kubeconfig")
    api.create_secret(operator_namespace, "hook", {"url": receiver.url("/hook")})
    api.create_secret(operator_namespace, "alice-key", {"key": "sk-sg-a", "developer": "alice",
                                                        "costCenter": f"team-{run_id}"}, {LABEL: "true"})
    targets = ({"name": "oncall", "type": "Webhook", "secretRef": {"namespace": operator_namespace, "name": "hook"}},)
    control_plane.apply(manifests(cost_center(f"team-{run_id}", run_id, targets=targets),
                                  cost_center(f"orphan-{run_id}", run_id, parent=f"missing-{run_id}"),
                                  budget("team", policy_namespace, f"team-{run_id}", limit="10.00")))

    start_operator(kubeconfig=kubeconfig, bundle_namespaces=(sidecars,))
    proxy = FakeProxy(control_plane, operator_namespace, "proxy-a")
    proxy.spend(f"{policy_namespace}/team", "2026-11-24", "9.00")
    proxy.report(clock.now())

    eventually(lambda: api.configmap(sidecars, bundlemap.NAME), what="the sidecar namespace's bundle")
    eventually(lambda: receiver.at("/hook"), what="the alert, through the alert Secret")
    orphan = eventually(lambda: api.status("CostCenter", f"orphan-{run_id}").get("conditions"), what="CC status")
    events = eventually(lambda: api.events("default", f"orphan-{run_id}"), what="the CostCenter's Event")
    bundle = bundlemap.document(api.configmap(operator_namespace, bundlemap.NAME) or {}) or b""

    assert orphan[0]["reason"] == "UnknownParent" and events[0]["reason"] == "UnknownParent"
    assert b"alice-key" in bundle
    # Two cost centers and a budget appeared, at least: the AuditLog's status counts them as its writer
    # catches up (it may exist with fewer first), so wait for the count, not for the object.
    def audited() -> int:
        found = api.get("AuditLog", "spendgate", operator_namespace) or {}
        return int(found.get("status", {}).get("records", 0))

    assert eventually(lambda: audited() >= 3 and audited(), what="three audit records") >= 3
