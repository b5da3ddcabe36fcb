"""`spendgate diff BASE HEAD`: a policy change in policy terms ("alice-daily: limit $40.00 -> $60.00")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spendgate.adapters.policysource import PolicySet, PolicySourceError, open_policies
from spendgate.cli.common import Commands, UsageError, command
from spendgate.cli.output import Document, Section, add_output_flag, render
from spendgate.logic.policydiff import SECTIONS, PolicyChange, diff_bundles

KIND_TITLES = {"Budget": "Budgets", "RoutingPolicy": "Routing policies", "CostCenter": "Cost centers",
               "VirtualKeys": "Virtual keys"}


def add_source_arguments(parser: argparse.ArgumentParser, options: bool = False) -> None:
    """BASE and HEAD (or --base and --head): directories, or Git revisions (`REV:PATH`, or `REV` with --repo)."""
    helps = ("the policies before: a directory, or REV:PATH of a Git repository",
             "the policies after: a directory, or REV:PATH")
    for name, help_text in zip(("base", "head"), helps, strict=True):
        if options:
            parser.add_argument(f"--{name}", required=True, help=help_text)
        else:
            parser.add_argument(name, help=help_text)
    parser.add_argument("--repo", type=Path, help="Git repository: BASE and HEAD are revisions in it (REV or REV:PATH)")
    parser.add_argument("--path", default="", help="with --repo and a bare REV: the policy folder (default: all)")


def open_both(args: argparse.Namespace) -> tuple[PolicySet, PolicySet]:
    """Both sides loaded and compiled; any error on either side stops the command with every error listed."""
    sides = []
    for spec in (args.base, args.head):
        if args.repo is not None and ":" not in spec and args.path:
            spec = f"{spec}:{args.path}"
        try:
            sides.append(open_policies(spec, args.repo))
        except PolicySourceError as error:
            raise UsageError(str(error)) from None
    problems = [f"{side.label}: {problem}" if not problem.startswith(side.label) else problem
                for side in sides for problem in side.problems]
    if problems:
        raise UsageError("the policies do not compile; fix these first:\n" + "\n".join(problems))
    return sides[0], sides[1]


def diff_document(base: PolicySet, head: PolicySet, changes: list[PolicyChange]) -> Document:
    summary = (f"spendgate diff: {_count(changes)} in {base.label} -> {head.label}" if changes
               else f"spendgate diff: no policy change in {base.label} -> {head.label}")
    sections = [Section(KIND_TITLES[kind], lines=[str(c) for c in changes if c.kind == kind])
                for kind in SECTIONS if any(c.kind == kind for c in changes)]
    data = {"base": {"source": base.label, "bundle": base.result.bundle.version},
            "head": {"source": head.label, "bundle": head.result.bundle.version},
            "changes": [{"kind": c.kind, "subject": c.subject, "change": c.text} for c in changes]}
    return Document(summary=summary, sections=sections, data=data)


def _count(changes: list[PolicyChange]) -> str:
    return f"{len(changes)} change" + ("s" if len(changes) != 1 else "")


def _diff(args: argparse.Namespace) -> int:
    base, head = open_both(args)
    changes = diff_bundles(base.result.bundle.bundle, head.result.bundle.bundle)
    sys.stdout.write(render(diff_document(base, head, changes), args.output))
    return 0


def register(commands: Commands) -> None:
    diff = command(commands, "diff", _diff, "show a policy change in policy terms (exit 2 if either side is invalid)")
    add_source_arguments(diff)
    add_output_flag(diff)
