"""Provenance in status and the tamper-evident audit log, with the real operator on the real API
server: Argo CD-style server-side applies, an Argo CD Application to read the revision from,
break-glass edits, enforcement transitions, a restart, a deletion, and `spendgate audit`."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from operator_harness import Api, FakeProxy, ManualClock, OperatorThread, budget, cost_center, manifests

from cluster.controlplane import ControlPlane
from cluster.polling import eventually
from spendgate.adapters.auditlog import LOG_LABEL, RECORDS_KEY, read_cluster_log
from spendgate.cli import main
from spendgate.logic import audit

pytestmark = pytest.mark.cluster

# A stand-in for Argo CD's Application CRD: the operator reads only its status.
APPLICATION_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "applications.argoproj.io"},
    "spec": {"group": "argoproj.io", "scope": "Namespaced",
             "names": {"kind": "Application", "plural": "applications", "singular": "application",
                       "listKind": "ApplicationList"},
             "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}
SYNCED_REVISION = "abc1234def5678abc1234def5678abc1234def56"


def argo_apply(control_plane: ControlPlane, *documents: dict[str, Any]) -> None:
    """What an Argo CD sync with ServerSideApply=true does: apply as its field manager."""
    control_plane.kubectl("apply", "--server-side", "--field-manager=argocd-controller", "--force-conflicts",
                          "-f", "-", stdin=manifests(*documents))


def tracked(document: dict[str, Any], app: str, **annotations: str) -> dict[str, Any]:
    metadata = document["metadata"]
    where = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    tracking = f"{app}:spendgate.io/{document['kind']}:{where}{metadata['name']}"
    return {**document, "metadata": {**metadata, "annotations": {"argocd.argoproj.io/tracking-id": tracking,
                                                                 **annotations}}}


def records(control_plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    return [r for r in read_cluster_log(namespace, kubeconfig=control_plane.kubeconfig).records if isinstance(r, dict)]


def of_type(found: list[dict[str, Any]], kind: str, **fields: Any) -> list[dict[str, Any]]:
    return [r for r in found if r["type"] == kind and all(r.get(k) == v for k, v in fields.items())]


def test_provenance_and_the_audit_trail(control_plane: ControlPlane, api: Api, run_id: str, clock: ManualClock,
                                        operator_namespace: str, policy_namespace: str,
                                        start_operator: type[OperatorThread], capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    argocd, app, cc = f"argocd-{run_id}", f"policies-{run_id}", f"team-{run_id}"
    control_plane.kubectl("create", "namespace", argocd)
    control_plane.apply(json.dumps(APPLICATION_CRD))
    control_plane.kubectl("wait", "--for=condition=Established", "crd/applications.argoproj.io", "--timeout=30s")
    control_plane.apply(json.dumps({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": app, "namespace": argocd},
        "spec": {"project": "default"},
        "status": {"sync": {"status": "Synced", "revision": SYNCED_REVISION},
                   "operationState": {"phase": "Running", "startedAt": "2026-11-24T11:59:58Z",
                                      "operation": {"initiatedBy": {"automated": True},
                                                    "sync": {"revision": SYNCED_REVISION}},
                                      "syncResult": {"revision": SYNCED_REVISION}}}}))
    operator = start_operator(argocd_namespace=argocd, audit_segment_bytes=4096)

    # 1. Argo CD creates the policies; the revision comes from the Application's sync.
    argo_apply(control_plane, tracked(cost_center(cc, run_id), app),
               tracked(budget("b", policy_namespace, cc, limit="100.00"), app))
    provenance = eventually(lambda: api.status("Budget", "b", policy_namespace).get("provenance"), what="provenance")
    assert (provenance["application"], provenance["revision"]) == (app, SYNCED_REVISION)
    assert provenance["trackingId"] == f"{app}:spendgate.io/Budget:{policy_namespace}/b"
    assert [(c["generation"], c["by"], c["breakGlass"]) for c in provenance["changes"]] == [
        (1, "argocd-controller", False)]

    # 2. A merged change, stamped with its revision; then a later sync re-applies the same spec.
    argo_apply(control_plane, tracked(budget("b", policy_namespace, cc, limit="120.00"), app,
                                      **{"spendgate.io/git-revision": "def4567"}))
    eventually(lambda: len(api.status("Budget", "b", policy_namespace)["provenance"]["changes"]) == 2, what="change 2")
    argo_apply(control_plane, tracked(budget("b", policy_namespace, cc, limit="120.00"), app,
                                      **{"spendgate.io/git-revision": "0a0a0a0"}))
    provenance = eventually(lambda: (p := api.status("Budget", "b", policy_namespace)["provenance"])["revision"]
                            == "0a0a0a0" and p, what="the re-applied revision")
    assert [(c["revision"], c.get("lastRevision")) for c in provenance["changes"]] == [
        ("def4567", "0a0a0a0"), (SYNCED_REVISION, None)]
    described = control_plane.kubectl("describe", "budget", "b", "-n", policy_namespace).stdout
    wide = control_plane.kubectl("get", "budgets", "-n", policy_namespace, "-o", "wide").stdout
    assert "Provenance:" in described and "Last Revision:  0a0a0a0" in described
    assert "REVISION" in wide.splitlines()[0] and "0a0a0a0" in wide and app in wide

    # 3. Spend crosses the alert threshold: an enforcement transition.
    proxy = FakeProxy(control_plane, operator_namespace, "proxy-a")
    proxy.spend(f"{policy_namespace}/b", "2026-11-24", "100.00")
    proxy.report(clock.now())
    eventually(lambda: of_type(records(control_plane, operator_namespace), audit.ENFORCEMENT, stateAfter="Alert"),
               what="the Ok -> Alert record")

    # 4. Break glass: a spec change with the annotation, then a metadata-only break-glass write.
    control_plane.kubectl("patch", "budget", "b", "-n", policy_namespace, "--type=merge", "-p", json.dumps(
        {"metadata": {"annotations": {"spendgate.io/break-glass": "oncall@example.com: INC-7 raise the limit"}},
         "spec": {"limitUSD": "150.00"}}))
    control_plane.kubectl("annotate", "budget", "b", "-n", policy_namespace, "--overwrite",
                          "spendgate.io/break-glass=oncall@example.com: INC-8 label for the postmortem")
    eventually(lambda: of_type(records(control_plane, operator_namespace), audit.BREAK_GLASS), what="break-glass use")

    # 5. The window closes; a restart adds nothing; the budget goes.
    clock.advance(timedelta(hours=11, seconds=1))
    eventually(lambda: of_type(records(control_plane, operator_namespace), audit.WINDOW_RESET), what="the reset")
    before_restart = records(control_plane, operator_namespace)
    operator.stop()
    restarted = start_operator(argocd_namespace=argocd, audit_segment_bytes=4096)
    eventually(lambda: restarted.metrics.registry.get_sample_value("spendgate_operator_synced") == 1, what="sync")
    control_plane.kubectl("delete", "budget", "b", "-n", policy_namespace)  # (one while no operator runs goes unseen)
    found = eventually(lambda: of_type(records(control_plane, operator_namespace), audit.POLICY_CHANGE,
                                       change="deleted") and records(control_plane, operator_namespace),
                       what="the deletion")
    assert found[:len(before_restart)] == before_restart and len(found) == len(before_restart) + 1

    budget_changes = [r for r in of_type(found, audit.POLICY_CHANGE) if r["subject"]["kind"] == "Budget"]
    assert [(r["change"], r.get("revision"), r.get("by")) for r in budget_changes] == [
        ("created", SYNCED_REVISION, "argocd-controller"), ("updated", "def4567", "argocd-controller"),
        ("updated", "0a0a0a0", "kubectl-patch"), ("deleted", "0a0a0a0", None)]
    assert budget_changes[0]["sync"] == {"initiatedBy": "automated sync", "startedAt": "2026-11-24T11:59:58Z",
                                         "phase": "Running"}
    assert budget_changes[1]["digestBefore"] == budget_changes[0]["digestAfter"] != budget_changes[1]["digestAfter"]
    assert budget_changes[2]["breakGlass"] == {"user": "oncall@example.com", "reason": "INC-7 raise the limit"}
    assert of_type(found, audit.BREAK_GLASS)[0]["breakGlass"]["reason"] == "INC-8 label for the postmortem"
    # $100 of $120 is Alert; the break-glass raise to $150 brings it back to Ok
    assert [(r["stateBefore"], r["stateAfter"], r["generation"]) for r in of_type(found, audit.ENFORCEMENT)] == [
        ("Ok", "Alert", 2), ("Alert", "Ok", 3)]
    assert of_type(found, audit.WINDOW_RESET)[0]["windowClosed"] == "2026-11-24"

    # 6. The CLI: the chain verifies, against the checkpoints in the AuditLog's status; evidence per change.
    cluster = ["--namespace", operator_namespace, "--kubeconfig", str(control_plane.kubeconfig)]
    assert main(["audit", "verify", *cluster]) == 0
    out = capsys.readouterr().out
    assert f"{len(found)} records" in out and "chain intact" in out and "stored checkpoints match" in out
    assert main(["audit", "export", "--period", "2026-11", "--output", "json", *cluster]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] and report["enforcement"] == {"Alert": 1, "Ok": 1, "reset": 1}
    assert [row["breakGlass"] for row in report["changes"] if row["object"].startswith("Budget")] == [
        "no", "no", "yes: oncall@example.com: INC-7 raise the limit", "yes: oncall@example.com: INC-8 label for the "
        "postmortem", "no"]
    listed = control_plane.kubectl("get", "auditlogs", "-n", operator_namespace).stdout.splitlines()
    assert listed[0].split()[:3] == ["NAME", "RECORDS", "HEAD"]
    assert listed[1].split()[:2] == ["spendgate", str(len(found))]
    segments = read_cluster_log(operator_namespace, kubeconfig=control_plane.kubeconfig).segments
    assert len(segments) > 1  # 4 KiB segments: the log rolled over

    # 7. Tampering in the cluster is caught: an edited record, then a cut-off tail.
    first = segments[0]
    data = api.configmap(operator_namespace, first)["data"][RECORDS_KEY]  # type: ignore[index]
    edited = data.replace('"created"', '"updated"', 1)
    control_plane.kubectl("patch", "configmap", first, "-n", operator_namespace, "--type=merge", "-p",
                          json.dumps({"data": {RECORDS_KEY: edited}}))
    assert main(["audit", "verify", *cluster]) == 1
    assert "content does not match its hash: edited" in capsys.readouterr().out
    control_plane.kubectl("patch", "configmap", first, "-n", operator_namespace, "--type=merge", "-p",
                          json.dumps({"data": {RECORDS_KEY: data}}))
    control_plane.kubectl("delete", "configmap", segments[-1], "-n", operator_namespace)
    assert main(["audit", "verify", *cluster]) == 1
    assert "its tail was cut off" in capsys.readouterr().out
    assert control_plane.kubectl("get", "configmaps", "-n", operator_namespace, "-l", f"{LOG_LABEL}=spendgate",
                                 "-o", "name").stdout.count("configmap/") == len(segments) - 1
