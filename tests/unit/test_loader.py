"""Manifests on disk are admitted exactly as the API server would: schema and CEL rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spendgate.adapters.policyfiles import load_directory
from spendgate.policy.manifests import load_text

BUDGET = """
apiVersion: spendgate.io/v1alpha1
kind: Budget
metadata: {{name: b, namespace: team}}
spec:
  costCenter: eng
  scope: {scope}
  limitUSD: "{limit}"
  window: {{period: Daily}}
  thresholds: {thresholds}
"""


def budget(scope: str = "{kind: Developer, name: alice}", limit: str = "10",
           thresholds: str = "{alertPercent: 80, downgradePercent: 95, pausePercent: 110}") -> str:
    return BUDGET.format(scope=scope, limit=limit, thresholds=thresholds)


def single_error(text: str) -> tuple[str, str, str]:
    loaded = load_text(text, source="b.yaml")
    assert loaded.objects == []
    (error,) = loaded.errors
    return error.reason, error.field or "", error.message


def test_defaults_are_applied() -> None:
    (parsed,) = load_text(budget(thresholds="{}")).objects
    assert parsed.spec.thresholds.model_dump() == {"alertPercent": 80, "downgradePercent": 95, "pausePercent": 110}
    assert parsed.spec.window.timeZone == "UTC"
    assert parsed.spec.enforcement == "Enforce"


@pytest.mark.parametrize(("text", "field", "words"), [
    (budget(thresholds="{alertPercent: 96, downgradePercent: 95}"), "spec.thresholds.alertPercent",
     "alertPercent must be below thresholds.downgradePercent"),
    (budget(thresholds="{downgradePercent: 120}"), "spec.thresholds.downgradePercent",
     "downgradePercent must be below thresholds.pausePercent"),
    (budget(limit="0.00"), "spec.limitUSD", "limitUSD must be greater than zero"),
    (budget(scope="{kind: Developer}"), "spec.scope.name", "scope.name is required"),
    (budget(scope="{kind: CostCenter, name: x}"), "spec.scope.name", "must be omitted for kind CostCenter"),
])
def test_cel_rules_refuse_with_the_field_named(text: str, field: str, words: str) -> None:
    reason, where, message = single_error(text)
    assert (reason, where) == ("InvalidSpec", field)
    assert words in message
    assert re.search(r"\(b\.yaml:[0-9]+\)", message)  # file:line of the field


@pytest.mark.parametrize(("text", "field"), [
    (budget(limit="12.5.0"), "spec.limitUSD"),
    (budget(limit="-3"), "spec.limitUSD"),
    (budget(scope="{kind: Team, name: x}"), "spec.scope.kind"),
    (budget().replace("costCenter: eng", "costCenter: eng\n  colour: blue"), "spec.colour"),
])
def test_schema_constraints_refuse_with_the_field_named(text: str, field: str) -> None:
    reason, where, _ = single_error(text)
    assert (reason, where) == ("InvalidSpec", field)


def test_money_is_never_a_float() -> None:
    reason, where, message = single_error(budget().replace('limitUSD: "10"', "limitUSD: 10.5"))
    assert (reason, where) == ("InvalidSpec", "spec.limitUSD")
    assert "string" in message


def test_routing_policy_rules() -> None:
    policy = """
apiVersion: spendgate.io/v1alpha1
kind: RoutingPolicy
metadata: {name: p, namespace: team}
spec:
  cascade: [claude-opus-5-5, claude-haiku-5-5]
  rules:
    - {name: r1, when: {}, then: {stepDown: 1}}
"""
    assert single_error(policy)[2].startswith("spec.rules[0].when: when must set at least one of")
    outside = policy.replace("when: {}, then: {stepDown: 1}", "when: {inputTokensBelow: 5}, then: {useModel: gpt-x}")
    assert "useModel must be one of the cascade's models" in single_error(outside)[2]
    both = policy.replace("then: {stepDown: 1}", "then: {stepDown: 1, useModel: claude-haiku-5-5}").replace(
        "when: {}", "when: {stateAtLeast: Alert}")
    assert "then must set exactly one of stepDown, useModel" in single_error(both)[2]
    empty = policy.replace("cascade: [claude-opus-5-5, claude-haiku-5-5]", "cascade: []")
    assert single_error(empty)[1] == "spec.cascade"


def test_other_api_groups_are_ignored_but_unknown_spendgate_kinds_are_errors() -> None:
    loaded = load_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n"
                       "apiVersion: spendgate.io/v1alpha1\nkind: Wallet\nmetadata: {name: w}\n")
    assert loaded.objects == []
    assert [(e.reason, e.field) for e in loaded.errors] == [("UnknownKind", "kind")]


def test_unsupported_version() -> None:
    assert single_error(budget().replace("v1alpha1", "v9"))[0] == "UnsupportedVersion"


def test_broken_yaml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(budget())
    (tmp_path / "b.yaml").write_text("kind: [unclosed\n")
    loaded = load_directory(tmp_path)
    assert len(loaded.objects) == 1
    (error,) = loaded.errors
    assert error.reason == "InvalidYAML"
    assert error.name.endswith("b.yaml")


def test_missing_directory() -> None:
    loaded = load_directory(Path("/nonexistent/policies"))
    assert [e.reason for e in loaded.errors] == ["NotADirectory"]


def test_namespace_defaults_like_kubectl() -> None:
    (parsed,) = load_text(budget().replace("namespace: team", "")).objects
    assert parsed.ref() == "default/b"
