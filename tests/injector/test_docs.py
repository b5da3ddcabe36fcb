"""Every flag of `spendgate injector` is in docs/injection.md's flag table, and the table names no
flag that does not exist."""

from __future__ import annotations

import argparse
import re

from cluster.controlplane import REPO_ROOT
from spendgate.cli import build_parser

FLAG = re.compile(r"--[a-z][a-z0-9-]*")
DOC = REPO_ROOT / "docs" / "injection.md"


def parser_flags() -> set[str]:
    commands = next(action for action in build_parser(requested="injector")._actions
                    if isinstance(action, argparse._SubParsersAction))
    return {option for action in commands.choices["injector"]._actions for option in action.option_strings
            if option.startswith("--") and option != "--help"}


def table_flags(text: str) -> set[str]:
    """The flags in the first column of the table whose first header is `flag`."""
    flags: set[str] = set()
    in_table = False
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        in_table = bool(cells) and (in_table or cells[0] == "flag")
        if in_table and cells[0] != "flag":
            flags |= set(FLAG.findall(cells[0]))
    return flags


def test_every_injector_flag_is_documented_and_every_documented_flag_exists() -> None:
    real, documented = parser_flags(), table_flags(DOC.read_text())

    assert real and sorted(real - documented) == [] and sorted(documented - real) == []
