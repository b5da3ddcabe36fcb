"""The dry-run's numbers are pinned: the JSON report of a fixed synthetic ledger (seed 11) replayed through two
policy changes is stored beside this test, so speed work on reading and replaying cannot silently change a number.

One change raises limits (examples/gitops/policies); the other tightens them and adds a budget over every
engineer, so callers no budget covers on the base side are covered on the head side. When a change to the
decisions or the synthetic ledger is meant, regenerate the file and review its diff:

    SPENDGATE_UPDATE_PINNED=1 .venv/bin/pytest tests/unit/test_dryrun_pinned.py
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from spendgate.cli import main

ROOT = Path(__file__).resolve().parents[2]
PINNED = Path(__file__).resolve().parent / "pinned" / "dry-run-seed-11.json"
SYNTH = ["ledger", "synth", "--days", "14", "--developers", "30", "--seed", "11", "--start", "2026-11-02"]
EVERY_ENGINEER = """\
apiVersion: spendgate.io/v1alpha1
kind: Budget
metadata:
  name: engineering-weekly
  namespace: ai-budgets
spec:
  costCenter: engineering
  scope: {kind: CostCenter}
  limitUSD: "900.00"
  window: {period: Weekly, timeZone: Asia/Kolkata}
  thresholds: {alertPercent: 50, downgradePercent: 70, pausePercent: 100}
  routingPolicyRef: opus-sonnet-haiku
"""


def tightened_policies(tmp_path: Path) -> Path:
    head = tmp_path / "tightened"
    shutil.copytree(ROOT / "examples" / "policies", head)
    budgets = head / "30-budgets.yaml"
    budgets.write_text(budgets.read_text().replace('limitUSD: "5000.00"', 'limitUSD: "1500.00"')
                       .replace('limitUSD: "40.00"', 'limitUSD: "25.00"')
                       .replace("enforcement: DryRun", "enforcement: Enforce"))
    (head / "40-engineering.yaml").write_text(EVERY_ENGINEER)
    return head


def test_the_dry_run_report_of_a_fixed_ledger_is_pinned(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # labels in the report are the paths as typed
    ledger = tmp_path / "ledger.jsonl"
    assert main([*SYNTH, "--out", str(ledger)]) == 0
    reports = {}
    for name, head in (("raised", "examples/gitops/policies"), ("tightened", str(tightened_policies(tmp_path)))):
        capsys.readouterr()
        assert main(["dry-run", "--base", "examples/policies", "--head", head, "--ledger", str(ledger),
                     "--output", "json"]) == 0
        report = json.loads(capsys.readouterr().out)
        report["head"] = name  # the temporary directory's name changes from run to run
        reports[name] = report
    assert reports["tightened"]["summary"]["newlyPaused"] > 0 and reports["raised"]["summary"]["noLongerPaused"] > 0
    text = json.dumps(reports, indent=1, sort_keys=True) + "\n"
    if os.environ.get("SPENDGATE_UPDATE_PINNED") == "1":
        PINNED.parent.mkdir(exist_ok=True)
        PINNED.write_text(text)
    assert text == PINNED.read_text(), f"the dry-run's numbers changed: diff against {PINNED} (see the docstring)"
