"""The embedded store (DuckDB over ledger files) reads exactly what the shared reader reads: the same records,
the same values, the same bad lines named the same way. Property-tested on any change to a line."""

from __future__ import annotations

import copy
import json
import subprocess
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.controlplane import REPO_ROOT
from finance.ledgerlines import line, write
from finance.mutations import JSON_VALUES, changed, paths
from spendgate.adapters.ledgerduck import LedgerFiles, fields_of
from spendgate.adapters.ledgerfiles import LedgerError, read_ledgers
from spendgate.logic.ledgerrecord import READABLE_VERSIONS, LedgerRecord, parse_record, record_line
from spendgate.logic.usage import Dimension, Month, UsageTotals

NOVEMBER = Month(2026, 11)
BY = [Dimension.DAY, Dimension.COST_CENTER, Dimension.DEVELOPER, Dimension.MODEL]


def duckdb_totals(paths: list[Path], skip_bad_lines: bool = False) -> dict[tuple[str | None, ...], UsageTotals]:
    store = LedgerFiles(paths, skip_bad_lines=skip_bad_lines)
    store.load(NOVEMBER.previous().start, NOVEMBER.following().end)
    return {row.key: row.totals for row in store.usage(NOVEMBER.previous().start, NOVEMBER.following().end, BY)}


def python_totals(records: list[LedgerRecord]) -> dict[tuple[str | None, ...], UsageTotals]:
    """The same sums, straight from the shared reader's records."""
    sums: dict[tuple[str | None, ...], UsageTotals] = defaultdict(UsageTotals)
    for record in records:
        key = (record.time.date().isoformat(), record.cost_center, record.developer, record.served_model)
        sums[key] = sums[key] + UsageTotals(
            requests=1 if record.tokens else 0, tokens=record.tokens or UsageTotals().tokens, cost=record.cost,
            records=1, estimated=int("estimated" in record.flags),
            geo_unpriced_cost=record.cost if "geo_premium_unpriced" in record.flags else Decimal(0))
    return dict(sums)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three weeks of the shared synthetic ledger (the real format), split like a proxy's rotated files."""
    folder = tmp_path_factory.mktemp("synthetic")
    subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "spendgate"), "ledger", "synth", "--days", "21",
                    "--developers", "12", "--seed", "3", "--start", "2026-11-03", "--out", str(folder / "all.jsonl"),
                    "--policies", str(REPO_ROOT / "examples" / "policies")], check=True, capture_output=True)
    lines = (folder / "all.jsonl").read_bytes().splitlines(keepends=True)
    (folder / "all.jsonl").unlink()
    (folder / "proxy-a").mkdir()
    (folder / "proxy-a" / "ledger.jsonl.1").write_bytes(b"".join(lines[0::2]))
    (folder / "proxy-b.jsonl").write_bytes(b"".join(lines[1::2]))
    return folder


def test_a_synthetic_month_sums_exactly_as_the_shared_reader_reads_it(synthetic: Path) -> None:
    expected = python_totals(read_ledgers([synthetic]).records)

    assert duckdb_totals([synthetic]) == expected
    assert sum((totals.cost for totals in expected.values()), Decimal(0)) > Decimal(100)


def test_the_lines_the_tools_write_are_read_by_duckdb_itself(synthetic: Path) -> None:
    """The fast path is the usual one: every field the writers write is known here, whatever their order."""
    store = LedgerFiles([synthetic])
    store.load(NOVEMBER.start, NOVEMBER.end)

    assert store.unusual_lines == 0
    for version in READABLE_VERSIONS:
        written = record_line(parse_record(line("req_1") | {"schemaVersion": version}))
        assert sorted(written) == sorted(fields_of(version))


def test_bad_lines_are_named_as_the_shared_reader_names_them(tmp_path: Path) -> None:
    path = write(tmp_path / "ledger.jsonl", line("req_1"), line("req_2", cost="-1"), line("req_3"))
    with path.open("ab") as handle:
        handle.write(b"{not json\n")

    with pytest.raises(LedgerError) as ours:
        duckdb_totals([path])
    with pytest.raises(LedgerError) as shared:
        read_ledgers([path])

    assert str(ours.value) == str(shared.value)
    assert "ledger.jsonl:2: costUSD: '-1' is not a non-negative decimal" in str(ours.value)
    assert "ledger.jsonl:4: not a JSON line" in str(ours.value)


def test_skipping_bad_lines_counts_the_rest_and_lists_what_was_left_out(tmp_path: Path) -> None:
    path = write(tmp_path / "ledger.jsonl", line("req_1", cost="1"), line("req_2", tokens={"output": -5}),
                 line("req_3", cost="2"))
    store = LedgerFiles([path], skip_bad_lines=True)
    store.load(NOVEMBER.start, NOVEMBER.end)

    (row,) = store.usage(NOVEMBER.start, NOVEMBER.end, ())
    assert (row.totals.records, row.totals.cost) == (2, Decimal(3))
    assert [(problem.line, problem.message) for problem in store.skipped] == [
        (2, "tokens.output: must be a non-negative integer, got the number -5")]


