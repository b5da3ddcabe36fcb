"""The README's pull-request comment is what the commands shown above it print, so it cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spendgate.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_dry_run_sample_is_current(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    sample = re.search(r"<!-- dry-run sample: begin[^\n]*-->\n(.*)<!-- dry-run sample: end -->", readme, re.S)
    commands = re.search(r"```sh\n(spendgate ledger synth [^\n]*)\n(spendgate dry-run [^\n]*)\n```", readme)
    assert sample and commands
    monkeypatch.chdir(ROOT)
    ledger = tmp_path / "synthetic.jsonl"
    for line in commands.groups():
        arguments = line.split()[1:]
        arguments = [str(ledger) if argument == "var/synthetic.jsonl" else argument for argument in arguments]
        assert main(arguments) == 0
    assert capsys.readouterr().out == sample.group(1)
