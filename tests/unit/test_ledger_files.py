"""Reading ledgers from disk: directories, rotated and gzipped files, any order, and bad input named by file
and line, never silently dropped or counted twice."""

from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from spendgate.adapters.ledgerfiles import LedgerError, read_ledgers
from unit.test_ledger_record import line


def lines(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [line(requestId=f"req_{number:04d}", time=f"2026-11-24T09:{number // 60:02d}:{number % 60:02d}Z")
            for number in range(start, start + count)]


def write(path: Path, items: list[Any], gz: bool = False) -> Path:
    data = b"".join(orjson.dumps(item) + b"\n" if not isinstance(item, bytes) else item for item in items)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_a_directory_of_rotated_and_compressed_files_reads_in_time_order(tmp_path: Path) -> None:
    write(tmp_path / "proxy-a" / "ledger.jsonl", lines(3, start=20))
    write(tmp_path / "proxy-a" / "ledger.jsonl.1", lines(3, start=10))
    write(tmp_path / "proxy-a" / "ledger.jsonl.2.gz", lines(3, start=0), gz=True)
    write(tmp_path / "proxy-b" / "ledger.jsonl", lines(2, start=5))
    write(tmp_path / "proxy-b" / "notes.txt", [b"not a ledger\n"])
    contents = read_ledgers([tmp_path])
    assert [r.request_id for r in contents.records] == [f"req_{n:04d}" for n in (0, 1, 2, 5, 6, 10, 11, 12, 20, 21,
                                                                                   22)]
    assert len(contents.files) == 4 and contents.skipped == []


def test_the_order_files_are_given_in_does_not_matter(tmp_path: Path) -> None:
    first = write(tmp_path / "a.jsonl", lines(5, start=5))
    second = write(tmp_path / "b.jsonl", lines(5))
    assert read_ledgers([first, second]).records == read_ledgers([second, first]).records


def test_bad_lines_fail_the_read_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "ledger.jsonl", [*lines(2), b"{not json\n", line(costUSD=1.25), *lines(1, start=9)])
    with pytest.raises(LedgerError) as raised:
        read_ledgers([path])
    message = str(raised.value)
    assert message.startswith("2 bad ledger line(s); the ledger was not used")
    assert f"{path}:3: not a JSON line" in message
    assert f"{path}:4: costUSD: must be a decimal string" in message


def test_skipping_bad_lines_counts_every_one(tmp_path: Path) -> None:
    path = write(tmp_path / "ledger.jsonl", [*lines(2), b"\n", b"[1]\n", *lines(1, start=9)])
    contents = read_ledgers([path], skip_bad_lines=True)
    assert len(contents.records) == 3  # the blank line is no record and no problem
    assert [str(problem) for problem in contents.skipped] == [
        f"{path}:4: a ledger line must be a JSON object, got a list"]


def test_the_same_request_twice_is_never_counted_twice(tmp_path: Path) -> None:
    original = write(tmp_path / "ledger.jsonl.1", lines(3))
    copy = write(tmp_path / "copy" / "ledger.jsonl", lines(1, start=2))
    with pytest.raises(LedgerError, match=r"copy/ledger.jsonl:1: request req_0002 .* was already read at "):
        read_ledgers([original, copy])
    assert len(read_ledgers([original, original, tmp_path / "ledger.jsonl.1"]).records) == 3  # one file, once


def test_unreadable_sources_always_fail(tmp_path: Path) -> None:
    truncated = tmp_path / "ledger.jsonl.gz"
    truncated.write_bytes(gzip.compress(b"".join(orjson.dumps(item) + b"\n" for item in lines(50)))[:-30])
    with pytest.raises(LedgerError, match=r"ledger\.jsonl\.gz: cannot be read"):
        read_ledgers([truncated], skip_bad_lines=True)
    with pytest.raises(LedgerError, match=r"missing\.jsonl: no such ledger file or directory"):
        read_ledgers([tmp_path / "missing.jsonl"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LedgerError, match="empty: no ledger files in this directory"):
        read_ledgers([tmp_path / "empty"])


def test_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"".join(orjson.dumps(item) + b"\n" for item in lines(4))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert len(read_ledgers(["-"]).records) == 4


def compacted(path: Path, items: list[dict[str, Any]]) -> Path:
    """A compacted day as `spendgate ledger compact` writes it: each line as written, in the column `line`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect()
    connection.execute("CREATE TABLE day (line VARCHAR)")
    connection.executemany("INSERT INTO day VALUES (?)", [[orjson.dumps(item).decode()] for item in items])
    connection.execute(f"COPY day TO '{path}' (FORMAT parquet)")
    return path


def test_compacted_days_are_read_and_their_copies_in_json_lines_count_once(tmp_path: Path) -> None:
    compacted(tmp_path / "compacted" / "day=2026-11-24" / "ledger.parquet", lines(4))
    write(tmp_path / "ledger.jsonl", lines(6, start=2))  # two of its lines were compacted already

    contents = read_ledgers([tmp_path])

    assert [r.request_id for r in contents.records] == [f"req_{n:04d}" for n in range(8)]
    assert contents.skipped == []


def test_a_compacted_copy_that_differs_from_its_line_is_a_bad_line(tmp_path: Path) -> None:
    changed = lines(1)[0] | {"costUSD": "9.99"}
    compacted(tmp_path / "compacted" / "day=2026-11-24" / "ledger.parquet", [changed])
    write(tmp_path / "ledger.jsonl", lines(1))

    with pytest.raises(LedgerError) as refused:
        read_ledgers([tmp_path])

    assert "req_0000 at 2026-11-24T09:00:00+00:00 was already read at" in str(refused.value)
