"""`spendgate operator` as a command: its flags, and a clear refusal without credentials."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def spendgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spendgate.cli", *args], capture_output=True, text=True, timeout=60)


def test_the_flags_are_documented() -> None:
    result = spendgate("operator", "--help")

    assert result.returncode == 0
    for flag in ("--namespace", "--policy-namespace", "--bundle-namespace", "--peering", "--metrics-port"):
        assert flag in result.stdout


def test_missing_credentials_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    result = spendgate("operator", "--kubeconfig", str(tmp_path / "missing"), "--metrics-port", "0")

    assert result.returncode == 2
    assert result.stderr.startswith("error: no Kubernetes credentials:")
    assert "Traceback" not in result.stderr