def test_valid_lines_in_another_form_are_counted_with_the_same_values(tmp_path: Path) -> None:
    reordered = dict(reversed(list(line("req_1", cost="0.5").items())))
    escaped = line("req_2", developer="jos\u00e9", repo="acme/\u00fcber")
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(orjson.dumps(reordered) + b"\n" + orjson.dumps(line("req_3"), option=orjson.OPT_INDENT_2
                                                                     ).replace(b"\n", b"") + b"\n"
                     + orjson.dumps(escaped).replace("é".encode(), b"\\u00e9") + b"\n")

    assert duckdb_totals([path]) == python_totals(read_ledgers([path]).records)
    assert ("2026-11-24", "platform", "josé", "claude-opus-5-5") in duckdb_totals([path])


def test_a_request_twice_in_json_lines_is_a_bad_line_unless_skipped(tmp_path: Path) -> None:
    first = write(tmp_path / "a" / "ledger.jsonl", line("req_1", cost="1"))
    write(tmp_path / "b" / "ledger.jsonl", line("req_1", cost="1"), line("req_2", cost="2"))

    with pytest.raises(LedgerError, match=r"request req_1 at 2026-11-24T09:12:03.481220\+00:00 was already read at"):
        duckdb_totals([tmp_path])
    assert first.exists()
    counted = duckdb_totals([tmp_path], skip_bad_lines=True)
    assert sum((totals.cost for totals in counted.values()), Decimal(0)) == Decimal(3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data(), replacement=JSON_VALUES, remove=st.booleans())
def test_any_change_to_a_line_reads_alike_in_both(tmp_path: Path, data: st.DataObject, replacement: Any,
                                                   remove: bool) -> None:
    """Whatever value replaces (or whatever removal leaves) any part of a line, the embedded store and the
    shared reader agree: the same records with the same values, or both refuse the line."""
    record = copy.deepcopy(line("req_1"))
    changed(record, data.draw(st.sampled_from(paths(record)[1:])), replacement, remove)
    ledger = tmp_path / f"{data.draw(st.integers(0, 10**9))}.jsonl"
    # The standard library writes what orjson cannot (integers past 64 bits), in the proxy's spacing.
    ledger.write_text(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8")

    assert_read_alike(ledger)


def assert_read_alike(ledger: Path) -> None:
    """The same totals from both readers, or the same refusal, word for word."""
    try:
        expected = python_totals(read_ledgers([ledger]).records)
    except LedgerError as refused:
        with pytest.raises(LedgerError) as ours:
            duckdb_totals([ledger])
        assert str(ours.value) == str(refused)
        return
    assert duckdb_totals([ledger]) == expected


def _raw(**replace: str) -> bytes:
    """The shared test line with raw JSON text swapped in for some values."""
    text = orjson.dumps(line("req_1")).decode()
    for name, value in replace.items():
        start = text.index(f'"{name}":') + len(name) + 3
        end = start + len(orjson.dumps(line("req_1")[name]).decode())
        text = text[:start] + value + text[end:]
    return text.encode()


@pytest.mark.parametrize("raw", [
    _raw(costUSD='"1"').replace(b'"costUSD":"1"', b'"costUSD":"1","costUSD":"2"'),  # a key twice
    _raw(developer='"\\ud800"'), _raw(developer='"\\u00e9\\ud83d\\ude00"'),  # a lone and a paired surrogate
    _raw(latencyMs="1e400"), _raw(latencyMs="-0.0"), _raw(latencyMs="1E-7"), _raw(status="200.0"),
    _raw(status="18446744073709551616"), _raw(time='"2026-11-24T09:12:03.1234567Z"'),
    _raw(time='"2026-02-30T00:00:00Z"'), _raw(time='"2026-11-24T09:12:03+05:30"'), _raw(time='"20261124T091203Z"'),
    _raw(time='"2026-11-24 09:12:03Z"'), _raw(costUSD='"01.5"'),
    _raw(flags='["a",null]'), _raw(decision='{"action":"reroute","reason":"","model":""}'),
    _raw(decision='{"action":"forward","reason":"","model":"x"}'), _raw(decision='{"action":"forward","reason":""}'),
    _raw(tokens='{"input":1,"cacheWrite5m":0,"cacheWrite1h":0,"cacheRead":0,"output":1,"webSearches":0,"extra":1}'),
    _raw(tokens='{"input":1,"cacheWrite5m":0,"cacheWrite1h":0,"cacheRead":0,"output":true,"webSearches":0}'),
    _raw(requestId='""'), _raw(requestId='" "'), _raw(stream="1"),
])
def test_unusual_lines_read_alike_in_both(tmp_path: Path, raw: bytes) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_bytes(raw + b"\n")

    assert_read_alike(ledger)


def test_a_cost_finer_than_the_store_holds_exactly_is_refused_not_rounded(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_bytes(_raw(costUSD='"0.0000000000000000001"') + b"\n")

    with pytest.raises(LedgerError, match=r"costs 0\.0000000000000000001, beyond the exact range"):
        duckdb_totals([ledger])
