"""What every command module shares: how a command is declared, and the one error type for bad input."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
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


# The operator's default namespace: its key Secrets and its audit log live there.
OPERATOR_NAMESPACE = "spendgate-system"
DURATION = re.compile(r"^(\d+)([smhd]?)$")
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """An argparse type: `30s`, `15m`, `24h`, `7d` (a bare number is seconds)."""
    match = DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 24h or 7d")
    return timedelta(seconds=int(match.group(1)) * DURATION_UNITS[match.group(2)])


def kubernetes_arguments(parser: argparse._ActionsContainer) -> None:
    """The flags every command that talks to a cluster takes."""
    parser.add_argument("--kubeconfig", type=Path, help="default: in-cluster, then $KUBECONFIG or ~/.kube/config")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
