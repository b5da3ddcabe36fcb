"""The image: hadolint-clean, bases pinned by digest, a numeric non-root user, and `spendgate` as the
entry point, whose subcommands are the ones the chart runs (and the tests run)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from cluster.controlplane import REPO_ROOT
from cluster.helm import render

# Tracked Dockerfiles only (a virtualenv may hold others).
DOCKERFILES = [REPO_ROOT / name for name in subprocess.run(
    ["git", "ls-files", "Dockerfile", "**/Dockerfile"], cwd=REPO_ROOT, capture_output=True, text=True,
    check=True).stdout.split()]


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), *map(str, DOCKERFILES)], capture_output=True, text=True)

    assert DOCKERFILES and result.returncode == 0, result.stdout + result.stderr


def test_bases_are_pinned_by_digest_and_the_user_is_numeric_and_not_root() -> None:
    for path in DOCKERFILES:
        steps = instructions(path)
        bases = [args.split()[0] for kind, args in steps if kind == "FROM"]
        assert bases and all(re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", base) for base in bases), bases
        users = [args for kind, args in steps if kind == "USER"]
        assert users and re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]), users


def test_the_chart_runs_the_images_entry_point_with_subcommands_that_exist() -> None:
    steps = instructions(REPO_ROOT / "Dockerfile")
    entry_point = json.loads(next(args for kind, args in steps if kind == "ENTRYPOINT"))
    rendered = [doc for doc in yaml.safe_load_all(render("sg", "injector.enabled=true",
                                                         "operator.bundleNamespaces={team}")) if doc]
    subcommands = {doc["metadata"]["name"]: doc["spec"]["template"]["spec"]["containers"][0]["args"][0]
                   for doc in rendered if doc["kind"] == "Deployment"}

    assert entry_point == ["spendgate"]
    assert subcommands == {"spendgate-operator": "operator", "spendgate-gateway": "proxy",
                           "spendgate-injector": "injector"}
    for subcommand in set(subcommands.values()):
        result = subprocess.run([sys.executable, "-m", "spendgate.cli", subcommand, "--help"], capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr
