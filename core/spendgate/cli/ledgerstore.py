"""`spendgate ledger compact | load`: keeping ledgers (compacted Parquet days, or PostgreSQL)."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from spendgate.adapters.ledgerduck import EARLIEST, LATEST, LedgerFiles, compact
from spendgate.adapters.ledgerfiles import LedgerError
from spendgate.adapters.ledgerpostgres import IngestResult, LedgerConflict, PostgresLedgerWriter
from spendgate.cli.common import Commands, UsageError, command

DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
LOAD_BATCH = 10_000


def duration(text: str) -> timedelta:
    matched = DURATION.match(text.strip())
    if matched is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90m, 1h or 2d")
    return timedelta(**{UNITS[matched.group(2)]: int(matched.group(1))})


def instant(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time like 2026-12-01T06:00:00Z") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (add Z)")
    return parsed.astimezone(UTC)


@contextmanager
def readable_errors() -> Iterator[None]:
    """Ledger, report and database failures as one UsageError each: the CLI prints it and exits 2."""
    try:
        yield
    except (LedgerError, ValueError) as error:  # ValueError: ReportError, ReconcileError and bad values
        raise UsageError(str(error)) from None
    except psycopg.Error as error:  # never the DSN: psycopg's messages name the host, not the password
        text = str(error).strip()
        raise UsageError(f"PostgreSQL: {text.splitlines()[0] if text else type(error).__name__}") from None
    except OSError as error:
        raise UsageError(f"{error.filename or ''}: {error.strerror or error}") from None


def _default_out(ledgers: list[str]) -> Path:
    folders = [Path(given) for given in ledgers if Path(given).is_dir()]
    if not folders:
        raise UsageError("--out is needed when no ledger directory is given (where do the compacted days go?)")
    return folders[0] / "compacted"


def _compact(args: argparse.Namespace) -> int:
    out = args.out or _default_out(args.ledgers)
    with readable_errors():
        result = compact(args.ledgers, out, args.now or datetime.now(UTC), args.grace)
    for day in result.days:
        state = "written" if day.written else "unchanged"
        print(f"{day.day}\t{day.records} records\t{state}\t{out / f'day={day.day}' / 'ledger.parquet'}")
    open_days = ", ".join(str(day) for day in result.open_days) or "none"
    print(f"# {sum(day.written for day in result.days)} days written, "
          f"{sum(not day.written for day in result.days)} unchanged; left open (not closed yet): {open_days}",
          file=sys.stderr)
    return 0


def _load(args: argparse.Namespace) -> int:
    with readable_errors():
        store = LedgerFiles(args.ledgers, skip_bad_lines=args.skip_bad_lines)
        store.load(EARLIEST, LATEST, keep_lines=True)
        for problem in store.skipped:
            print(f"warning: skipped {problem}", file=sys.stderr)
        result = asyncio.run(_store(args.postgres, store))
    print(f"{result.inserted} records stored, {result.duplicates} already there "
          f"({store.describe()} -> PostgreSQL)", file=sys.stderr)
    if result.conflicts:
        raise UsageError(str(LedgerConflict(result.conflicts)))
    return 0


async def _store(dsn: str, store: LedgerFiles) -> IngestResult:
    writer = await PostgresLedgerWriter.connect(dsn)
    total = IngestResult()
    try:
        await writer.migrate()
        lines = store.db.execute("SELECT line FROM ledger_records ORDER BY time, request_id")
        while batch := lines.fetchmany(LOAD_BATCH):
            total += await writer.insert([line.encode() for (line,) in batch])
    finally:
        await writer.close()
    return total


def add_actions(ledger: Commands) -> None:
    """`compact` and `load`, beside the other `ledger` actions."""
    compacting = command(ledger, "compact", _compact,
                         "turn closed UTC days of JSON-lines ledgers into Parquet, one file per day")
    compacting.add_argument("ledgers", nargs="+", metavar="PATH", help="ledger files or directories")
    compacting.add_argument("--out", type=Path, help="where the days go (default: compacted/ in the first directory)")
    compacting.add_argument("--grace", type=duration, default=timedelta(hours=1),
                            help="a UTC day is closed this long after it ends (default 1h: a stream's line is "
                                 "written when it ends, under the time it arrived)")
    compacting.add_argument("--now", type=instant, help="compact as if it were this time (default: now)")
    loading = command(ledger, "load", _load, "store ledger records in PostgreSQL, each request once")
    loading.add_argument("ledgers", nargs="+", metavar="PATH", help="ledger files or directories")
    loading.add_argument("--postgres", required=True, metavar="DSN",
                         help="e.g. postgresql://spendgate@db:5432/spendgate (the password from PGPASSWORD or "
                              "~/.pgpass, not the command line)")
    loading.add_argument("--skip-bad-lines", action="store_true",
                         help="leave out lines that are not valid records (each is listed) instead of failing")
