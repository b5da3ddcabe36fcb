"""Git is the only writer: the chart's ValidatingAdmissionPolicy, rendered by the real helm and
enforced by the real API server, against requests impersonating Argo CD, a random user, the operator
and the break-glass group, in both roll-out modes ([Deny, Audit] and [Warn, Audit])."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml

from cluster.controlplane import ControlPlane
from cluster.helm import render
from cluster.polling import eventually

pytestmark = pytest.mark.cluster

SCOPE_LABEL = "spendgate-test-admission"  # the session's API server is shared: only this test's objects are governed
ARGO_CD = ("--as=system:serviceaccount:argocd:argocd-application-controller",
           "--as-group=system:serviceaccounts", "--as-group=system:serviceaccounts:argocd")
RANDOM_USER = ("--as=mallory@example.com", "--as-group=developers")
BREAK_GLASS = ("--as=oncall@example.com", "--as-group=spendgate:break-glass")
# Only the admission policy decides here: every test identity may write spendgate objects as far as RBAC goes.
EDITOR_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: spendgate-test-policy-editor}
rules:
  - apiGroups: [spendgate.io]
    resources: [costcenters, budgets, routingpolicies, budgets/status]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: spendgate-test-policy-editor}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: spendgate-test-policy-editor}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated"}]
"""


@dataclass
class Governed:
    control_plane: ControlPlane
    run: str
    namespace: str
    policy: str
    repository: str

    @property
    def operator(self) -> tuple[str, ...]:
        return (f"--as=system:serviceaccount:{self.namespace}:spendgate-operator", "--as-group=system:serviceaccounts")

    def kubectl(self, identity: tuple[str, ...], *args: str, stdin: str | None = None) -> CompletedProcess[str]:
        return self.control_plane.kubectl(*identity, *args, stdin=stdin, check=False)

    def apply(self, identity: tuple[str, ...], *documents: dict[str, Any]) -> CompletedProcess[str]:
        return self.kubectl(identity, "apply", "-f", "-", stdin="\n---\n".join(json.dumps(d) for d in documents))

    def patch(self, identity: tuple[str, ...], patch: dict[str, Any], *extra: str) -> CompletedProcess[str]:
        return self.kubectl(identity, "patch", "budget", "b", "-n", self.namespace, "--type=merge",
                            "-p", json.dumps(patch), *extra)

    def budget(self, limit: str = "50.00", **annotations: str) -> dict[str, Any]:
        return {"apiVersion": "spendgate.io/v1alpha1", "kind": "Budget",
                "metadata": {"name": "b", "namespace": self.namespace, "labels": {SCOPE_LABEL: self.run},
                             "annotations": annotations},
                "spec": {"costCenter": f"cc-{self.run}", "scope": {"kind": "CostCenter"}, "limitUSD": limit,
                         "window": {"period": "Daily"}}}

    def cost_center(self) -> dict[str, Any]:
        return {"apiVersion": "spendgate.io/v1alpha1", "kind": "CostCenter",
                "metadata": {"name": f"cc-{self.run}", "labels": {SCOPE_LABEL: self.run}}, "spec": {"code": self.run}}

    def limit(self) -> str:
        return self.control_plane.kubectl("get", "budget", "b", "-n", self.namespace,
                                          "-o", "jsonpath={.spec.limitUSD}").stdout

    def audit_annotations(self, verb: str, user: str) -> list[dict[str, str]]:
        return [event.get("annotations") or {} for event in self.control_plane.audit_events()
                if event.get("verb") == verb and (event.get("impersonatedUser") or {}).get("username") == user
                and (event.get("objectRef") or {}).get("namespace") == self.namespace]


