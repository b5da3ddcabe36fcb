"""The policy compiler: deterministic bundles, and a structured error per inconsistency."""

from __future__ import annotations

import json
from pathlib import Path

from spendgate.adapters.policyfiles import compile_directory, load_text
from spendgate.api import v1alpha1 as api
from spendgate.policy.bundle import KeyEntry, dumps, loads
from spendgate.policy.compiler import compile_policies

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"


def objects(text: str) -> list[api.PolicyObject]:
    loaded = load_text(text)
    assert loaded.errors == []
    return loaded.objects


def cost_center(name: str, parent: str | None = None, code: str | None = None) -> str:
    parent_line = f"\n  parent: {parent}" if parent else ""
    return f"""
apiVersion: spendgate.io/v1alpha1
kind: CostCenter
metadata: {{name: {name}}}
spec:
  code: {code or name.upper()}{parent_line}
---"""


def budget(name: str, cost_center: str = "eng", extra: str = "", tz: str = "UTC") -> str:
    return f"""
apiVersion: spendgate.io/v1alpha1
kind: Budget
metadata: {{name: {name}, namespace: team}}
spec:
  costCenter: {cost_center}
  scope: {{kind: Developer, name: alice}}
  limitUSD: "10.00"
  window: {{period: Daily, timeZone: {tz}}}{extra}
---"""


def key(name: str, cost_center: str = "eng", digest: str = "a" * 64) -> KeyEntry:
    return KeyEntry(hash=digest, name=name, developer="alice", costCenter=cost_center)


def test_examples_compile_without_errors() -> None:
    result = compile_directory(EXAMPLES)
    assert result.errors == []
    assert [b.id for b in result.bundle.bundle.budgets] == [
        "ai-budgets/alice-daily", "ai-budgets/payments-api-weekly", "ai-budgets/platform-monthly",
    ]
    platform = next(c for c in result.bundle.bundle.costCenters if c.name == "platform")
    assert platform.ancestors == ["engineering"]


def test_same_input_gives_same_bytes_and_hash_whatever_the_order() -> None:
    items = objects(cost_center("eng") + cost_center("web", parent="eng") + budget("a") + budget("b"))
    keys = [key("k1", digest="1" * 64), key("k2", digest="2" * 64)]
    first = compile_policies(items, keys)
    second = compile_policies(list(reversed(items)), list(reversed(keys)))
    assert dumps(first.bundle) == dumps(second.bundle)
    assert first.bundle.contentHash == second.bundle.contentHash
    assert loads(dumps(first.bundle)) == first.bundle


def test_a_change_changes_the_hash() -> None:
    before = compile_policies(objects(cost_center("eng") + budget("a")))
    after = compile_policies(objects(cost_center("eng") + budget("a", extra="\n  enforcement: DryRun")))
    assert before.bundle.contentHash != after.bundle.contentHash


def test_no_secret_material_in_the_bundle() -> None:
    result = compile_policies(objects(cost_center("eng")), [key("k1", digest="f" * 64)])
    document = json.loads(dumps(result.bundle))
    assert document["bundle"]["keys"] == [
        {"hash": "f" * 64, "name": "k1", "developer": "alice", "costCenter": "eng", "revoked": False}
    ]


def test_unknown_cost_center_is_an_error_for_that_budget_only() -> None:
    result = compile_policies(objects(cost_center("eng") + budget("good") + budget("bad", cost_center="nope")))
    assert [b.id for b in result.bundle.bundle.budgets] == ["team/good"]
    (error,) = result.errors
    assert (error.kind, error.namespace, error.name, error.reason, error.field) == (
        "Budget", "team", "bad", "UnknownCostCenter", "spec.costCenter")
    assert "'nope'" in error.message


def test_missing_routing_policy() -> None:
    result = compile_policies(objects(cost_center("eng") + budget("a", extra="\n  routingPolicyRef: cheap")))
    (error,) = result.errors
    assert error.reason == "MissingRoutingPolicy"
    assert error.field == "spec.routingPolicyRef"
    assert "namespace team" in error.message


