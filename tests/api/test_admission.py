"""The CRDs on a real kube-apiserver: examples accepted, bad objects refused with the field named,
printer columns, categories, and status writable only through the status subresource.

Every refusal case is also run through the Python loader (standalone mode's admission), so the
two admissions cannot drift apart.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.controlplane import ControlPlane
from spendgate.policy.manifests import load_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"adm-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "budgets,routingpolicies", "--all", "-n", name, "--wait=false")


def budget(namespace: str, spec: str) -> str:
    return f"""apiVersion: spendgate.io/v1alpha1
kind: Budget
metadata: {{name: b-{uuid.uuid4().hex[:6]}, namespace: {namespace}}}
spec: {spec}
"""


GOOD = 'costCenter: eng, scope: {kind: Developer, name: alice}, limitUSD: "10", window: {period: Daily}'

# (spec fragment, the field path both admissions must name, the words of the message)
REFUSALS = [
    ("{" + GOOD.replace("Daily}", "Daily}, thresholds: {alertPercent: 96}") + "}",
     "spec.thresholds.alertPercent", "alertPercent must be below thresholds.downgradePercent"),
    ("{" + GOOD.replace("Daily}", "Daily}, thresholds: {downgradePercent: 120}") + "}",
     "spec.thresholds.downgradePercent", "downgradePercent must be below thresholds.pausePercent"),
    ("{" + GOOD.replace('"10"', '"0.00"') + "}", "spec.limitUSD", "limitUSD must be greater than zero"),
    ("{" + GOOD.replace('"10"', '"-5"') + "}", "spec.limitUSD", ""),
    ("{" + GOOD.replace('"10"', "10.5") + "}", "spec.limitUSD", ""),
    ("{" + GOOD.replace(", name: alice", "") + "}", "spec.scope.name", "scope.name is required"),
    ("{" + GOOD.replace("Developer, name: alice", "CostCenter, name: x") + "}", "spec.scope.name",
     "must be omitted for kind CostCenter"),
    ("{" + GOOD.replace("Developer", "Team") + "}", "spec.scope.kind", ""),
    ("{" + GOOD.replace("Daily", "Hourly") + "}", "spec.window.period", ""),
    ("{" + GOOD.replace("costCenter: eng, ", "") + "}", "spec.costCenter", ""),
]


@pytest.mark.parametrize(("spec", "field", "words"), REFUSALS)
def test_both_admissions_refuse_and_name_the_field(
    control_plane: ControlPlane, namespace: str, spec: str, field: str, words: str
) -> None:
    manifest = budget(namespace, spec)
    result = control_plane.kubectl("create", "--dry-run=server", "-f", "-", stdin=manifest, check=False)
    assert result.returncode != 0, f"the API server accepted {spec}"
    assert field in result.stderr, result.stderr
    assert words in result.stderr

    loaded = load_text(manifest)
    (error,) = loaded.errors
    assert error.field == field
    assert words in error.message


def test_routing_policy_rules_at_admission(control_plane: ControlPlane, namespace: str) -> None:
    policy = f"""apiVersion: spendgate.io/v1alpha1
kind: RoutingPolicy
metadata: {{name: p, namespace: {namespace}}}
spec:
  cascade: [claude-opus-5-5, claude-haiku-5-5]
  rules: [{{name: r, when: {{inputTokensBelow: 5}}, then: {{useModel: gpt-x}}}}]
"""
    result = control_plane.kubectl("create", "--dry-run=server", "-f", "-", stdin=policy, check=False)
    assert "rules[].then.useModel must be one of the cascade's models" in result.stderr
    empty = policy.replace("[claude-opus-5-5, claude-haiku-5-5]", "[]")
    result = control_plane.kubectl("create", "--dry-run=server", "-f", "-", stdin=empty, check=False)
    assert "spec.cascade" in result.stderr


def test_cost_center_rules_at_admission(control_plane: ControlPlane) -> None:
    duplicate_members = """apiVersion: spendgate.io/v1alpha1
kind: CostCenter
metadata: {name: dup-members}
spec: {code: DUP-1, members: [alice, alice]}
"""
    result = control_plane.kubectl("create", "--dry-run=server", "-f", "-", stdin=duplicate_members, check=False)
    assert 'spec.members[1]: Duplicate value: "alice"' in result.stderr
    (error,) = load_text(duplicate_members).errors
    assert (error.field, error.message.split(" (")[0]) == (
        "spec.members", "spec.members: Value error, must not contain duplicates: alice")


RATE_LIMIT_REFUSALS = [
    ("{}", "spec.rateLimits", "rateLimits must set at least one of perVirtualKey, perDeveloper, total"),
    ("{perDeveloper: {}}", "spec.rateLimits.perDeveloper",
     "a rate limit must set at least one of requestsPerMinute, inputTokensPerMinute, outputTokensPerMinute"),
    ("{total: {requestsPerMinute: 0}}", "spec.rateLimits.total.requestsPerMinute", ""),
    ("{perVirtualKey: {outputTokensPerMinute: '60'}}", "spec.rateLimits.perVirtualKey.outputTokensPerMinute", ""),
    ("{perDeveloper: {requestsPerMinute: 60, tokensPerMinute: 5}}", "spec.rateLimits.perDeveloper", ""),
]


@pytest.mark.parametrize(("limits", "field", "words"), RATE_LIMIT_REFUSALS)
def test_rate_limits_are_refused_by_both_admissions_naming_the_field(
        control_plane: ControlPlane, limits: str, field: str, words: str) -> None:
    manifest = f"""apiVersion: spendgate.io/v1alpha1