@pytest.fixture
def govern(control_plane: ControlPlane) -> Iterator[Callable[[str], Governed]]:
    """Install the chart's admission objects with the given validationActions; removed afterwards."""
    installed: list[str] = []

    def install(actions: str) -> Governed:
        run = "r" + secrets.token_hex(3)  # never all digits and an "e": YAML would read a float
        namespace, repository = f"adm-{run}", f"https://git.example.com/acme/policies-{run}"
        control_plane.kubectl("create", "namespace", namespace)
        control_plane.apply(EDITOR_RBAC)
        rendered = render(namespace, "admission.enabled=true", f"admission.validationActions={{{actions}}}",
                          f"admission.policyRepository={repository}", release=f"adm-{run}")
        documents = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] in
                     ("PolicyWriters", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")]
        for document in documents:
            if document["kind"] == "ValidatingAdmissionPolicyBinding":
                document["spec"]["matchResources"] = {"objectSelector": {"matchLabels": {SCOPE_LABEL: run}}}
        control_plane.apply("\n---\n".join(json.dumps(document) for document in documents))
        policy = documents[0]["metadata"]["name"]
        installed.append(policy)
        governed = Governed(control_plane, run, namespace, policy, repository)
        # The API server picks new policies up through an informer: wait until this one is in force.
        probe = governed.cost_center()
        eventually(lambda: "spendgate policy changes only through Git" in governed.kubectl(
            RANDOM_USER, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(probe)).stderr,
            what="the admission policy in force")
        return governed

    yield install
    for policy in installed:
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy", "policywriters"):
            control_plane.kubectl("delete", kind, policy, "--ignore-not-found")


def test_deny_lets_only_gitops_write_policy(govern: Callable[[str], Governed]) -> None:
    g = govern("Deny,Audit")

    created = g.apply(ARGO_CD, g.cost_center(), g.budget())
    assert created.returncode == 0, created.stderr

    # A random user: no spec change, no metadata change, no create, no delete; the denial says where to go.
    refused = g.patch(RANDOM_USER, {"spec": {"limitUSD": "5000.00"}})
    assert refused.returncode == 1
    assert (f"spendgate policy changes only through Git: mallory@example.com may not update Budget {g.namespace}/b; "
            f"open a pull request in {g.repository}") in refused.stderr
    assert f'ValidatingAdmissionPolicy \'{g.policy}\'' in refused.stderr
    assert g.kubectl(RANDOM_USER, "label", "budget", "b", "-n", g.namespace, "team=x").returncode == 1
    assert g.kubectl(RANDOM_USER, "delete", "budget", "b", "-n", g.namespace).returncode == 1
    assert "may not create" in g.apply(RANDOM_USER, {**g.budget(), "metadata": {
        **g.budget()["metadata"], "name": "b2"}}).stderr
    assert g.limit() == "50.00"

    # The operator: status and metadata, never the spec, never a delete (its namespace is not ending).
    status = g.kubectl(g.operator, "patch", "budget", "b", "-n", g.namespace, "--subresource=status", "--type=merge",
                       "-p", json.dumps({"status": {"observedGeneration": 1}}))
    assert status.returncode == 0, status.stderr
    assert g.kubectl(g.operator, "annotate", "budget", "b", "-n", g.namespace, "note=kept").returncode == 0
    assert "may not update" in g.patch(g.operator, {"spec": {"limitUSD": "1.00"}}).stderr
    assert "may not delete" in g.kubectl(g.operator, "delete", "budget", "b", "-n", g.namespace).stderr

    # Break glass: only with a fresh annotation naming the user and a reason.
    bare = g.patch(BREAK_GLASS, {"spec": {"limitUSD": "80.00"}})
    assert bare.returncode == 1 and ('only with a new annotation spendgate.io/break-glass="oncall@example.com: '
                                     '<reason>"') in bare.stderr
    reason = "oncall@example.com: INC-9 traffic spike, raise for tonight"
    glass = g.patch(BREAK_GLASS, {"metadata": {"annotations": {"spendgate.io/break-glass": reason}},
                                  "spec": {"limitUSD": "80.00"}})
    assert glass.returncode == 0, glass.stderr
    again = g.patch(BREAK_GLASS, {"spec": {"limitUSD": "90.00"}})
    assert again.returncode == 1 and "only with a new annotation" in again.stderr
    assert g.limit() == "80.00"

    # Argo CD reverts to Git and may delete; every refusal and the break-glass write are in the audit log.
    assert g.apply(ARGO_CD, g.budget(limit="60.00")).returncode == 0 and g.limit() == "60.00"
    assert g.kubectl(ARGO_CD, "delete", "budget", "b", "-n", g.namespace).returncode == 0
    failures = [a for a in g.audit_annotations("patch", "mallory@example.com")
                if "validation.policy.admission.k8s.io/validation_failure" in a]
    assert failures and g.policy in failures[0]["validation.policy.admission.k8s.io/validation_failure"]
    glass_events = [a for a in g.audit_annotations("patch", "oncall@example.com") if f"{g.policy}/break-glass" in a]
    # every break-glass attempt is tagged, the refused ones too
    assert [a[f"{g.policy}/break-glass"] for a in glass_events] == [
        "user=oncall@example.com", f"user=oncall@example.com; {reason}", f"user=oncall@example.com; {reason}"]


def test_warn_lets_writes_through_with_the_denial_as_a_warning(govern: Callable[[str], Governed]) -> None:
    g = govern("Warn,Audit")
    assert g.apply(ARGO_CD, g.cost_center(), g.budget()).returncode == 0

    warned = g.patch(RANDOM_USER, {"spec": {"limitUSD": "5000.00"}})
    assert warned.returncode == 0 and g.limit() == "5000.00"
    assert "Warning: Validation failed for ValidatingAdmissionPolicy" in warned.stderr
    assert (f"spendgate policy changes only through Git: mallory@example.com may not update Budget {g.namespace}/b"
            in warned.stderr)
    failures = [a for a in g.audit_annotations("patch", "mallory@example.com")
                if "validation.policy.admission.k8s.io/validation_failure" in a]
    assert json.loads(failures[0]["validation.policy.admission.k8s.io/validation_failure"])[0]["validationActions"] == [
        "Warn", "Audit"]

    careless = g.patch(BREAK_GLASS, {"spec": {"limitUSD": "70.00"}})
    assert careless.returncode == 0 and "only with a new annotation spendgate.io/break-glass" in careless.stderr
    quiet = g.patch(ARGO_CD, {"spec": {"limitUSD": "50.00"}})
    assert quiet.returncode == 0 and "Warning" not in quiet.stderr


def test_deny_and_warn_together_fail_the_render() -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        render("sg", "admission.enabled=true", "admission.validationActions={Deny,Warn}")
    assert "admission.validationActions: Deny and Warn cannot be combined" in failed.value.stderr
