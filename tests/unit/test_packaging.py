"""The import names must not shadow the standard library (issue 3, section 1)."""

import importlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_stdlib_operator_and_ours_import_side_by_side() -> None:
    import operator

    ours = importlib.import_module("spendgate.operator")
    assert operator.add(2, 3) == 5
    assert Path(operator.__file__).parent.name.startswith("python3")
    assert Path(ours.__file__).is_relative_to(REPO / "operator")


def test_stdlib_operator_wins_when_run_from_the_repository_root() -> None:
    """`python -c` puts the working directory first on sys.path: the folder must not shadow."""
    code = "import operator, spendgate.operator, spendgate.proxy; print(operator.itemgetter(1)([0, 'ok']))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "ok"


def test_console_script_is_installed() -> None:
    result = subprocess.run([sys.executable, "-m", "spendgate.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "validate" in result.stdout
