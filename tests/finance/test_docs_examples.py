"""Every command in docs/chargeback.md's `sh` blocks runs as a new user would run it from the repository root
(here: a scratch directory holding the repository's examples, so var/ stays the test's own)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "chargeback.md"


def documented_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_doc_has_examples_of_every_command() -> None:
    commands = " ".join(documented_commands())
    for name in ("ledger synth", "ledger compact", "chargeback", "--output csv", "--output focus", "reconcile"):
        assert f"spendgate {name}" in commands or name in commands


def test_every_documented_command_runs(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(REPO_ROOT / "examples")
    environment = {**os.environ, "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    for command in documented_commands():
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=environment, capture_output=True,
                                text=True, timeout=300)
        if result.returncode != 0:
            pytest.fail(f"{command}\nexit {result.returncode}\n{result.stderr[-2000:]}")
    assert (tmp_path / "var" / "finance" / "chargeback-2026-11.csv").read_text(encoding="utf-8-sig").startswith(
        "period,basis,row_type,")
