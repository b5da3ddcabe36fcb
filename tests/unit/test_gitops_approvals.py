"""The merged pull request's approval reaches the audit trail: `spendgate audit approvals` on GitHub's own
responses (tests/unit/github/: GET .../pulls/12 and `gh api --paginate` of its reviews, shaped as GitHub
documents them), and examples/gitops' approvals workflow run as written (its steps' scripts, read from the
YAML) in throwaway Git repositories, with a stand-in for `gh`, up to the documented `audit export`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendgate.cli import main
from spendgate.logic import audit

ROOT = Path(__file__).resolve().parents[2]
GITHUB = Path(__file__).resolve().parent / "github"
WORKFLOW = ROOT / "examples" / "gitops" / ".github" / "workflows" / "spendgate-approvals.yaml"
STEPS = ("github", "approvals", "record")
MERGE = "e5bd3914e2e596debea16f433f57875b5b90bcd6"
HEAD = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
PULL = json.loads((GITHUB / "pull-12.json").read_text())


def approvals(capsys: pytest.CaptureFixture[str], pull: Path, reviews: Path) -> tuple[int, dict[str, Any] | None, str]:
    code = main(["audit", "approvals", "--pull-request", str(pull), "--reviews", str(reviews)])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out else None, captured.err


def test_the_approvers_are_who_approved_the_merged_head(capsys: pytest.CaptureFixture[str]) -> None:
    """priya's first approval was dismissed by the second push and given again; bob asked for changes, then
    approved the head; tomas approved the first push only; marek, a deleted account and a pending review take
    no position."""
    code, entry, _ = approvals(capsys, GITHUB / "pull-12.json", GITHUB / "reviews-12.json")
    assert code == 0 and entry == {
        "revision": MERGE, "pullRequest": "https://github.com/acme/policies/pull/12", "number": 12,
        "author": "dana", "headSha": HEAD, "mergedAt": "2026-11-30T15:12:08Z", "mergedBy": "priya",
        "approvers": ["bob", "priya"], "staleApprovers": ["tomas"],
    }


def test_a_pull_request_event_is_read_like_the_pull_request(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "closed", "number": 12, "pull_request": PULL}))
    assert approvals(capsys, event, GITHUB / "reviews-12.json")[1] == approvals(
        capsys, GITHUB / "pull-12.json", GITHUB / "reviews-12.json")[1]


def test_a_merge_without_an_approval_of_its_last_push_is_recorded_and_exit_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first_page = tmp_path / "reviews.json"
    first_page.write_text(re.split(r"(?<=\])\[", (GITHUB / "reviews-12.json").read_text())[0])
    code, entry, err = approvals(capsys, GITHUB / "pull-12.json", first_page)
    assert code == 1 and entry is not None and entry["approvers"] == [] and entry["staleApprovers"] == ["tomas"]
    assert f"merged as {MERGE} without an approval of its last push {HEAD}" in err


@pytest.mark.parametrize(("pull", "reviews", "message"), [
    ({**PULL, "merged_at": None, "merged": False}, "[]", "pull request #12 is not merged"),
    ({**PULL, "head": {"ref": "raise-alice"}}, "[]", "pull request: head.sha must be a non-empty string, got null"),
    ([PULL], "[]", "pull request: expected an object"),
    (PULL, '{"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}',
     "reviews page 1: expected a list of reviews"),
    (PULL, '[{"state": "APPROVED", "user": {"login": "bob"}, "commit_id": 7}]', "item 1: commit_id must be"),
    (PULL, '[]\n[{"state": "LGTM", "user": null, "commit_id": null}]', "reviews page 2 item 1: state must be"),
    (PULL, '[{"state": "APPROVED", "user": "bob", "commit_id": null}]', "user must be an object with a login"),
    (PULL, "[{", "not JSON at line 1 column 3"),
    (PULL, "", "empty (expected GitHub's JSON)"),
])
def test_bad_input_is_named_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], pull: Any, reviews: str,
                                       message: str) -> None:
    (tmp_path / "pull.json").write_text(json.dumps(pull))
    (tmp_path / "reviews.json").write_text(reviews)
    code, entry, err = approvals(capsys, tmp_path / "pull.json", tmp_path / "reviews.json")
    assert code == 2 and entry is None and message in err


def test_unreadable_and_doubled_files_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert approvals(capsys, tmp_path / "missing.json", GITHUB / "reviews-12.json")[2].count("cannot be read") == 1
    (tmp_path / "two.json").write_text(json.dumps(PULL) * 2)
    assert "expected one pull request, got 2" in approvals(capsys, tmp_path / "two.json", GITHUB / "reviews-12.json")[2]


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(["pull", "review"]), field=st.sampled_from(
    ["number", "html_url", "head", "user", "merged_at", "merge_commit_sha", "merged_by", "state", "commit_id"]),
       value=JSON_VALUES)
def test_any_value_anywhere_is_an_entry_or_a_named_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        where: str, field: str, value: Any) -> None:
    """A failure class: whatever GitHub's documents hold, exit 0 or 1 with an entry, or 2 with a message."""
    pull, reviews = dict(PULL), json.loads(re.split(r"(?<=\])\[", (GITHUB / "reviews-12.json").read_text())[0])
    (pull if where == "pull" else reviews[0])[field] = value
    (tmp_path / "pull.json").write_text(json.dumps(pull))
    (tmp_path / "reviews.json").write_text(json.dumps(reviews))
    code, entry, err = approvals(capsys, tmp_path / "pull.json", tmp_path / "reviews.json")
    assert (code in (0, 1) and entry is not None) or (code == 2 and err.startswith("error: ") and err.count("\n") == 1)
    assert entry is None or all(isinstance(login, str) for login in entry["approvers"] + entry["staleApprovers"])


# the workflow, run as written --------------------------------------------------------------------------


FAKE_GH = '''#!{python}
"""Answers the two calls the workflow makes with GitHub's documented responses; anything else fails."""
import os, sys
pulls = "repos/acme/policies/pulls/" + os.environ["PR"]
answers = {{("api", pulls): "pull.json", ("api", "--paginate", pulls + "/reviews"): "reviews.json"}}
name = answers.get(tuple(sys.argv[1:]))
if name is None:
    sys.exit("gh (test stand-in): unexpected call " + " ".join(sys.argv[1:]))
sys.stdout.write(open(os.path.join(os.environ["GITHUB_ANSWERS"], name)).read())
'''


def git(repo: Path, *arguments: str) -> str:
    identity = ["-c", "user.email=dev@example.com", "-c", "user.name=dev"]
    return subprocess.run(["git", "-C", str(repo), *identity, *arguments], check=True, capture_output=True,
                          text=True).stdout.strip()


def merged(origin: Path, tmp_path: Path, name: str, change: str) -> str:
    """A merge to main on the origin (as GitHub makes it), returning its revision."""
    work = tmp_path / "merges"
    if not work.exists():
        git(tmp_path, "clone", "-q", str(origin), work.name)
    (work / "policies").mkdir(exist_ok=True)
    (work / "policies" / "budgets.yaml").write_text(change)
    git(work, "add", "-A")
    git(work, "commit", "-qm", name)
    git(work, "push", "-q", "origin", "HEAD:main")
    return git(work, "rev-parse", "HEAD")


