"""`spendgate status`: every budget as `kubectl get budgets` shows it, without a cluster.

From a running gateway's admin port (`--admin URL`, its `/budgets`), or from the policies and the
proxy's state directory (`--policies DIR`, the spend journal); `--watch` prints again whenever
something changed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Final

from spendgate.adapters.journal import JOURNAL_NAME, default_state_dir, read_journal, totals
from spendgate.adapters.policyfiles import compile_directory
from spendgate.cli.budgetsource import SourceError, fetch, seconds
from spendgate.cli.common import Commands, UsageError, command
from spendgate.cli.output import Document, Section, Table, add_output_flag, render
from spendgate.logic.budgetview import BudgetViews, budget_views
from spendgate.logic.spend import format_money

COLUMNS: Final = ("NAME", "COSTCENTER", "SCOPE", "LIMIT", "SPENT", "USED", "STATE", "RESETS")
DEFAULT_PORT: Final = 8787


# status ----------------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    if (args.admin is None) == (args.policies is None):
        raise UsageError("pass --admin URL (a running gateway's admin port) or --policies DIR (read with the "
                         "proxy's --state-dir), one of them")
    if args.interval <= 0:
        raise UsageError(f"--interval must be positive, not {args.interval:g}")
    if not args.watch:
        try:
            views = _read(args)
        except SourceError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        sys.stdout.write(render(status_document(views, _source(args)), args.output))
        return 0
    _watch(args)
    return 0


def _watch(args: argparse.Namespace) -> None:
    """Print again whenever what would be printed changes (an error too, once), until interrupted."""
    shown = None
    while True:
        try:
            text = _watched(_read(args), args)
        except SourceError as error:
            text = f"error: {error}\n"
        if text != shown:
            sys.stdout.write(text)
            sys.stdout.flush()
            shown = text
        time.sleep(args.interval)


def _watched(views: BudgetViews, args: argparse.Namespace) -> str:
    if args.output == "json":  # JSON Lines: one document a change, for machines following along
        return json.dumps(views.model_dump(mode="json"), separators=(",", ":")) + "\n"
    return "\n" + render(status_document(views, _source(args)), args.output)


def _source(args: argparse.Namespace) -> str:
    if args.admin is not None:
        return str(args.admin)
    return f"{args.policies} and {_state_dir(args) / JOURNAL_NAME}"


def _read(args: argparse.Namespace) -> BudgetViews:
    if args.admin is not None:
        return fetch(args.admin.rstrip("/") + "/budgets", {}, args.timeout)
    return journal_views(args.policies, _state_dir(args) / JOURNAL_NAME, datetime.now(UTC))


def _state_dir(args: argparse.Namespace) -> Path:
    return args.state_dir if args.state_dir is not None else default_state_dir(args.port)


def journal_views(policies: Path, journal: Path, now: datetime) -> BudgetViews:
    """The policies' budgets with this proxy's journaled spend (standalone: all of it)."""
    if not journal.is_file():
        raise SourceError(f"no spend journal at {journal}: pass the proxy's --state-dir (or --port)")
    compiled = compile_directory(policies)
    if compiled.errors:
        raise SourceError(f"--policies {policies} does not compile ({len(compiled.errors)} errors; `spendgate "
                          f"validate {policies}` lists them): {compiled.errors[0]}")
    spent = totals(read_journal(journal).entries)

    def spent_in(budget: str, window: str) -> Decimal:
        found = spent.get((budget, window))
        return found.spent if found is not None else Decimal(0)

    return budget_views(compiled.bundle.bundle.budgets, spent_in, now)


def status_document(views: BudgetViews, source: str) -> Document:
    rows = [[view.id, view.costCenter, view.scope, format_money(Decimal(view.limitUSD)),
             format_money(Decimal(view.spentUSD)), view.percentUsed, view.state.value, view.windowEnd]
            for view in sorted(views.budgets, key=lambda view: view.id)]
    count = len(views.budgets)
    summary = f"{count} budget{'s' if count != 1 else ''} at {views.at} from {source}"
    table = Table(COLUMNS, rows, numeric=frozenset({3, 4, 5}))
    return Document(summary=summary, sections=[Section("Budgets", table=table)] if rows else [],
                    data=views.model_dump(mode="json"))


# registration ----------------------------------------------------------------------------------


def register(commands: Commands) -> None:
    status = command(commands, "status", _status,
                     "budgets as `kubectl get budgets` shows them, from a gateway or its state directory")
    source = status.add_argument_group("where from (one of)")
    source.add_argument("--admin", metavar="URL", help="a running gateway's admin port, e.g. http://127.0.0.1:8788")
    source.add_argument("--policies", type=Path, metavar="DIR",
                        help="the policies the proxy runs (standalone), with its spend journal from --state-dir")
    source.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="the proxy's --state-dir (default: $SPENDGATE_STATE_DIR, else "
                             "~/.local/state/spendgate/PORT)")
    source.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"the proxy's client port, for the default state directory (default {DEFAULT_PORT})")
    status.add_argument("--watch", "-w", action="store_true", help="print again whenever something changes")
    status.add_argument("--interval", type=seconds, default=2.0, metavar="SECONDS",
                        help="how often --watch looks (default %(default)s)")
    status.add_argument("--timeout", type=seconds, default=5.0, metavar="SECONDS",
                        help="for the admin port's answer (default %(default)s)")
    add_output_flag(status)
