"""diff and dry-run: policy changes in policy terms, replays that reproduce the recording, properties that hold for
any ledger, failure rules and exit codes, Git revisions read with the real git."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendgate.adapters.ledgerfiles import write_ledger
from spendgate.adapters.policysource import open_policies
from spendgate.cli import main
from spendgate.logic.dryrun import DryRun
from spendgate.logic.ledgerrecord import LedgerDecision, LedgerRecord
from spendgate.logic.policydiff import diff_bundles
from spendgate.logic.synth import SynthSettings, synthesize

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
BASE = open_policies(str(EXAMPLES)).result.bundle
RECORDS = list(synthesize(BASE, SynthSettings(start=date(2026, 11, 2), days=5, developers=12, seed=3)))


def changed_policies(tmp_path: Path) -> Path:
    head = tmp_path / "head"
    shutil.copytree(EXAMPLES, head)
    budgets = head / "30-budgets.yaml"
    budgets.write_text(budgets.read_text().replace('limitUSD: "40.00"', 'limitUSD: "60.00"')
                       .replace("enforcement: DryRun", "enforcement: Enforce"))
    routing = head / "20-routing.yaml"
    routing.write_text(routing.read_text().replace("claude-opus-5-5, claude-sonnet-5-5, claude-haiku-5-5",
                                                   "claude-opus-5-5, claude-haiku-5-5"))
    centers = head / "10-costcenters.yaml"
    centers.write_text(centers.read_text().replace("  parent: engineering\n", ""))
    return head


def test_diff_speaks_policy(tmp_path: Path) -> None:
    head = open_policies(str(changed_policies(tmp_path))).result.bundle.bundle
    assert [str(change) for change in diff_bundles(BASE.bundle, head)] == [
        "alice-daily: limit $40.00 -> $60.00",
        "payments-api-weekly: enforcement DryRun -> Enforce",
        "opus-sonnet-haiku: cascade claude-sonnet-5-5 removed",
        "platform: moved: parent engineering -> (top level)",
    ]
    assert diff_bundles(BASE.bundle, BASE.bundle) == []


def test_diff_names_every_rate_limit_that_changes(tmp_path: Path) -> None:
    head = tmp_path / "head"
    shutil.copytree(EXAMPLES, head)
    centers = head / "10-costcenters.yaml"
    centers.write_text(centers.read_text().replace(
        "  members: [alice, bob, carol]\n",
        "  members: [alice, bob, carol]\n  rateLimits: {perDeveloper: {requestsPerMinute: 60}, "
        "total: {outputTokensPerMinute: 1000000}}\n"))
    limited = open_policies(str(head)).result.bundle.bundle
    assert [str(change) for change in diff_bundles(BASE.bundle, limited)] == [
        "platform: rate limit perDeveloper requests none -> 60/min",
        "platform: rate limit total output tokens none -> 1,000,000/min",
    ]
    centers.write_text(centers.read_text().replace("requestsPerMinute: 60", "requestsPerMinute: 120"))
    raised = open_policies(str(head)).result.bundle.bundle
    assert [str(change) for change in diff_bundles(limited, raised)] == [
        "platform: rate limit perDeveloper requests 60/min -> 120/min"]


def git(repo: Path, *arguments: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *arguments], check=True, capture_output=True, text=True).stdout


def test_diff_of_git_revisions_and_errors_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo / "policies")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qam", "base", "--allow-empty")
    git(repo, "add", ".")
    git(repo, "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "policies")
    shutil.rmtree(repo / "policies")
    shutil.copytree(changed_policies(tmp_path), repo / "policies")
    git(repo, "add", ".")
    git(repo, "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "raise alice")
    assert main(["diff", "--repo", str(repo), "HEAD~1:policies", "HEAD:policies", "-o", "json"]) == 0
    changes = json.loads(capsys.readouterr().out)["changes"]
    assert {"kind": "Budget", "subject": "alice-daily", "change": "limit $40.00 -> $60.00"} in changes

    broken = repo / "policies" / "30-budgets.yaml"
    broken.write_text(broken.read_text().replace("costCenter: platform\n  scope: {kind: Developer",
                                                 "costCenter: ghost\n  scope: {kind: Developer"))
    assert main(["diff", str(EXAMPLES), str(repo / "policies")]) == 2
    error = capsys.readouterr().err
    line = broken.read_text().splitlines().index("  costCenter: ghost") + 1
    assert f"{broken}:{line}: Budget ai-budgets/alice-daily (spec.costCenter): UnknownCostCenter" in error
    assert main(["diff", "--repo", str(repo), "nope", "HEAD"]) == 2
    assert "'nope' is not a revision of the Git repository" in capsys.readouterr().err


def test_replaying_the_recorded_policy_reproduces_every_decision() -> None:
    replay = DryRun(BASE.bundle, BASE.bundle)
    replay.feed(RECORDS)
    report = replay.report()
    assert {r.decision.action for r in RECORDS} == {"forward", "reroute", "reject"}
    assert report.mismatches == 0 and report.base_matches == report.replayed == len(RECORDS)
    spent = {budget.id: budget.base_spent for budget in report.budgets}
    assert spent["ai-budgets/alice-daily"] == sum(r.cost for r in RECORDS if r.developer == "alice")
    assert spent["ai-budgets/platform-monthly"] == sum(r.cost for r in RECORDS if r.cost_center == "platform")


def test_attempts_a_rate_limit_refused_are_not_replayed() -> None:
    """A rate-limited attempt is no budget decision and its retry is its own line: left out, the
    recording is still reproduced whole."""
    answered = next(r for r in RECORDS if r.decision.action == "forward" and r.tokens is not None)
    refused = answered._replace(
        request_id="req_proxy_rate_limited", status=429, outcome="rejected", error_type="rate_limit_error", tokens=None,
        cost=Decimal(0), decision=LedgerDecision("reject", "rate limit: developer alice (cost center platform, "
                                                           "perDeveloper) 60 requests/min", None))
    records = sorted([*RECORDS, refused], key=lambda record: record.time)
    replay = DryRun(BASE.bundle, BASE.bundle)
    replay.feed(records)
    report = replay.report()
    assert refused.rate_limited and not answered.rate_limited
    assert (report.ledger_requests, report.replayed) == (len(RECORDS) + 1, len(RECORDS))
    assert report.mismatches == 0 and report.base_matches == len(RECORDS)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=len(RECORDS) - 1), min_size=1, max_size=300, unique=True))
def test_any_ledger_replayed_through_the_same_policy_changes_nothing(picks: list[int]) -> None:
    """Whatever subset of traffic (whose decisions may differ from the recording's): identical base and head
    report no change, and money is conserved: budgets, developers and the total agree on both sides."""
    records: list[LedgerRecord] = [RECORDS[i] for i in sorted(picks)]
    replay = DryRun(BASE.bundle, BASE.bundle)
    replay.feed(records)
    report = replay.report()
    assert report.changes.changed == 0 and report.changes.difference == 0
    assert report.newly_paused_developers == set()
    for budget in report.budgets:
        assert budget.base_spent == budget.head_spent
        assert budget.base_spent == sum((w.base_spent for w in budget.windows), Decimal(0))
    assert report.base.cost == report.head.cost == sum((i.base_cost for i in report.developers.values()), Decimal(0))


def test_dry_run_outputs_and_failure_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = tmp_path / "ledger.jsonl"
    for _ in write_ledger(RECORDS, str(ledger)):
        pass
    head = str(changed_policies(tmp_path))
    common = ["dry-run", "--base", str(EXAMPLES), "--head", head, "--ledger", str(ledger)]
    assert main([*common, "-o", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("### spendgate dry-run: ")
    assert "<details><summary>Policy changes</summary>" in markdown and "xychart-beta" in markdown
    assert main([*common, "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["baseReproduces"] == len(RECORDS)
    assert main([*common, "--fail-if-spend-increase", "0", "-o", "table"]) == 1  # alice no longer paused
    assert "FAILED: spend up $" in capsys.readouterr().out
    assert main([*common, "--fail-if-paused-developers", "0"]) == 0

    (tmp_path / "bad.jsonl").write_text('{"schemaVersion": "spendgate.io/ledger/v1"}\n')
    assert main([*common[:-1], str(tmp_path / "bad.jsonl")]) == 2
    assert f"{tmp_path / 'bad.jsonl'}:1: endpoint: missing" in capsys.readouterr().err
    assert main([*common[:-1], str(ledger), str(tmp_path / "bad.jsonl"), "--skip-bad-lines", "-o", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["skippedLines"] == 1 and "warning: skipped" in captured.err