def test_routing_policy_in_another_namespace_does_not_count() -> None:
    policy = """
apiVersion: spendgate.io/v1alpha1
kind: RoutingPolicy
metadata: {name: cheap, namespace: elsewhere}
spec: {cascade: [claude-opus-5-5, claude-haiku-5-5]}
---"""
    result = compile_policies(objects(cost_center("eng") + policy + budget("a", extra="\n  routingPolicyRef: cheap")))
    assert [e.reason for e in result.errors] == ["MissingRoutingPolicy"]


def test_bad_time_zone() -> None:
    result = compile_policies(objects(cost_center("eng") + budget("a", tz="Mars/Olympus_Mons")))
    (error,) = result.errors
    assert (error.reason, error.field) == ("BadTimeZone", "spec.window.timeZone")
    assert "Mars/Olympus_Mons" in error.message


def test_hierarchy_cycle_is_reported_for_every_member_and_their_budgets() -> None:
    items = objects(cost_center("a", parent="c") + cost_center("b", parent="a") + cost_center("c", parent="b")
                    + cost_center("ok") + budget("x", cost_center="a"))
    result = compile_policies(items)
    reasons = {(e.kind, e.name): e.reason for e in result.errors}
    assert reasons == {
        ("CostCenter", "a"): "HierarchyCycle",
        ("CostCenter", "b"): "HierarchyCycle",
        ("CostCenter", "c"): "HierarchyCycle",
        ("Budget", "x"): "CostCenterNotReady",
    }
    assert "a -> c -> b -> a" in result.errors_for("CostCenter", None, "a")[0].message
    assert [c.name for c in result.bundle.bundle.costCenters] == ["ok"]


def test_self_parent_is_a_cycle() -> None:
    result = compile_policies(objects(cost_center("a", parent="a")))
    assert [e.reason for e in result.errors] == ["HierarchyCycle"]


def test_unknown_parent_and_descendants() -> None:
    result = compile_policies(objects(cost_center("child", parent="ghost") + cost_center("grandchild", parent="child")))
    reasons = {e.name: (e.reason, e.message) for e in result.errors}
    assert reasons["child"][0] == "UnknownParent"
    assert reasons["grandchild"] == ("UnknownParent", "ancestor child's spec.parent names CostCenter 'ghost', "
                                     "which does not exist")


def test_duplicate_finance_code() -> None:
    result = compile_policies(objects(cost_center("a", code="CC-1") + cost_center("b", code="CC-1")))
    (error,) = result.errors
    assert (error.name, error.reason) == ("b", "DuplicateCode")


def test_keys_with_unknown_cost_center_or_duplicates() -> None:
    result = compile_policies(objects(cost_center("eng")), [
        key("good", digest="1" * 64), key("orphan", cost_center="ghost", digest="2" * 64),
        key("good", digest="3" * 64), key("copy", digest="1" * 64), key("solo", digest="4" * 64),
    ])
    assert [k.name for k in result.bundle.bundle.keys] == ["solo"]
    assert sorted((e.name, e.reason) for e in result.errors) == [
        ("copy", "DuplicateKey"), ("good", "DuplicateKey"), ("good", "DuplicateKey"),
        ("orphan", "UnknownCostCenter")]


def test_every_error_names_a_field_and_renders_for_people() -> None:
    result = compile_policies(objects(cost_center("a", parent="a") + budget("x", cost_center="zzz")))
    for error in result.errors:
        assert error.field
        assert str(error).startswith(f"{error.kind} ")


def test_rate_limits_reach_the_bundle_and_a_bundle_without_them_keeps_its_bytes() -> None:
    plain = cost_center("eng")
    limited = plain.replace("code: ENG", "code: ENG\n  rateLimits:\n    perDeveloper: {requestsPerMinute: 60}\n"
                                         "    total: {outputTokensPerMinute: 90000}")
    without = compile_policies(objects(plain)).bundle
    assert b"rateLimits" not in dumps(without)
    signed = compile_policies(objects(limited)).bundle
    (entry,) = signed.bundle.costCenters
    assert entry.rateLimits is not None and entry.rateLimits.perDeveloper is not None
    assert (entry.rateLimits.perDeveloper.requestsPerMinute, entry.rateLimits.perVirtualKey) == (60, None)
    assert entry.rateLimits.total is not None and entry.rateLimits.total.outputTokensPerMinute == 90000
    assert loads(dumps(signed)) == signed
    assert signed.contentHash != without.contentHash
