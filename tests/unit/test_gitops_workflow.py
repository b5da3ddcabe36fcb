"""The pull-request workflow of examples/gitops, run as written: its steps' own scripts (read from the YAML, so
test and workflow cannot drift) in a throwaway Git repository with two commits, made with the real git."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GITOPS = ROOT / "examples" / "gitops"
WORKFLOW = GITOPS / ".github" / "workflows" / "spendgate.yaml"
RUN_HERE = ("ledger", "validate", "diff", "dry-run", "comment")  # `post` needs GitHub


def git(repo: Path, *arguments: str) -> str:
    identity = ["-c", "user.email=dev@example.com", "-c", "user.name=dev"]
    return subprocess.run(["git", "-C", str(repo), *identity, *arguments], check=True, capture_output=True,
                          text=True).stdout.strip()


def policy_repository(tmp_path: Path) -> tuple[Path, str, str]:
    """main: examples/policies; the pull request: examples/gitops/policies (a raised limit, and more)."""
    repo = tmp_path / "policy-repo"
    shutil.copytree(ROOT / "examples" / "policies", repo / "policies")
    shutil.copy(GITOPS / "CODEOWNERS", repo / "CODEOWNERS")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "policies")
    base = git(repo, "rev-parse", "HEAD")
    shutil.rmtree(repo / "policies")
    shutil.copytree(GITOPS / "policies", repo / "policies")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "alice-daily to $60, payments-api-weekly enforced")
    return repo, base, git(repo, "rev-parse", "HEAD")


def run_step(step: dict[str, object], repo: Path, env: dict[str, str], outputs: dict[str, dict[str, str]]) -> None:
    step_env = dict(env)
    for name, value in dict(step.get("env") or {}).items():  # type: ignore[call-overload]
        step_env[name] = _expression(str(value), outputs)
    output_file = repo / ".spendgate-output"
    output_file.write_text("")
    step_env["GITHUB_OUTPUT"] = str(output_file)
    subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", str(step["run"])], cwd=repo,
                   env=step_env, check=True)  # GitHub's own `shell: bash`
    lines = [line.split("=", 1) for line in output_file.read_text().splitlines() if "=" in line]
    outputs[str(step["id"])] = {key: value for key, value in lines}


def _expression(value: str, outputs: dict[str, dict[str, str]]) -> str:
    """The only expressions the steps use: `${{ steps.<id>.outputs.<name> }}`."""
    if value.startswith("${{ steps."):
        step, _, name = value.removeprefix("${{ steps.").removesuffix(" }}").partition(".outputs.")
        return outputs[step][name]
    return value


def test_the_workflow_posts_one_comment_with_the_impact(tmp_path: Path) -> None:
    repo, base, head = policy_repository(tmp_path)
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = {step["id"]: step for step in workflow["jobs"]["check"]["steps"] if "id" in step}
    assert list(steps) == [*RUN_HERE, "post"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "BASE_SHA": base, "HEAD_SHA": head, "FAIL_IF_PAUSED_DEVELOPERS": "5", "FAIL_IF_SPEND_INCREASE": "0",
           "LEDGER_BUCKET": ""}
    assert set(workflow["env"]) == {"BASE_SHA", "HEAD_SHA", "FAIL_IF_PAUSED_DEVELOPERS", "FAIL_IF_SPEND_INCREASE",
                                    "LEDGER_BUCKET"}
    outputs: dict[str, dict[str, str]] = {}
    for step_id in RUN_HERE:
        run_step(steps[step_id], repo, env, outputs)
    assert outputs["validate"]["status"] == "0"
    assert outputs["dry-run"]["status"] == "1"  # alice's raise lets her spend more: the rule set to $0 trips

    comment = (repo / ".spendgate" / "comment.md").read_text()
    assert comment.startswith(f"<!-- spendgate-pr-check head={head} -->\n")
    assert f"**spendgate** at `{head[:12]}`: validate passed, dry-run failed" in comment
    assert "### spendgate dry-run: " in comment and "- FAILED: spend up $" in comment and "no longer paused" in comment
    assert "- alice-daily: limit $40.00 -> $60.00" in comment
    assert "- payments-api-weekly: enforcement DryRun -> Enforce" in comment
    assert "```mermaid\nxychart-beta" in comment
    assert "replays a synthetic one" in comment
    assert "2 cost centers, 3 budgets, 1 routing policies, 0 keys; 0 errors" in comment
    assert len(comment) < 65_536  # GitHub's limit for a comment body


def test_branch_protection_requires_what_the_workflow_reports() -> None:
    """The protection documented for auditors names exactly the statuses the workflow sets."""
    protection = json.loads((GITOPS / "branch-protection.json").read_text())
    assert protection["required_status_checks"]["contexts"] == ["spendgate/validate", "spendgate/dry-run"]
    reviews = protection["required_pull_request_reviews"]
    assert reviews["require_code_owner_reviews"] and reviews["dismiss_stale_reviews"]
    assert reviews["require_last_push_approval"] and reviews["required_approving_review_count"] >= 1
    assert protection["enforce_admins"] is True
    script = next(step["run"] for step in yaml.safe_load(WORKFLOW.read_text())["jobs"]["check"]["steps"]
                  if step.get("id") == "post")
    assert 'context="spendgate/$1"' in script and "status validate" in script and "status dry-run" in script
