"""Every flag of `spendgate proxy`, `spendgate operator` and `spendgate injector` is in its docs' flag
table, and the tables name no flag that does not exist: a flag added without docs fails here."""

from __future__ import annotations

import argparse
import re

import pytest

from cluster.controlplane import REPO_ROOT
from spendgate.cli import build_parser

FLAG = re.compile(r"--[a-z][a-z0-9-]*")
DOCS = {"proxy": REPO_ROOT / "docs" / "proxy.md", "operator": REPO_ROOT / "docs" / "operator.md",
        "injector": REPO_ROOT / "docs" / "injection.md"}


def parser_flags(command: str) -> set[str]:
    commands = next(action for action in build_parser(requested=command)._actions
                    if isinstance(action, argparse._SubParsersAction))
    return {option for action in commands.choices[command]._actions for option in action.option_strings
            if option.startswith("--") and option != "--help"}


def documented_flags(text: str) -> set[str]:
    """The flags in the first column of every table whose first header is `flag`."""
    flags: set[str] = set()
    in_table = False
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if not cells:
            in_table = False
        elif cells[0] == "flag":
            in_table = True
        elif in_table:
            flags |= set(FLAG.findall(cells[0]))
    return flags


@pytest.mark.parametrize("command", sorted(DOCS))
def test_every_flag_is_documented_and_every_documented_flag_exists(command: str) -> None:
    real, documented = parser_flags(command), documented_flags(DOCS[command].read_text())

    assert real, f"no flags found for spendgate {command}"
    assert sorted(real - documented) == [], f"flags of `spendgate {command}` missing from {DOCS[command].name}"
    assert sorted(documented - real) == [], f"{DOCS[command].name} documents flags `spendgate {command}` lacks"


def test_a_flag_missing_from_the_table_is_noticed() -> None:
    table = "| flag | default | meaning |\n|---|---|---|\n| `--host`, `--port` | | |\n\n`--ledger` in prose\n"

    assert documented_flags(table) == {"--host", "--port"}
