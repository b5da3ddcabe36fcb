"""What every command module shares: how a command is declared, and the one error type for bad input."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

from rich_argparse import RawDescriptionRichHelpFormatter

# The `add_parser` handle of a command group.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler = Callable[[argparse.Namespace], int]


class HelpFormatter(RawDescriptionRichHelpFormatter):
    """rich-argparse's colours, our own group titles (it would title-case "docs/proxy.md" into "Docs/Proxy.Md")."""

    group_name_formatter = str


class UsageError(Exception):
    """Bad input from the user; `spendgate` prints the message as one line and exits 2."""


def command(group: Commands, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    """A subcommand whose `handler(args)` returns the exit status."""
    sub: argparse.ArgumentParser = group.add_parser(name, help=help_text, description=help_text,
                                                    formatter_class=HelpFormatter)
    sub.set_defaults(handler=handler)
    return sub


def group(commands: Commands, name: str, help_text: str) -> Commands:
    """A command with actions of its own (`spendgate keys create`)."""
    parser = commands.add_parser(name, help=help_text, description=help_text,
                                 formatter_class=HelpFormatter)
    actions: Commands = parser.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")
    return actions
