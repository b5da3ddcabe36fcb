"""Policies in, bundle ConfigMap out: apply, edit, delete, bad references."""

from __future__ import annotations

import json

import pytest
from operator_harness import TEST_LABEL, Api, OperatorThread, eventually

from cluster.controlplane import ControlPlane
from spendgate.operator import bundlemap
from spendgate.policy.bundle import loads

pytestmark = pytest.mark.cluster


def policies(run_id: str, namespace: str) -> str:
    return f"""
apiVersion: spendgate.io/v1alpha1
kind: CostCenter
metadata: {{name: eng-{run_id}, labels: {{{TEST_LABEL}: "{run_id}"}}}}
spec: {{code: ENG-{run_id}, alertTargets: []}}
---
apiVersion: spendgate.io/v1alpha1
kind: CostCenter
metadata: {{name: platform-{run_id}, labels: {{{TEST_LABEL}: "{run_id}"}}}}
spec: {{code: PLT-{run_id}, parent: eng-{run_id}, members: [alice, bob], alertTargets: []}}
---
apiVersion: spendgate.io/v1alpha1
kind: RoutingPolicy
metadata: {{name: cascade, namespace: {namespace}}}
spec: {{cascade: [claude-opus-5-5, claude-sonnet-5-5, claude-haiku-5-5], rules: []}}
---
apiVersion: spendgate.io/v1alpha1
kind: Budget
metadata: {{name: alice-daily, namespace: {namespace}}}
spec:
  costCenter: platform-{run_id}
  scope: {{kind: Developer, name: alice}}
  limitUSD: "40.00"
  window: {{period: Daily, timeZone: Europe/Berlin}}
  routingPolicyRef: cascade
"""


def bundle_in(api: Api, namespace: str) -> dict | None:
    configmap = api.configmap(namespace, bundlemap.NAME)
    document = bundlemap.document(configmap) if configmap else None
    return loads(document).bundle.model_dump(mode="json") if document else None


def test_applied_policies_become_the_bundle(control_plane: ControlPlane, api: Api, run_id: str,
                                            operator_namespace: str, policy_namespace: str,
                                            start_operator: type[OperatorThread]) -> None:
    start_operator()
    control_plane.apply(policies(run_id, policy_namespace))

    bundle = eventually(lambda: bundle_in(api, operator_namespace), what="bundle ConfigMap")
    budgets = [b["id"] for b in bundle["budgets"]]

    assert f"{policy_namespace}/alice-daily" in budgets
    print(json.dumps(api.status("Budget", "alice-daily", policy_namespace), indent=1))
