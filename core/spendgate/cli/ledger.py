"""`spendgate ledger synth`: a realistic, reproducible synthetic ledger for demos, tests and benchmarks."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from spendgate.adapters.ledgerfiles import STDIN, write_ledger
from spendgate.adapters.policyfiles import compile_directory
from spendgate.cli import ledgerstore
from spendgate.cli.common import Commands, UsageError, command, group
from spendgate.logic.spend import to_cents
from spendgate.logic.synth import SynthSettings, synthesize, top_decile_share

DEFAULT_POLICIES = Path("examples/policies")


def _synth(args: argparse.Namespace) -> int:
    compiled = compile_directory(args.policies, args.keys_file)
    if compiled.errors:
        raise UsageError(f"--policies {args.policies} does not compile: " + "; ".join(map(str, compiled.errors)))
    if not compiled.bundle.bundle.costCenters:
        raise UsageError(f"--policies {args.policies}: no CostCenter to attribute traffic to (is it a policy "
                         "directory? the default is examples/policies, relative to the repository root)")
    start = args.start or (datetime.now(UTC).date() - timedelta(days=args.days))
    settings = SynthSettings(start=start, days=args.days, developers=args.developers, seed=args.seed,
                             requests=args.requests)
    requests, total, spend = 0, Decimal(0), defaultdict[str, Decimal](Decimal)
    for record in write_ledger(synthesize(compiled.bundle, settings), args.out):
        requests += 1
        total += record.cost
        spend[record.developer or ""] += record.cost
    where = "standard output" if args.out == STDIN else args.out
    print(f"{requests} requests of {len(spend)} developers from {start} for {args.days} days, "
          f"${to_cents(total)} (top 10% of developers: {top_decile_share(spend):.0%} of it), seed {args.seed}, "
          f"policies {args.policies} (bundle {compiled.bundle.version}) -> {where}", file=sys.stderr)
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-01") from None


def register(commands: Commands) -> None:
    ledger = group(commands, "ledger", "request ledgers")
    synth = command(ledger, "synth", _synth,
                    "write a realistic, reproducible synthetic ledger (the real format) for the given policies")
    synth.add_argument("--days", type=_positive, default=30, help="days of traffic (default 30)")
    synth.add_argument("--developers", type=_positive, default=40, help="developers (default 40)")
    synth.add_argument("--seed", type=int, default=1, help="the same seed gives the same ledger (default 1)")
    synth.add_argument("--start", type=_date, help="first day, YYYY-MM-DD (default: --days before today, UTC)")
    synth.add_argument("--requests", type=_positive,
                       help="about this many requests (default: about 115 per developer and working day)")
    synth.add_argument("--policies", type=Path, default=DEFAULT_POLICIES,
                       help="policy directory: its cost centers, developers, repositories and decisions "
                            "(default examples/policies)")
    synth.add_argument("--keys-file", type=Path, help="standalone keys file beside the policies, if any")
    synth.add_argument("--out", default=STDIN, help="ledger file to write (.gz compresses; default: standard output)")
    ledgerstore.add_actions(ledger)
