"""`spendgate ledger compact`: closed UTC days into Parquet, one file per day; never a record lost or counted
twice, whatever runs again, arrives late or is rotated away."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from finance.ledgerlines import line, write
from spendgate.adapters.ledgerduck import LedgerFiles, compact
from spendgate.adapters.ledgerfiles import LedgerError, read_ledgers
from spendgate.logic.usage import Month

NOVEMBER = Month(2026, 11)
HOUR = timedelta(hours=1)


def total(paths: list[Path]) -> tuple[int, Decimal]:
    store = LedgerFiles(paths)
    store.load(NOVEMBER.start, NOVEMBER.end)
    rows = store.usage(NOVEMBER.start, NOVEMBER.end, ())
    return (rows[0].totals.records, rows[0].totals.cost) if rows else (0, Decimal(0))


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    folder = tmp_path / "ledger"
    write(folder / "ledger.jsonl.1", line("req_1", time="2026-11-23T10:00:00Z", cost="1.5"),
          line("req_2", time="2026-11-23T23:59:59.999999Z", cost="0.25"))
    write(folder / "ledger.jsonl", line("req_3", time="2026-11-24T00:00:00Z", cost="2"),
          line("req_4", time="2026-11-24T12:00:00Z", cost="0.000000015"))
    return folder


def test_only_closed_days_are_compacted_and_a_second_run_writes_nothing(ledger: Path) -> None:
    out = ledger / "compacted"

    first = compact([ledger], out, datetime(2026, 11, 25, 0, 30, tzinfo=UTC), HOUR)

    assert [(day.day.isoformat(), day.records, day.written) for day in first.days] == [("2026-11-23", 2, True)]
    assert [day.isoformat() for day in first.open_days] == ["2026-11-24"]  # it ended 30 minutes ago: in grace
    written = out / "day=2026-11-23" / "ledger.parquet"
    stamp = written.stat().st_mtime_ns

    again = compact([ledger], out, datetime(2026, 11, 25, 0, 30, tzinfo=UTC), HOUR)

    assert again.days == []  # the rotated file is listed as compacted: nothing to read, nothing to write
    assert written.stat().st_mtime_ns == stamp
    (out / "sources.json").unlink()  # without the list, the day is read again, and found unchanged
    assert [(day.records, day.written) for day in compact([ledger], out, datetime(2026, 11, 25, 0, 30, tzinfo=UTC),
                                                           HOUR).days] == [(2, False)]
    assert written.stat().st_mtime_ns == stamp
    assert total([ledger]) == (4, Decimal("3.750000015"))  # the JSON lines and the compacted day, each once


def test_compacted_days_keep_every_record_after_the_proxy_rotates_the_json_lines_away(ledger: Path) -> None:
    out = ledger / "compacted"
    compact([ledger], out, datetime(2026, 11, 25, 1, 0, tzinfo=UTC), HOUR)
    for rotated in ledger.glob("ledger.jsonl*"):
        rotated.unlink()

    assert total([ledger]) == (4, Decimal("3.750000015"))
    records = read_ledgers([ledger]).records  # the shared reader (dry-run) reads the compacted days too
    assert [record.request_id for record in records] == ["req_1", "req_2", "req_3", "req_4"]
    assert sorted(path.parent.name for path in out.rglob("*.parquet")) == ["day=2026-11-23", "day=2026-11-24"]


def test_a_line_that_arrives_late_for_a_compacted_day_is_counted_and_joins_the_day_next_time(ledger: Path) -> None:
    out = ledger / "compacted"
    compact([ledger], out, datetime(2026, 11, 25, 1, 0, tzinfo=UTC), HOUR)
    write(ledger / "other-proxy.jsonl", line("req_late", time="2026-11-23T18:00:00Z", cost="4"))

    assert total([ledger]) == (5, Decimal("7.750000015"))
    result = compact([ledger], out, datetime(2026, 11, 25, 1, 0, tzinfo=UTC), HOUR)

    assert [(day.day.isoformat(), day.records, day.written) for day in result.days] == [("2026-11-23", 3, True)]
    (ledger / "other-proxy.jsonl").unlink()
    assert total([ledger]) == (5, Decimal("7.750000015"))


def test_a_compacted_record_that_differs_from_its_line_fails_loudly(ledger: Path) -> None:
    out = ledger / "compacted"
    compact([ledger], out, datetime(2026, 11, 25, 1, 0, tzinfo=UTC), HOUR)
    (ledger / "ledger.jsonl.1").write_bytes((ledger / "ledger.jsonl.1").read_bytes().replace(b'"1.5"', b'"1.6"'))

    with pytest.raises(LedgerError, match="compacted records differ from the JSON lines of the same requests: req_1"):
        total([ledger])
    with pytest.raises(LedgerError, match="compacted records differ"):
        compact([ledger], out, datetime(2026, 11, 25, 1, 0, tzinfo=UTC), HOUR)


def test_a_partial_file_left_by_a_crash_is_not_read(ledger: Path) -> None:
    out = ledger / "compacted"
    compact([ledger], out, datetime(2026, 11, 25, 1, 0, tzinfo=UTC), HOUR)
    (out / "day=2026-11-23" / ".ledger.parquet.4242.partial").write_bytes(b"PAR1 half written")

    assert total([ledger]) == (4, Decimal("3.750000015"))


def test_json_lines_files_all_compacted_are_not_read_again_until_they_change(ledger: Path) -> None:
    out = ledger / "compacted"
    compact([ledger], out, datetime(2026, 11, 25, 0, 30, tzinfo=UTC), HOUR)  # only the 23rd is closed

    store = LedgerFiles([ledger])
    assert [Path(name).name for name in store.compacted_files] == ["ledger.jsonl.1"]
    assert store.describe() == ("ledger files: 1 JSON-lines file and 1 compacted day and 1 JSON-lines file "
                                "already compacted")
    assert total([ledger]) == (4, Decimal("3.750000015"))

    (ledger / "ledger.jsonl.1").rename(ledger / "ledger.jsonl.2")  # rotation renames: still known
    assert len(LedgerFiles([ledger]).compacted_files) == 1
    write(ledger / "late.jsonl", line("req_5", time="2026-11-23T11:00:00Z", cost="1"))
    with (ledger / "ledger.jsonl.2").open("ab") as handle:  # a file written to again is read again
        handle.write(b"\n")
    assert LedgerFiles([ledger]).compacted_files == []
    assert total([ledger]) == (5, Decimal("4.750000015"))


def test_a_listed_file_whose_compacted_day_is_missing_is_read_again(ledger: Path) -> None:
    out = ledger / "compacted"
    compact([ledger], out, datetime(2026, 11, 25, 1, 0, tzinfo=UTC), HOUR)
    (out / "day=2026-11-23" / "ledger.parquet").unlink()

    assert [Path(name).name for name in LedgerFiles([ledger]).compacted_files] == ["ledger.jsonl"]
    assert total([ledger]) == (4, Decimal("3.750000015"))
    assert total([ledger / "ledger.jsonl.1"]) == (2, Decimal("1.75"))  # given alone, a file is always read