kind: CostCenter
metadata: {{name: limited-{uuid.uuid4().hex[:6]}}}
spec: {{code: LIM, rateLimits: {limits}}}
"""
    result = control_plane.kubectl("create", "--dry-run=server", "-f", "-", stdin=manifest, check=False)
    assert result.returncode != 0, f"the API server accepted {limits}"
    assert field in result.stderr, result.stderr
    assert words in result.stderr
    (error,) = load_text(manifest).errors
    assert error.field.startswith(field), (error.field, error.message)
    assert words in error.message


def test_rate_limits_are_accepted(control_plane: ControlPlane) -> None:
    manifest = f"""apiVersion: spendgate.io/v1alpha1
kind: CostCenter
metadata: {{name: limited-{uuid.uuid4().hex[:6]}}}
spec:
  code: LIM-OK
  rateLimits:
    perVirtualKey: {{requestsPerMinute: 30}}
    perDeveloper: {{requestsPerMinute: 60, inputTokensPerMinute: 400000, outputTokensPerMinute: 80000}}
    total: {{outputTokensPerMinute: 1000000}}
"""
    result = control_plane.kubectl("create", "--dry-run=server", "-f", "-", stdin=manifest, check=False)
    assert result.returncode == 0, result.stderr
    assert load_text(manifest).errors == []


def test_minimal_objects_are_accepted(control_plane: ControlPlane, namespace: str) -> None:
    """Optional lists that CEL rules read are defaulted, so leaving them out is fine."""
    minimal = f"""apiVersion: spendgate.io/v1alpha1
kind: CostCenter
metadata: {{name: minimal-{namespace}}}
spec: {{code: MIN-{namespace}}}
---
apiVersion: spendgate.io/v1alpha1
kind: RoutingPolicy
metadata: {{name: minimal, namespace: {namespace}}}
spec: {{cascade: [claude-sonnet-5-5]}}
"""
    result = control_plane.kubectl("create", "--dry-run=server", "-f", "-", stdin=minimal, check=False)
    assert result.returncode == 0, result.stderr
    assert load_text(minimal).errors == []


def test_every_example_is_accepted_and_listed(control_plane: ControlPlane) -> None:
    applied = control_plane.apply(EXAMPLES).stdout.split()
    assert "budget.spendgate.io/alice-daily" in applied
    listed = control_plane.kubectl("get", "spendgate", "-A", "-o", "name").stdout.split()
    assert {"costcenter.spendgate.io/platform", "budget.spendgate.io/alice-daily",
            "routingpolicy.spendgate.io/opus-sonnet-haiku"} <= set(listed)
    short = control_plane.kubectl("get", "bgt", "-n", "ai-budgets", "-o", "name").stdout.split()
    assert len(short) == 3


def test_kubectl_get_budgets_reads_like_resourcequota(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.apply(budget(namespace, "{" + GOOD + "}").replace("name: b-", "name: shown-"))
    header = control_plane.kubectl("get", "budgets", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "COSTCENTER", "SCOPE", "LIMIT", "SPENT", "USED", "STATE", "RESETS", "AGE"]
    wide = control_plane.kubectl("get", "budgets", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert wide[-5:] == ["MODE", "PERIOD", "READY", "REVISION", "APPLICATION"]


def test_status_changes_only_through_the_status_subresource(control_plane: ControlPlane, namespace: str) -> None:
    manifest = budget(namespace, "{" + GOOD + "}")
    name = control_plane.apply(manifest).stdout.strip().split("/")[-1]
    patch = json.dumps({"status": {"spentUSD": "3.50", "state": "Ok"}})
    control_plane.kubectl("patch", "budget", name, "-n", namespace, "--type=merge", "-p", patch)
    assert "status" not in json.loads(control_plane.kubectl("get", "budget", name, "-n", namespace,
                                                            "-o", "json").stdout)

    control_plane.kubectl("patch", "budget", name, "-n", namespace, "--type=merge", "-p", patch,
                          "--subresource=status")
    stored = json.loads(control_plane.kubectl("get", "budget", name, "-n", namespace, "-o", "json").stdout)
    assert stored["status"]["spentUSD"] == "3.50"
    assert stored["spec"]["thresholds"] == {"alertPercent": 80, "downgradePercent": 95, "pausePercent": 110}


def test_bad_status_is_refused_too(control_plane: ControlPlane, namespace: str) -> None:
    name = control_plane.apply(budget(namespace, "{" + GOOD + "}")).stdout.strip().split("/")[-1]
    patch = json.dumps({"status": {"spentUSD": 3.5}})
    result = control_plane.kubectl("patch", "budget", name, "-n", namespace, "--type=merge", "-p", patch,
                                   "--subresource=status", check=False)
    assert result.returncode != 0
    assert "status.spentUSD" in result.stderr
