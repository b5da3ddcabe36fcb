"""What kopf's events mean for the reconciler, and the small pure pieces around API writes."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from spendgate.adapters.keysecrets import key_entries
from spendgate.adapters.keysfile import key_hash
from spendgate.adapters.kube import merge_patch
from spendgate.api import v1alpha1 as api
from spendgate.operator.transitions import budget_events
from spendgate.operator.world import BUDGET, SECRET, SPEND_REPORT, World
from spendgate.policy import bundlemap
from spendgate.policy.bundle import Bundle, CostCenterEntry, KeyEntry, sign
from spendgate.policy.errors import PolicyError


def budget_body(version: str, generation: int = 1, limit: str = "10.00", status: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    return {"apiVersion": "spendgate.io/v1alpha1", "kind": "Budget",
            "metadata": {"name": "b", "namespace": "t", "uid": "u-1", "resourceVersion": version,
                         "generation": generation},
            "spec": {"costCenter": "c", "scope": {"kind": "CostCenter"}, "limitUSD": limit,
                     "window": {"period": "Daily"}},
            "status": status or {}}


def test_a_spec_change_recompiles_and_a_status_change_only_refreshes() -> None:
    world = World()

    added = world.observe(BUDGET, budget_body("1"))
    echoed = world.observe(BUDGET, budget_body("1"))
    status_only = world.observe(BUDGET, budget_body("2", status={"spentUSD": "1"}))
    edited = world.observe(BUDGET, budget_body("3", generation=2, limit="20.00"))
    deleted = world.forget(BUDGET, budget_body("3"))

    assert (added.policy, added.statuses) == (True, {(BUDGET, "t/b")})
    assert (echoed.policy, echoed.statuses) == (False, set())
    assert (status_only.policy, status_only.statuses) == (False, {(BUDGET, "t/b")})
    assert edited.policy and world.get(BUDGET, "t/b") is None and deleted.policy
    assert world.departed == {"u-1"}


def test_an_object_the_api_types_refuse_is_kept_as_its_error() -> None:
    world = World()
    world.observe(BUDGET, budget_body("1", limit="ten dollars"))

    parsed = world.objects[BUDGET]["t/b"].parsed

    assert isinstance(parsed, PolicyError) and parsed.reason == "InvalidSpec"


def test_reports_and_keys_mark_budgets_and_the_bundle() -> None:
    world = World()
    report = {"metadata": {"name": "p", "namespace": "s", "uid": "r"},
              "spec": {"proxy": "p", "sequence": 1, "entries": [{"budget": "t/b", "window": "w", "spentUSD": "1"}]}}
    secret = {"metadata": {"name": "k", "namespace": "s", "uid": "k"},
              "data": {f: base64.b64encode(v.encode()).decode()
                       for f, v in {"key": "sk-1", "developer": "d", "costCenter": "c"}.items()}}

    assert world.observe(SPEND_REPORT, report).spend == {"t/b"}
    assert world.observe(SECRET, secret).policy
    assert not world.observe(SECRET, secret).policy
    assert world.observe(SPEND_REPORT, {**report, "spec": {"proxy": ""}}).spend == {"t/b"}  # invalid: dropped


def secret(**data: str) -> dict[str, Any]:
    return {"metadata": {"name": "alice-key", "namespace": "s", "annotations": {}},
            "data": {field: base64.b64encode(value.encode()).decode() for field, value in data.items()}}


def test_a_key_secret_becomes_its_hash_and_never_shows_the_key() -> None:
    entries = key_entries(secret(key="sk-sg-secret", developer="alice", costCenter="platform"))
    missing = key_entries(secret(key="sk-sg-secret", costCenter="platform"))

    assert entries == [KeyEntry(hash=key_hash("sk-sg-secret"), name="alice-key", developer="alice",
                                costCenter="platform")]
    assert isinstance(missing, PolicyError) and "sk-sg-secret" not in missing.message
    assert missing.reason == "MissingField" and missing.field == "data.developer"


def test_a_key_that_is_not_base64_counts_as_missing() -> None:
    broken = secret(developer="alice", costCenter="platform")
    broken["data"]["key"] = "not*base64"

    assert isinstance(key_entries(broken), PolicyError)


def signed(members: int) -> Any:
    centers = [CostCenterEntry(name=f"cc-{n}", code=f"C{n}", members=[f"developer-{n}-{m}" for m in range(members)])
               for n in range(40)]
    return sign(Bundle(costCenters=centers))


def test_a_bundle_that_fits_is_plain_json_and_a_larger_one_is_compressed() -> None:
    small, large = signed(1), signed(2000)

    plain, packed = bundlemap.render(small, "ns"), bundlemap.render(large, "ns")

    assert set(plain["data"]) == {"bundle.json"} and "binaryData" not in plain
    assert set(packed["binaryData"]) == {"bundle.json.gz"} and "data" not in packed
    assert bundlemap.document(packed) is not None and bundlemap.content_hash(packed) == large.contentHash
    assert bundlemap.render(large, "ns") == packed  # the same bundle gives the same bytes


def test_a_bundle_too_large_even_compressed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundlemap, "MAX_DATA_BYTES", 100)

    with pytest.raises(bundlemap.BundleTooLarge, match="compressed"):
        bundlemap.render(signed(5), "ns")


def test_merge_patch_turns_the_old_document_into_the_new_one() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}
    new = {"a": 1, "b": {"c": 4}, "e": [1, 2], "f": "x"}

    assert merge_patch(old, new) == {"b": {"c": 4, "d": None}, "e": [1, 2], "f": "x"}


def test_events_come_from_changes_of_state_not_from_writes() -> None:
    ok = api.BudgetStatus(state=api.BudgetState.OK, window="w1", spentUSD="1", percentUsed="10.0%")
    alert = ok.model_copy(update={"state": api.BudgetState.ALERT, "spentUSD": "8.5", "percentUsed": "85.0%"})
    rolled = ok.model_copy(update={"window": "w2", "windowEnd": "2026-11-26T00:00:00Z"})

    assert budget_events(ok, ok) == []
    assert [(e.type, e.reason, e.message) for e in budget_events(ok, alert)] == [
        ("Warning", "StateChanged", "Ok -> Alert: $8.5 spent, 85.0% of the limit")]
    assert [e.reason for e in budget_events(ok, rolled)] == ["WindowReset"]
