"""`spendgate audit verify | export` on an exported log file: every tampering is exit status 1 with
a line saying what happened, and the evidence comes out in each format."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spendgate.cli import main
from spendgate.logic import audit

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BUDGET = audit.subject("Budget", "ai-budgets", "alice-daily", "uid-1")
DIGESTS = ["sha256:" + str(n) * 64 for n in range(4)]


def write_log(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def sample() -> list[dict[str, Any]]:
    entries = [
        audit.policy_change(T0, BUDGET, audit.PolicyChange("created", 1, None, DIGESTS[1], revision="4f2a9c1",
                                                           application="spendgate-policies", by="argocd-controller")),
        audit.enforcement(T0 + timedelta(hours=2), BUDGET, 1, "2026-11-24", "Ok", "Alert", "33.00", "40.00", "Enforce"),
        audit.policy_change(T0 + timedelta(hours=3), BUDGET, audit.PolicyChange(
            "updated", 2, DIGESTS[1], DIGESTS[2], revision="77e01b3", by="kubectl-patch",
            break_glass=audit.BreakGlass("oncall@example.com", "INC-7 | raise"))),
        audit.window_reset(T0 + timedelta(hours=11), BUDGET, "2026-11-24", "38.00", "2026-11-25", "Alert"),
        audit.policy_change(T0 + timedelta(days=7), BUDGET, audit.PolicyChange("updated", 3, DIGESTS[2], DIGESTS[3],
                                                                               revision="c0ffee1")),
    ]
    return audit.chain(entries, audit.Head())


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    write_log(path, sample())
    return path


def verify(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, str]:
    code = main(["audit", "verify", "--file", str(path), *extra])
    return code, capsys.readouterr().out


def test_an_untouched_log_verifies_and_prints_a_checkpoint_to_keep(log: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out = verify(capsys, log)
    head = audit.head_of(sample())
    assert code == 0 and f"5 records in 1 segments, head 5:{head.hash}; chain intact" in out
    assert verify(capsys, log, "--checkpoint", f"5:{head.hash}")[0] == 0


@pytest.mark.parametrize(("tamper", "problem"), [
    (lambda r: r[2].update(by="argocd-controller"), "record 2 (seq 2): content does not match its hash: edited"),
    (lambda r: r.pop(1), "record 1 has seq 2: records dropped before it"),
    (lambda r: r.insert(2, dict(r[1])), "record 2 has seq 1: records inserted or reordered"),
    (lambda r: r.insert(3, r.pop(1)), "record 1 has seq 2: records dropped before it"),
    (lambda r: r.pop(), "its tail was cut off"),
])
def test_tampering_with_the_file_is_exit_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   tamper: Any, problem: str) -> None:
    records = sample()
    head = audit.head_of(records)
    tamper(records)
    path = tmp_path / "tampered.jsonl"
    write_log(path, records)
    code, out = verify(capsys, path, "--checkpoint", f"{head.records}:{head.hash}")
    assert code == 1 and problem in out


def test_a_line_that_is_not_json_is_named(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log.write_text(log.read_text().replace('"type": "enforcement"', '"type": "enforcement', 1))
    code, out = verify(capsys, log)
    assert code == 1 and "record 1: not a JSON object" in out


def test_export_writes_the_evidence_in_each_format(log: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    approvals = tmp_path / "approvals.jsonl"
    approvals.write_text(json.dumps({"revision": "4f2a9c1", "pullRequest": "https://git.example.com/acme/p/pull/42",
                                     "approvers": ["finance-lead", "platform-lead"]}) + "\n")
    args = ["audit", "export", "--file", str(log), "--period", "2026-11", "--approvals", str(approvals)]

    assert main([*args, "--output", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] and report["enforcement"] == {"Alert": 1, "reset": 1}
    assert [(row["revision"], row["approvers"], row["breakGlass"]) for row in report["changes"]] == [
        ("4f2a9c1", "finance-lead, platform-lead", "no"), ("77e01b3", "", "yes: oncall@example.com: INC-7 | raise")]

    assert main([*args, "--output", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert tuple(rows[0]) == audit.EVIDENCE_COLUMNS and rows[0]["pullRequest"].endswith("/pull/42")

    assert main([*args, "--output", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("### 2 policy changes in 2026-11, 1 break-glass; audit log verified\n")
    assert "INC-7 \\| raise" in markdown  # a pipe in a cell does not break the table

    assert main([*args, "--output", "table"]) == 0
    assert "finance-lead, platform-lead" in capsys.readouterr().out

    assert main([*args[:-2], "--period", "2026-11", "--output", "jsonl"]) == 0
    exported = tmp_path / "export.jsonl"
    exported.write_text(capsys.readouterr().out)
    code, out = verify(capsys, exported)  # November's export stops before December's change, and verifies offline
    assert code == 0 and "4 records" in out


def test_bad_input_is_one_line(log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "approvals.jsonl"
    bad.write_text("{not json\n")
    cases = [
        (["audit", "export", "--file", str(log), "--period", "2026-11", "--approvals", str(bad)],
         f"{bad}: not an approvals file"),
        (["audit", "verify", "--file", str(log), "--checkpoint", "five:sha256:00"], "expected RECORDS:sha256:HEX"),
        (["audit", "verify", "--file", str(tmp_path / "missing.jsonl")], "missing.jsonl: cannot be read"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["audit", "export", "--file", str(log), "--period", "2026-13"])
    assert "'2026-13' is not a month like 2026-11" in capsys.readouterr().err