def run_steps(checkout: Path, tmp_path: Path, pull: int, revision: str) -> dict[str, dict[str, str]]:
    """The workflow's steps in a runner's checkout, `gh` answering for pull request `pull` merged as `revision`."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = {step["id"]: step for step in workflow["jobs"]["record"]["steps"] if "id" in step}
    assert list(steps) == list(STEPS)
    answers = tmp_path / f"github-{pull}"
    answers.mkdir()
    (answers / "pull.json").write_text(json.dumps({**PULL, "number": pull, "merge_commit_sha": revision}))
    shutil.copy(GITHUB / "reviews-12.json", answers / "reviews.json")
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    (tools / "gh").write_text(FAKE_GH.format(python=sys.executable))
    (tools / "gh").chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "REPO": "acme/policies", "PR": str(pull), "NOTES": workflow["env"]["NOTES"], "GITHUB_ANSWERS": str(answers)}
    outputs: dict[str, dict[str, str]] = {}
    for step_id in STEPS:
        step = steps[step_id]
        step_env = dict(env)
        for name, value in dict(step.get("env") or {}).items():
            step_env[name] = _expression(str(value), outputs)
        output_file = tmp_path / "github-output"
        output_file.write_text("")
        step_env["GITHUB_OUTPUT"] = str(output_file)
        subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", str(step["run"])], cwd=checkout,
                       env=step_env, check=True)  # GitHub's own `shell: bash`
        outputs[step_id] = dict(line.split("=", 1) for line in output_file.read_text().splitlines() if "=" in line)
    return outputs


def _expression(value: str, outputs: dict[str, dict[str, str]]) -> str:
    """The step-level expressions: `${{ steps.<id>.outputs.<name> }}` (others are GitHub's, set in `env`)."""
    if value.startswith("${{ steps."):
        step, _, name = value.removeprefix("${{ steps.").removesuffix(" }}").partition(".outputs.")
        return outputs[step][name]
    return value


def test_the_workflow_runs_on_merges_only_and_writes_nothing_but_the_note() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    trigger = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert trigger["pull_request"] == {"types": ["closed"], "branches": ["main"], "paths": ["policies/**"]}
    assert "github.event.pull_request.merged == true" in workflow["jobs"]["record"]["if"]
    assert workflow["permissions"] == {"contents": "write", "pull-requests": "read"}
    assert workflow["env"]["NOTES"] == "refs/notes/spendgate-approvals"


def test_a_merged_pull_requests_approval_reaches_the_audit_export(tmp_path: Path) -> None:
    """Two merges recorded by two runs whose pushes race: both notes land, neither commit on main changes, and
    the documented export joins the approvals to the operator's records by revision."""
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    earlier = merged(origin, tmp_path, "earlier", "limitUSD: 40\n")
    first = merged(origin, tmp_path, "first", "limitUSD: 60\n")
    git(tmp_path, "clone", "-q", str(origin), "runner-1")
    outputs = run_steps(tmp_path / "runner-1", tmp_path, 12, first)
    assert outputs["approvals"]["status"] == "0"

    second = merged(origin, tmp_path, "second", "limitUSD: 80\n")
    git(tmp_path, "clone", "-q", str(origin), "runner-2")
    racer = tmp_path / "runner-1"  # the first run's notes move on while the second run pushes
    hook = tmp_path / "runner-2" / ".git" / "hooks" / "pre-push"
    earlier_note = json.dumps({"revision": earlier, "pullRequest": "https://github.com/acme/policies/pull/11",
                               "approvers": ["carol"]})
    hook.write_text(f"#!/bin/sh\nunset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE\n[ -e {tmp_path}/raced ] && exit 0\n"
                    f"touch {tmp_path}/raced\n"
                    f"git -C {racer} -c user.email=bot@example.com -c user.name=bot notes --ref=spendgate-approvals "
                    f"add -m '{earlier_note}' {earlier}\n"
                    f"git -C {racer} push -q origin refs/notes/spendgate-approvals\n")
    hook.chmod(0o755)
    run_steps(tmp_path / "runner-2", tmp_path, 13, second)
    assert (tmp_path / "raced").exists()
    assert git(origin, "log", "--format=%H", "main").split() == [second, first, earlier]  # none of ours on main

    auditor = tmp_path / "auditor"
    git(tmp_path, "clone", "-q", str(origin), auditor.name)
    log = auditor / "audit-2026-11.jsonl"
    budget = audit.subject("Budget", "ai-budgets", "alice-daily", "uid-1")
    changes = [audit.policy_change(datetime(2026, 11, 30, 15, 13, tzinfo=UTC), budget, audit.PolicyChange(
        "updated", generation, None, "sha256:" + str(generation) * 64, revision=revision,
        application="spendgate-policies", by="argocd-controller"))
        for generation, revision in ((2, first), (3, second))]
    log.write_text("".join(json.dumps(record) + "\n" for record in audit.chain(changes, audit.Head())))
    docs = (ROOT / "docs" / "gitops.md").read_text()
    documented = re.search(r"## Approvals in the audit trail.*?```sh\n(.*?)```", docs, re.S)
    assert documented is not None
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = documented.group(1).strip() + " --output json"
    shown = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=auditor, env=env, check=True,
                           capture_output=True, text=True).stdout
    rows = {row["revision"]: row for row in json.loads(shown)["changes"]}
    assert rows[first]["approvers"] == rows[second]["approvers"] == "bob, priya"
    assert rows[first]["pullRequest"] == "https://github.com/acme/policies/pull/12"
    notes = (auditor / "approvals.jsonl").read_text()
    assert "pull/11" in notes and notes.count('"approvers": ["bob", "priya"]') == 2  # the race lost no note
