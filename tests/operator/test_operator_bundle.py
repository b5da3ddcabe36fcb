"""Policies in, bundle ConfigMap out: the examples, edits, deletes, bad references, virtual keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    Api,
    OperatorThread,
    budget,
    cost_center,
    manifests,
    routing_policy,
)

from cluster.controlplane import ControlPlane
from cluster.polling import eventually
from spendgate.adapters.keysecrets import LABEL, REVOKED_ANNOTATION
from spendgate.adapters.keysfile import key_hash
from spendgate.policy import bundlemap
from spendgate.policy.bundle import loads

pytestmark = pytest.mark.cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def bundle_in(api: Api, namespace: str) -> dict[str, Any] | None:
    configmap = api.configmap(namespace, bundlemap.NAME)
    document = bundlemap.document(configmap) if configmap else None
    return loads(document).bundle.model_dump(mode="json") if document else None


def budget_ids(api: Api, namespace: str) -> set[str]:
    return {b["id"] for b in (bundle_in(api, namespace) or {}).get("budgets", [])}


def ready(api: Api, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    status = api.status(kind, name, namespace)
    return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)


def test_the_examples_become_the_bundle(control_plane: ControlPlane, api: Api, operator_namespace: str,
                                        start_operator: type[OperatorThread]) -> None:
    # Other tests apply the examples too and leave them, with whatever status their operators wrote:
    # this test's own operator must be the one whose status it reads.
    control_plane.apply(EXAMPLES / "00-namespace.yaml")
    control_plane.kubectl("delete", "--ignore-not-found", "--wait", *[
        arg for name in ("10-costcenters.yaml", "20-routing.yaml", "30-budgets.yaml")
        for arg in ("-f", str(EXAMPLES / name))])
    start_operator(policy_namespaces=("ai-budgets",), bundle_namespaces=("ai-budgets",))
    try:
        control_plane.apply(EXAMPLES)
        expected = {"ai-budgets/platform-monthly", "ai-budgets/alice-daily", "ai-budgets/payments-api-weekly"}
        eventually(lambda: budget_ids(api, operator_namespace) == expected, what="the examples' budgets")
        eventually(lambda: budget_ids(api, "ai-budgets") == expected, what="the sidecar namespace's copy")
        status = eventually(lambda: api.status("Budget", "alice-daily", "ai-budgets").get("state") and
                            api.status("Budget", "alice-daily", "ai-budgets"), what="alice's status")
        platform = eventually(lambda: api.status("CostCenter", "platform").get("budgets"), what="platform rollup")
        printed = control_plane.kubectl("get", "budgets", "-n", "ai-budgets").stdout
    finally:
        control_plane.kubectl("delete", "-f", str(EXAMPLES / "10-costcenters.yaml"), "--wait=false")

    assert (status["scope"], status["state"], status["spentUSD"], status["percentUsed"]) == (
        "Developer/alice", "Ok", "0", "0.0%")
    assert platform == 3
    assert "Developer/alice" in printed and "Ok" in printed


def test_an_edit_changes_the_bundle_and_a_delete_removes_the_entry(
        control_plane: ControlPlane, api: Api, run_id: str, operator_namespace: str, policy_namespace: str,
        start_operator: type[OperatorThread]) -> None:
    start_operator()
    cc = f"team-{run_id}"
    control_plane.apply(manifests(cost_center(cc, run_id), budget("a", policy_namespace, cc, limit="10.00"),
                                  budget("b", policy_namespace, cc, limit="20.00")))
    eventually(lambda: len(budget_ids(api, operator_namespace)) == 2, what="both budgets")
    before = api.configmap(operator_namespace, bundlemap.NAME)

    control_plane.apply(manifests(budget("a", policy_namespace, cc, limit="15.00")))
    limits = eventually(lambda: {b["id"]: b["limitUSD"] for b in bundle_in(api, operator_namespace)["budgets"]
                                 if b["limitUSD"] == "15.00"}, what="the edited limit")
    control_plane.kubectl("delete", "budget", "b", "-n", policy_namespace)
    eventually(lambda: budget_ids(api, operator_namespace) == {f"{policy_namespace}/a"}, what="b removed")
    after = api.configmap(operator_namespace, bundlemap.NAME)

    assert limits == {f"{policy_namespace}/a": "15.00"}
    assert bundlemap.content_hash(after) != bundlemap.content_hash(before)
    assert after["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "spendgate-operator"
    assert ready(api, "Budget", "a", policy_namespace)["observedGeneration"] == 2


def test_bad_references_set_ready_false_with_the_reason(
        control_plane: ControlPlane, api: Api, run_id: str, operator_namespace: str, policy_namespace: str,
        start_operator: type[OperatorThread]) -> None:
    start_operator()
    cc, loop_a, loop_b = f"team-{run_id}", f"loop-a-{run_id}", f"loop-b-{run_id}"
    control_plane.apply(manifests(
        cost_center(cc, run_id), cost_center(loop_a, run_id, parent=loop_b), cost_center(loop_b, run_id, parent=loop_a),
        budget("no-cost-center", policy_namespace, f"missing-{run_id}"),
        budget("no-policy", policy_namespace, cc, routingPolicyRef="missing"),
        budget("bad-zone", policy_namespace, cc, time_zone="Mars/Olympus"),
        budget("fine", policy_namespace, cc),
    ))

    reasons = eventually(lambda: all(ready(api, "Budget", name, policy_namespace) for name in
                                     ("no-cost-center", "no-policy", "bad-zone", "fine")) and {
        name: (ready(api, "Budget", name, policy_namespace) or {}).get("reason")
        for name in ("no-cost-center", "no-policy", "bad-zone", "fine")}, what="Ready on every budget")
    cycle = eventually(lambda: ready(api, "CostCenter", loop_a), what="Ready on the cycle")
    events = eventually(lambda: api.events(policy_namespace, "no-policy"), what="an Event")

    assert reasons == {"no-cost-center": "UnknownCostCenter", "no-policy": "MissingRoutingPolicy",
                       "bad-zone": "BadTimeZone", "fine": "Compiled"}
    assert (cycle["status"], cycle["reason"]) == ("False", "HierarchyCycle")
    assert "routingPolicyRef 'missing'" in ready(api, "Budget", "no-policy", policy_namespace)["message"]
    assert budget_ids(api, operator_namespace) == {f"{policy_namespace}/fine"}
    assert [(e["type"], e["reason"]) for e in events] == [("Warning", "MissingRoutingPolicy")]

    control_plane.apply(manifests(routing_policy("missing", policy_namespace)))
    eventually(lambda: (ready(api, "Budget", "no-policy", policy_namespace) or {}).get("status") == "True",
               what="Ready once the policy exists")
    assert (ready(api, "RoutingPolicy", "missing", policy_namespace) or {}).get("message") == "used by 1 budgets"


def test_virtual_keys_reach_the_bundle_as_hashes_only(
        control_plane: ControlPlane, api: Api, run_id: str, operator_namespace: str,
        start_operator: type[OperatorThread]) -> None:
    start_operator()
    cc, plaintext = f"team-{run_id}", f"sk-sg-test-{run_id}"
    control_plane.apply(manifests(cost_center(cc, run_id, members=("alice",))))
    labels = {LABEL: "true"}
    api.create_secret(operator_namespace, "alice-laptop", {"key": plaintext, "developer": "alice", "costCenter": cc},
                      labels)
    api.create_secret(operator_namespace, "old-key", {"key": "sk-sg-old", "developer": "alice", "costCenter": cc},
                      labels, {REVOKED_ANNOTATION: "true"})
    api.create_secret(operator_namespace, "broken-key", {"key": "sk-sg-broken", "costCenter": cc}, labels)
    api.create_secret(operator_namespace, "unlabelled", {"key": "sk-sg-ignored", "developer": "x", "costCenter": cc})

    def keys_in_bundle() -> dict[str, Any] | None:
        keys = {key["name"]: key for key in (bundle_in(api, operator_namespace) or {}).get("keys", [])}
        return keys if len(keys) == 2 else None

    keys = eventually(keys_in_bundle, what="two keys")
    warnings = eventually(lambda: api.events(operator_namespace, "broken-key"), what="the broken key's Event")
    raw = str(api.configmap(operator_namespace, bundlemap.NAME))

    assert keys["alice-laptop"]["hash"] == key_hash(plaintext)
    assert (keys["alice-laptop"]["developer"], keys["alice-laptop"]["revoked"], keys["old-key"]["revoked"]) == (
        "alice", False, True)
    assert plaintext not in raw and "sk-sg-old" not in raw
    assert warnings[0]["reason"] == "MissingField" and "'developer'" in warnings[0]["message"]
    assert "sk-sg-broken" not in warnings[0]["message"]
