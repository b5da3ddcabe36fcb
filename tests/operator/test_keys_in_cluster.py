"""`spendgate keys ... --namespace`: key Secrets on the real API server, read by the real operator."""

from __future__ import annotations

import json
from typing import Any

import pytest
from operator_harness import Api, OperatorThread, cost_center, manifests

from cluster.controlplane import ControlPlane
from cluster.polling import eventually
from spendgate.adapters.keysfile import key_hash
from spendgate.cli import main
from spendgate.policy import bundlemap
from spendgate.policy.bundle import loads

pytestmark = pytest.mark.cluster


def bundle_keys(api: Api, namespace: str) -> dict[str, dict[str, Any]]:
    document = bundlemap.document(api.configmap(namespace, bundlemap.NAME) or {})
    return {key["hash"]: key for key in loads(document).bundle.model_dump(mode="json")["keys"]} if document else {}


def keys(capsys: pytest.CaptureFixture[str], control_plane: ControlPlane, namespace: str, *argv: str) -> Any:
    """`spendgate keys ...` against the test cluster with --output json; its exit status must be 0."""
    code = main(["keys", *argv, "--namespace", namespace, "--kubeconfig", str(control_plane.kubeconfig),
                 "--output", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_create_rotate_revoke_list(control_plane: ControlPlane, api: Api, run_id: str, operator_namespace: str,
                                   start_operator: type[OperatorThread], capsys: pytest.CaptureFixture[str]) -> None:
    cc = f"team-{run_id}"
    control_plane.apply(manifests(cost_center(cc, run_id)))
    start_operator()

    created = keys(capsys, control_plane, operator_namespace, "create", "--developer", "alice", "--cost-center", cc,
                   "--name", "alice-laptop")
    first = created["key"]
    entry = eventually(lambda: bundle_keys(api, operator_namespace).get(key_hash(first)), what="the new key")
    assert (entry["name"], entry["developer"], entry["costCenter"]) == ("alice-laptop", "alice", cc)

    rotated = keys(capsys, control_plane, operator_namespace, "rotate", "--name", "alice-laptop", "--grace", "1h")
    second = rotated["key"]
    both = eventually(lambda: len(bundle_keys(api, operator_namespace)) == 2 and bundle_keys(api, operator_namespace),
                      what="the rotated key beside the old one")
    assert both[key_hash(first)]["expiresAt"] == rotated["previousKeyExpiresAt"]
    assert "expiresAt" not in both[key_hash(second)]
    assert all(first not in json.dumps(doc) for doc in (api.configmap(operator_namespace, bundlemap.NAME),))

    listed = keys(capsys, control_plane, operator_namespace, "list")
    assert [(row["name"], row["state"]) for row in listed] == [("alice-laptop", "active"),
                                                               ("alice-laptop", "expiring")]
    assert all("key" not in row for row in listed)

    keys(capsys, control_plane, operator_namespace, "revoke", "--name", "alice-laptop")
    eventually(lambda: all(k["revoked"] for k in bundle_keys(api, operator_namespace).values()), what="revocation")
    assert {row["state"] for row in keys(capsys, control_plane, operator_namespace, "list")} == {"revoked"}


def test_cluster_failures_are_one_line(control_plane: ControlPlane, operator_namespace: str, run_id: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig = ["--namespace", operator_namespace, "--kubeconfig", str(control_plane.kubeconfig)]
    assert main(["keys", "create", "--developer", "bob", "--cost-center", "c", *kubeconfig]) == 0
    capsys.readouterr()
    control_plane.kubectl("create", "secret", "generic", "plain", "-n", operator_namespace, "--from-literal=a=b")

    cases = {
        ("create", "--developer", "bob", "--cost-center", "c"):
            f"Secret {operator_namespace}/bob not created: 409 Conflict: secrets \"bob\" already exists",
        ("rotate", "--name", "carol"): f"Secret {operator_namespace}/carol not read: 404 Not Found",
        ("revoke", "--name", "plain"): f"Secret {operator_namespace}/plain is not a virtual key",
        ("create", "--developer", "Not A Name", "--cost-center", "c"): "422 Unprocessable Entity",
    }
    for argv, message in cases.items():
        assert main(["keys", *argv, *kubeconfig]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("error: ") and message in err and err.count("\n") == 1, err

    missing = ["--namespace", operator_namespace, "--kubeconfig", f"/nonexistent/{run_id}"]
    assert main(["keys", "list", *missing]) == 2
    assert "no Kubernetes credentials" in capsys.readouterr().err
