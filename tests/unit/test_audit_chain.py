"""The audit log's hash chain: every way of tampering with it is detected, and nothing secret gets in."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendgate.logic import audit
from spendgate.logic.audit import Checkpoint, Head, chain, verify

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BUDGET = audit.subject("Budget", "ai-budgets", "alice-daily", "uid-1")


def log(length: int) -> list[dict[str, Any]]:
    entries = [audit.enforcement(T0 + timedelta(minutes=n), BUDGET, 1, "2026-11-24", "Ok", "Alert", f"{n}.00",
                                 "40.00", "Enforce") for n in range(length)]
    return chain(entries, Head())


def checkpoint_of(records: list[dict[str, Any]]) -> Checkpoint:
    head = audit.head_of(records)
    return Checkpoint(head.records, head.hash, "2026-11-24T13:00:00Z")


def test_an_untouched_log_verifies_and_appending_continues_the_chain() -> None:
    first = log(3)
    more = chain([audit.window_reset(T0, BUDGET, "2026-11-24", "12.00", "2026-11-25", "Alert")], audit.head_of(first))
    records = first + more
    result = verify(records, [checkpoint_of(first), checkpoint_of(records)])
    assert result.ok and result.records == 4 and result.checkpoints_matched == 2
    assert [r["seq"] for r in records] == [0, 1, 2, 3] and records[0]["prev"] == audit.GENESIS


def test_an_edited_record_is_detected() -> None:
    records = log(5)
    records[2]["spentUSD"] = "0.01"
    assert verify(records).problems == ["record 2 (seq 2): content does not match its hash: edited"]


def test_an_edited_and_rehashed_record_breaks_the_link_to_the_next() -> None:
    records = log(5)
    records[2]["spentUSD"] = "0.01"
    records[2]["hash"] = audit.record_hash(records[2])
    assert verify(records).problems == [
        "record 3 (seq 3) does not follow record 2: a record was dropped, inserted, reordered or rewritten"]


def test_a_log_rewritten_from_some_record_on_no_longer_matches_its_checkpoint() -> None:
    records = log(5)
    checkpoint = checkpoint_of(records)
    forged = records[:2] + chain([{**r, "spentUSD": "0.01"} for r in records[2:]], audit.head_of(records[:2]))
    result = verify(forged, [checkpoint])
    assert result.problems == ["record 4 is not the one the checkpoint of 2026-11-24T13:00:00Z names: "
                               "the log was rewritten"]


def test_a_dropped_record_is_detected() -> None:
    records = log(5)
    del records[1]
    assert verify(records).problems[0] == "record 1 has seq 2: records dropped before it"


def test_an_inserted_record_is_detected() -> None:
    records = log(5)
    forged = chain([audit.enforcement(T0, BUDGET, 1, "2026-11-24", "Paused", "Ok", "0", "40.00", "Enforce")],
                   audit.head_of(records[:2]))[0]
    records.insert(2, forged)
    problems = verify(records).problems
    assert problems[0] == "record 3 has seq 2: records inserted or reordered"


def test_reordered_records_are_detected() -> None:
    records = log(5)
    records[1], records[2] = records[2], records[1]
    problems = verify(records).problems
    assert problems[:2] == ["record 1 has seq 2: records dropped before it",
                            "record 2 has seq 1: records inserted or reordered"]


def test_a_truncated_tail_is_detected_by_the_checkpoint() -> None:
    records = log(5)
    checkpoint = checkpoint_of(records)
    result = verify(records[:3], [checkpoint])
    assert result.problems == ["the log ends after 3 records, but at 2026-11-24T13:00:00Z it had 5: "
                               "its tail was cut off"]


def test_malformed_records_are_named() -> None:
    records: list[Any] = log(2)
    records += ["not an object", {"seq": 3}]
    problems = verify(records).problems
    assert problems == ["record 2: not a JSON object", "record 3: missing prev, hash, type, time"]


TAMPERINGS = ("edit", "edit-rehash", "drop", "insert", "swap", "truncate", "rewrite")


@given(length=st.integers(min_value=2, max_value=30), data=st.data(), how=st.sampled_from(TAMPERINGS))
def test_any_tampering_is_detected(length: int, data: st.DataObject, how: str) -> None:
    records = log(length)
    checkpoint = checkpoint_of(records)
    at = data.draw(st.integers(min_value=0, max_value=length - 2))
    tampered = copy.deepcopy(records)
    if how in ("edit", "edit-rehash", "rewrite"):
        tampered[at]["stateAfter"] = "Ok" if tampered[at]["stateAfter"] != "Ok" else "Paused"
        if how == "edit-rehash":
            tampered[at]["hash"] = audit.record_hash(tampered[at])
        if how == "rewrite":
            tampered = tampered[:at] + chain(tampered[at:], audit.head_of(tampered[:at]))
    elif how == "drop":
        del tampered[at]
    elif how == "insert":
        tampered.insert(at, copy.deepcopy(records[at]))
    elif how == "swap":
        tampered[at], tampered[at + 1] = tampered[at + 1], tampered[at]
    else:
        tampered = tampered[:at + 1]
    assert not verify(tampered, [checkpoint]).ok


def test_no_key_reaches_a_record() -> None:
    anthropic_key = "sk-ant-not-a-key-" + "A" * 40  # key-shaped for the redactor, obviously fake
    reason = f"INC-7 outage; used {anthropic_key} and Bearer sk-sg-{'b' * 40} to test"
    glass = audit.BreakGlass.parse(f"oncall@example.com: {reason}")
    assert glass is not None and glass.user == "oncall@example.com"
    change = audit.PolicyChange("updated", 3, "sha256:" + "1" * 64, "sha256:" + "2" * 64, by=f"kubectl {anthropic_key}",
                                break_glass=glass)
    record = chain([audit.policy_change(T0, BUDGET, change)], Head())[0]
    text = json.dumps(record)
    assert "sk-ant" not in text and "sk-sg-" not in text and "A" * 20 not in text
    assert record["breakGlass"]["reason"].startswith("INC-7 outage; used [redacted]")


@pytest.mark.parametrize(("period", "rows"), [("2026-11", 2), ("2026-12", 0)])
def test_evidence_rows_per_change(period: str, rows: int) -> None:
    changes = [
        audit.policy_change(T0, BUDGET, audit.PolicyChange("updated", 2, "sha256:" + "1" * 64, "sha256:" + "2" * 64,
                                                           revision="4f2a9c1", application="spendgate-policies",
                                                           by="argocd-controller")),
        audit.break_glass_use(T0, BUDGET, audit.BreakGlass("oncall", "INC-7"), 2, "sha256:" + "3" * 64),
        audit.enforcement(T0, BUDGET, 2, "2026-11-24", "Ok", "Alert", "33", "40", "Enforce"),
    ]
    approvals = {"4f2a9c1": {"pullRequest": "https://git.example.com/acme/policies/pull/42",
                             "approvers": ["finance-lead", "cfo"]}}
    found = audit.evidence(changes, period, approvals)
    assert len(found) == rows
    if rows:
        assert found[0]["approvers"] == "finance-lead, cfo" and found[0]["via"] == "Argo CD spendgate-policies"
        assert found[0]["breakGlass"] == "no" and found[1]["breakGlass"] == "yes: oncall: INC-7"
