"""HA through kopf's peering: the standby stays quiet, and takes over when the leader stops."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from operator_harness import Api, OperatorThread, budget, cost_center, manifests

from cluster.controlplane import ControlPlane
from cluster.helm import render
from cluster.polling import eventually

pytestmark = pytest.mark.cluster

NAME = "spendgate-operator"


@pytest.fixture
def peering(control_plane: ControlPlane, operator_namespace: str, policy_namespace: str) -> str:
    """The chart's peering objects: kopf's CRD (a pre-install hook) first, then one KopfPeering per
    watched namespace."""
    documents = [doc for doc in yaml.safe_load_all(render(
        operator_namespace, "operator.peering.enabled=true", f"operator.peering.name={NAME}",
        f"operator.policyNamespaces={{{policy_namespace}}}")) if doc and doc["apiVersion"].startswith(
        ("apiextensions.k8s.io", "kopf.dev"))]
    crd = next(doc for doc in documents if doc["kind"] == "CustomResourceDefinition")
    control_plane.apply(yaml.safe_dump(crd))
    control_plane.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=30s")
    peerings = [doc for doc in documents if doc["kind"] == "KopfPeering"]
    assert {doc["metadata"]["namespace"] for doc in peerings} == {operator_namespace, policy_namespace}
    control_plane.apply(yaml.safe_dump_all(peerings))
    return NAME


def peers(control_plane: ControlPlane, namespace: str) -> dict[str, Any]:
    found = json.loads(control_plane.kubectl("get", "kopfpeering", NAME, "-n", namespace, "-o", "json").stdout)
    status: dict[str, Any] = found.get("status") or {}
    return status


def announced(control_plane: ControlPlane, namespaces: tuple[str, ...], count: int) -> None:
    for namespace in namespaces:
        eventually(lambda namespace=namespace: len(peers(control_plane, namespace)) == count, what=f"{count} peers")


def reporters(api: Api, namespace: str, name: str) -> set[str]:
    events: list[dict[str, Any]] = api.events(namespace, name)
    return {event["reportingInstance"] for event in events}


def test_only_the_leader_works_and_the_standby_takes_over(
        control_plane: ControlPlane, api: Api, run_id: str, operator_namespace: str, policy_namespace: str,
        peering: str,
        start_operator: type[OperatorThread]) -> None:
    # Two replicas that start at the same instant may each think they are alone for a moment
    # (kopf's design); a standby that starts after the leader announced itself never works.
    leader = start_operator(identity="leader", peering=peering, priority=2)
    announced(control_plane, (operator_namespace, policy_namespace), 1)
    start_operator(identity="standby", peering=peering, priority=1)
    announced(control_plane, (operator_namespace, policy_namespace), 2)
    cc = f"team-{run_id}"
    control_plane.apply(manifests(cost_center(cc, run_id), budget("first", policy_namespace, "missing-cost-center")))
    eventually(lambda: reporters(api, policy_namespace, "first"), what="the leader's Event")

    leader.stop()
    control_plane.apply(manifests(budget("second", policy_namespace, "missing-cost-center")))
    eventually(lambda: reporters(api, policy_namespace, "second"), timeout=30, what="the standby's Event")

    assert reporters(api, policy_namespace, "first") == {"leader"}
    assert reporters(api, policy_namespace, "second") == {"standby"}
