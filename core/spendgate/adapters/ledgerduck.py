"""The embedded ledger store: DuckDB over ledger files, with nothing else installed.

It reads what the proxies write (`ledger.jsonl`, rotated `ledger.jsonl.N`, gzipped) and what
`spendgate ledger compact` writes (Parquet, one file per closed UTC day), in any mix, through the
shared file finder (spendgate.adapters.ledgerfiles), and answers the report commands' usage
question (logic.usage.UsageSource) with exact DECIMAL(38, 18) sums.

Why it reads JSON lines itself rather than through the Python reader: a million lines take DuckDB
about five seconds and the Python reader sixteen. It still accepts exactly the records the shared
reader accepts, with the same values:

- a line passes here only if it is in the form the proxy writes (every field present with its
  JSON type, values in their sets, the cost an exact decimal with at most 18 places, the time
  `YYYY-MM-DDTHH:MM:SS[.ffffff]` with `Z` or an offset). The checks are built from the record
  module's own constants, and a property test holds them to `parse_record`: whatever passes here
  parses there, to the same values;
- every other line goes to `parse_record` itself: what it accepts is counted (an unusual but valid
  line), what it refuses is reported exactly as the other tools report it (file, line, field);
- the same request twice in JSON lines is a bad line, as in the shared reader; a record that is
  both in a JSON-lines file and in a compacted day (the expected overlap until the proxy's
  rotation removes the old file) counts once, and if the two copies differ, that is an error.

Money never goes through a float: costs are cast from their strings to DECIMAL(38, 18), which
holds every cost the pricing code can produce (genai-prices' rates have at most 3 decimal places
per million tokens, 9 per token; a bundle's override at most 12 per million, 18 per token).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import duckdb
import orjson

from spendgate.adapters.ledgerfiles import STDIN, LedgerError, LineProblem, failure, ledger_files, read_ledgers
from spendgate.adapters.ledgersql import RECORD_COLUMNS, usage_query, usage_rows
from spendgate.logic.ledgerrecord import (
    ACTIONS,
    LEDGER_V1,
    OPTIONAL_TEXT,
    OUTCOMES,
    READABLE_VERSIONS,
    TOKEN_FIELDS,
    LedgerLineError,
    LedgerRecord,
    parse_record,
    record_line,
)
from spendgate.logic.spend import exact
from spendgate.logic.usage import Dimension, UsageRow

MONEY: Final = "DECIMAL(38, 18)"
SMALLEST: Final = Decimal("1e-18")
EARLIEST: Final = datetime(1000, 1, 1, tzinfo=UTC)  # the span of every time a ledger line can hold
LATEST: Final = datetime(9999, 12, 31, tzinfo=UTC)
LARGEST: Final = Decimal("1e20")
PARQUET_SUFFIX: Final = ".parquet"
TABLE_COLUMNS: Final = (
    "time TIMESTAMPTZ NOT NULL, request_id VARCHAR NOT NULL, endpoint VARCHAR, key_name VARCHAR, developer VARCHAR, "
    "cost_center VARCHAR, repo VARCHAR, session VARCHAR, requested_model VARCHAR, served_model VARCHAR, "
    "priced_model VARCHAR, price_source VARCHAR, outcome VARCHAR NOT NULL, status BIGINT NOT NULL, "
    "input_tokens BIGINT, cache_write_5m_tokens BIGINT, cache_write_1h_tokens BIGINT, cache_read_tokens BIGINT, "
    f"output_tokens BIGINT, web_searches BIGINT, cost_usd {MONEY} NOT NULL, flags VARCHAR[] NOT NULL, "
    "line VARCHAR"
)
ROW_WIDTH: Final = len(RECORD_COLUMNS) + 1  # and the line


# Every field of a v1 line, each read as JSON so that its JSON type can be checked; v2 adds V2_FIELDS.
FIELDS: Final = ("schemaVersion", "time", "requestId", "method", "path",
                 *(name for name in OPTIONAL_TEXT if name != "errorType"), "stream", "tokens", "costUSD", "status",
                 "outcome", "errorType", "latencyMs", "upstreamMs", "addedMs", "decision", "flags", "bundleVersion")
V2_FIELDS: Final = ("requestBytes", "exchangeId")
AS_JSON: Final = orjson.dumps({name: "JSON" for name in (*FIELDS, *V2_FIELDS)}).decode()
TIME_FORM: Final = (r"[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
                    r"(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])")
COST_FORM: Final = r"(0|[1-9][0-9]{0,19})(\.[0-9]{1,18})?"  # COST_PATTERN, within DECIMAL(38, 18)
COUNT_FORM: Final = r"0|[1-9][0-9]{0,17}"  # a non-negative integer well within BIGINT
MILLISECONDS_FORM: Final = r"(0|[1-9][0-9]{0,15})(\.[0-9]{1,17})?"
STRING_FORM: Final = r'"([^"\\]|\\.)*"'  # within text already parsed as JSON
TOKENS_FORM: Final = r"\{" + ",".join(f'"{key}":({COUNT_FORM})' for key, _ in TOKEN_FIELDS) + r"\}"
DECISION_FORM: Final = (
    r'\{"action":"(' + "|".join(sorted(action for action in ACTIONS if action != "reroute"))
    + f')","reason":{STRING_FORM},"model":null\\}}|\\{{"action":"reroute","reason":{STRING_FORM},'
    + r'"model":"([^"\\]|\\.)+"\}')
FLAGS_FORM: Final = rf"\[({STRING_FORM}(,{STRING_FORM})*)?\]"


def _value(name: str) -> str:
    return f'j."{name}"'


def _text(name: str) -> str:
    return f"({_value(name)} ->> '$')"


def _is(name: str, *types: str, path: str = "") -> str:
    """The JSON value is one of `types` (false when absent or JSON null, unless 'NULL' is one of them)."""
    kind = f"json_type({_value(name)}, '${path}')" if path else f"json_type({_value(name)})"
    nullable = "NULL" in types
    listed = ", ".join(repr(kind_name) for kind_name in types if kind_name != "NULL")
    test = f"coalesce({kind} IN ({listed}), false)" if listed else "false"
    return f"({test} OR {kind} IS NULL)" if nullable else test


def _in(expression: str, values: Iterable[str]) -> str:
    return f"coalesce({expression} IN ({', '.join(repr(value) for value in sorted(values))}), false)"


def fields_of(version: str) -> tuple[str, ...]:
    return (*FIELDS, *(V2_FIELDS if version != LEDGER_V1 else ()))


def _keys(version: str) -> str:
    return "[" + ", ".join(repr(name) for name in sorted(fields_of(version))) + "]"


def gate_checks() -> list[str]:
    """A line in the form `parse_record` accepts, strictly (see the module docstring). Built from
    ledgerrecord's constants. A JSON null and an absent field read alike in `j`; `keys` shows which are there:
    exactly the version's fields, each once (a line with more is left to the shared parser)."""
    checks = [
        "NOT contains(line, '\\u')",  # \\u escapes (lone surrogates among them) are left to the shared parser
        " OR ".join(f"({_text('schemaVersion')} = '{version}' AND list_sort(keys) = {_keys(version)})"
                    for version in READABLE_VERSIONS),
        _is("schemaVersion", "VARCHAR"),
        _is("requestBytes", "NULL", "UBIGINT"),
        _is("exchangeId", "NULL", "VARCHAR"),
        f"{_is('time', 'VARCHAR')} AND regexp_full_match({_text('time')}, '{TIME_FORM}') "
        f"AND try_cast({_text('time')} AS TIMESTAMPTZ) IS NOT NULL",
        *(f"{_is(name, 'VARCHAR')} AND length({_text(name)}) > 0" for name in ("requestId", "method", "path")),
        _is("bundleVersion", "VARCHAR"),
        *(_is(name, "NULL", "VARCHAR") for name in OPTIONAL_TEXT),
        _is("stream", "BOOLEAN"),
        f"({_value('tokens')} IS NULL OR regexp_full_match({_value('tokens')}, '{TOKENS_FORM}'))",
        f"{_is('costUSD', 'VARCHAR')} AND regexp_full_match({_text('costUSD')}, '{COST_FORM}')",
        f"{_is('status', 'UBIGINT')} AND regexp_full_match({_value('status')}, '{COUNT_FORM}')",
        f"{_is('outcome', 'VARCHAR')} AND {_in(_text('outcome'), OUTCOMES)}",
        *(f"({_value(name)} IS NULL OR regexp_full_match({_value(name)}, '{MILLISECONDS_FORM}'))"
          for name in ("latencyMs", "upstreamMs", "addedMs")),
        f"regexp_full_match({_value('decision')}, '{DECISION_FORM}')",
        f"regexp_full_match({_value('flags')}, '{FLAGS_FORM}')",
    ]
    return checks


def _gate() -> str:
    return " AND ".join(f"({check})" for check in gate_checks())


VALUES: Final = ", ".join(f"{name} := {value}" for value, name in zip([
    f"CAST({_text('time')} AS TIMESTAMPTZ)", *(_text(name) for name in (
        "requestId", "endpoint", "keyName", "developer", "costCenter", "repo", "session", "requestedModel",
        "servedModel", "pricedModel", "priceSource", "outcome")),
    f"CAST({_value('status')} AS BIGINT)",
    *(f"CAST({_value('tokens')} ->> '$.{key}' AS BIGINT)" for key, _ in TOKEN_FIELDS),
    f"CAST({_text('costUSD')} AS {MONEY})", f"CAST({_value('flags')} AS VARCHAR[])",
], RECORD_COLUMNS, strict=True))
# Raw lines: CSV with a delimiter and a quote that a JSON line never holds (JSON escapes every control
# character), so each line is one field, byte for byte; .gz files are decompressed by their suffix.
LINES: Final = ("read_csv($files, columns = {'line': 'VARCHAR'}, delim = chr(31), quote = chr(30), escape = chr(30), "
                "header = false, auto_detect = false, filename = true, max_line_size = 67108864)")


def read_lines_query(keep_lines: bool) -> str:
    """Every non-blank line with `valid` (see `_gate`) and, if valid, its record columns; the line itself
    where it is not valid (for the shared parser), or for every line with `keep_lines`."""
    line = "line" if keep_lines else "CASE WHEN NOT valid THEN line END"
    return f"""
        SELECT filename, {line} AS line, valid, record.*
        FROM (
            SELECT filename, line, valid, CASE WHEN valid THEN struct_pack({VALUES}) END AS record
            FROM (
                SELECT filename, line, j, coalesce({_gate()}, false) AS valid
                FROM (
                    SELECT filename, line, try(json_transform(line, '{AS_JSON}')) AS j, try(json_keys(line)) AS keys
                    FROM {LINES} WHERE trim(line) <> ''
                )
            )
        )
    """


def record_row(record: LedgerRecord, line: str | None) -> tuple[Any, ...]:
    """A record read by the shared reader, as a row of the store's table."""
    tokens = record.tokens
    counts = [getattr(tokens, attribute) if tokens else None for _, attribute in TOKEN_FIELDS]
    return (record.time, record.request_id, record.endpoint, record.key_name, record.developer, record.cost_center,
            record.repo, record.session, record.requested_model, record.served_model, record.priced_model,
            record.price_source, record.outcome, record.status, *counts, record.cost, list(record.flags), line)


def compacted_day(name: str) -> date | None:
    """The UTC day of a compacted file (`.../day=2026-11-03/ledger.parquet`), if its folder names one."""
    folder = Path(name).parent.name
    try:
        return date.fromisoformat(folder.removeprefix("day=")) if folder.startswith("day=") else None
    except ValueError:
        return None


def _may_hold(name: str, start: datetime, end: datetime) -> bool:
    day = compacted_day(name)
    return day is None or (start.date() <= day <= end.date())


# `spendgate ledger compact` lists in `OUT/sources.json` the JSON-lines files whose every record it has
# compacted, by device, inode, size and modification time: a file renamed by rotation is still known, a
# file written to since is not. Readers given the compacted days skip those files.
MANIFEST: Final = "sources.json"


def _identity(name: str) -> dict[str, int] | None:
    try:
        status = os.stat(name)
    except OSError:
        return None
    return {"device": status.st_dev, "inode": status.st_ino, "size": status.st_size, "mtimeNs": status.st_mtime_ns}


def _manifests(parquet: Sequence[str]) -> list[dict[str, Any]]:
    """The entries of the manifests beside the compacted days being read (one per compacted folder)."""
    folders = {Path(name).parent.parent for name in parquet if compacted_day(name) is not None}
    entries: list[dict[str, Any]] = []
    for folder in sorted(folders):
        try:
            listed = orjson.loads((folder / MANIFEST).read_bytes()).get("files", [])
        except (OSError, orjson.JSONDecodeError, AttributeError):
            continue  # no manifest (or an unreadable one): every JSON-lines file is read, which is always right
        entries += [entry for entry in listed if isinstance(entry, dict)]
    return entries


def _matching(name: str, entries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    identity = _identity(name)
    if identity is None:
        return None
    return next((entry for entry in entries if all(entry.get(key) == value for key, value in identity.items())), None)


def _compacted(name: str, entries: Sequence[dict[str, Any]], parquet: Sequence[str]) -> bool:
    """Listed as compacted, unchanged since, and every day it holds is among the compacted days read."""
    entry = _matching(name, entries)
    if entry is None:
        return False
    present = {compacted_day(file) for file in parquet}
    return all(date.fromisoformat(day) in present for day in entry.get("days", ["-"]))


def _write_manifest(out: Path, earlier: Sequence[dict[str, Any]], unchanged: Sequence[str],
                    compacted: dict[str, list[date]]) -> None:
    entries = [entry for name in unchanged if (entry := _matching(name, earlier)) is not None]
    for name, days in sorted(compacted.items()):
        identity = _identity(name)
        if identity is not None:
            entries.append({"name": Path(name).name, **identity, "days": [day.isoformat() for day in days]})
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f".{MANIFEST}.{os.getpid()}.partial"
    partial.write_bytes(orjson.dumps({"version": 1, "files": entries}, option=orjson.OPT_INDENT_2))
    _durable_rename(partial, out / MANIFEST)


def _check_exact(record: LedgerRecord, source: str) -> None:
    if record.cost != record.cost.quantize(SMALLEST) or record.cost >= LARGEST:
        raise LedgerError(f"{source}: request {record.request_id} costs {exact(record.cost)}, beyond the exact "
                          "range of the embedded store (20 digits and 18 decimal places)")


@dataclass(frozen=True)
class CompactedDay:
    day: date
    records: int
    written: bool  # False: the day's file already held exactly these records


@dataclass(frozen=True)
class Compaction:
    days: list[CompactedDay]
    open_days: list[date]  # not closed yet (or within the grace period): left in the JSON lines


class LedgerFiles:
    """Ledger files as one DuckDB table, `ledger_records`, for the time span a report needs."""

    def __init__(self, paths: Sequence[str | Path], skip_bad_lines: bool = False) -> None:
        files = ledger_files(paths)
        if STDIN in files:
            raise LedgerError("standard input (-): the report commands read ledger files; save the ledger first")
        self.parquet = [name for name in files if name.endswith(PARQUET_SUFFIX)]
        self.manifests = _manifests(self.parquet)
        jsonl = [name for name in files if not name.endswith(PARQUET_SUFFIX)]
        # A JSON-lines file whose every record is in the compacted days read here, unchanged since: not read again.
        self.compacted_files = [name for name in jsonl if _compacted(name, self.manifests, self.parquet)]
        self.jsonl = [name for name in jsonl if name not in self.compacted_files]
        self.file_days: dict[str, list[date]] = {}  # the UTC days of each JSON-lines file read (for compaction)
        self.skip_bad_lines = skip_bad_lines
        self.skipped: list[LineProblem] = []
        self.unusual_lines = 0  # lines read by the shared parser instead (see the module docstring)
        self.db = duckdb.connect()
        self.db.execute("SET TimeZone = 'UTC'")
        self._span: tuple[datetime, datetime] | None = None

    def describe(self) -> str:
        kinds = [f"{len(self.jsonl)} JSON-lines file{'s' * (len(self.jsonl) != 1)}"] if self.jsonl else []
        kinds += [f"{len(self.parquet)} compacted day{'s' * (len(self.parquet) != 1)}"] if self.parquet else []
        compacted = len(self.compacted_files)
        kinds += [f"{compacted} JSON-lines file{'s' * (compacted != 1)} already compacted"] if compacted else []
        return "ledger files: " + " and ".join(kinds)

    def load(self, start: datetime, end: datetime, keep_lines: bool = False) -> None:
        """Read the records with start <= time < end into `ledger_records` (every line is checked, whatever its
        time). With `keep_lines`, each record keeps its line as written (to compact it)."""
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        self._create_table()
        if self.jsonl:
            self._load_lines(start, end, keep_lines)
        self._load_parquet(start, end, keep_lines, [name for name in self.parquet if _may_hold(name, start, end)])
        self._span = (start, end)

    def _create_table(self) -> None:
        self.db.execute("DROP TABLE IF EXISTS ledger_records")
        self.db.execute(f"CREATE TEMP TABLE ledger_records ({TABLE_COLUMNS})")

    def _load_lines(self, start: datetime, end: datetime, keep_lines: bool) -> None:
        span = {"start": start, "end": end}
        try:
            self.db.execute(f"CREATE TEMP TABLE read_lines AS {read_lines_query(keep_lines)}", {"files": self.jsonl})
        except duckdb.Error:  # a file DuckDB cannot take as lines at all (not UTF-8, a corrupt gzip)
            self._load_through_reader(start, end, keep_lines)
            return
        try:
            problem_files = self._accept_unusual_lines(keep_lines) | self._repeated_in()
            if problem_files:
                self._bad_lines(sorted(problem_files))  # raises unless skipping them
                self.db.execute("CREATE OR REPLACE TEMP TABLE read_lines AS SELECT * FROM read_lines WHERE valid "
                                "QUALIFY row_number() OVER (PARTITION BY request_id, time ORDER BY filename) = 1")
            self.db.execute(f"INSERT INTO ledger_records SELECT {', '.join(RECORD_COLUMNS)}, "
                            f"{'line' if keep_lines else 'NULL'} FROM read_lines "
                            "WHERE valid AND time >= $start AND time < $end", span)
            self.file_days = {filename: sorted(days) for filename, days in self.db.execute(
                "SELECT filename, list(DISTINCT CAST(time AS DATE)) FROM read_lines WHERE valid GROUP BY 1").fetchall()}
        finally:
            self.db.execute("DROP TABLE IF EXISTS read_lines")

    def _accept_unusual_lines(self, keep_lines: bool) -> set[str]:
        """Lines not in the proxy's form go to the shared parser: counted if it accepts them. Returns the
        files of those it refuses."""
        unusual = self.db.execute("SELECT filename, line FROM read_lines WHERE NOT valid").fetchall()
        self.unusual_lines += len(unusual)
        accepted, refused = [], set()
        for filename, line in unusual:
            try:
                record = parse_record(orjson.loads(line))
            except (orjson.JSONDecodeError, LedgerLineError):
                refused.add(filename)
                continue
            _check_exact(record, filename)
            accepted.append((filename, line if keep_lines else None, True, *record_row(record, None)[:-1]))
        if accepted:  # beside the lines DuckDB read, so that repeats among all of them are found
            self.db.executemany(f"INSERT INTO read_lines VALUES ({', '.join(['?'] * (ROW_WIDTH + 2))})", accepted)
        return refused

    def _repeated_in(self) -> set[str]:
        """The files holding a request that the JSON lines hold twice (a bad line, as in the shared reader)."""
        rows = self.db.execute("SELECT DISTINCT unnest(files) FROM (SELECT list(filename) AS files FROM read_lines "
                               "WHERE valid GROUP BY request_id, time HAVING count(*) > 1)").fetchall()
        return {name for (name,) in rows}

    def _bad_lines(self, files: Sequence[str]) -> None:
        """The shared reader's account of the bad lines, with file, line and field; raises unless skipping."""
        problems = read_ledgers(files, skip_bad_lines=True).skipped
        if not self.skip_bad_lines:
            raise LedgerError(failure(problems), problems)
        self.skipped.extend(problems)

    def _load_through_reader(self, start: datetime, end: datetime, keep_lines: bool) -> None:
        contents = read_ledgers(self.jsonl, skip_bad_lines=self.skip_bad_lines)
        self.skipped.extend(contents.skipped)
        rows = []
        for record in contents.records:
            _check_exact(record, "the ledger files")
            if start <= record.time < end:
                line = orjson.dumps(record_line(record), option=orjson.OPT_UTC_Z).decode() if keep_lines else None
                rows.append(record_row(record, line))
        if rows:
            self.db.executemany(f"INSERT INTO ledger_records VALUES ({', '.join(['?'] * ROW_WIDTH)})", rows)

    def _load_parquet(self, start: datetime, end: datetime, keep_lines: bool, files: list[str]) -> None:
        if not files:
            return
        columns = ", ".join(RECORD_COLUMNS)
        line = "line" if keep_lines else "NULL"
        compacted = (f"SELECT {columns}, {line} AS line FROM read_parquet($files) "
                     "WHERE time >= $start AND time < $end")
        parameters = {"files": files, "start": start, "end": end}
        differing = self.db.execute(
            f"SELECT c.request_id, c.time FROM ({compacted}) AS c JOIN ledger_records AS r USING (request_id, time) "
            f"WHERE ({', '.join('c.' + name for name in RECORD_COLUMNS)}) IS DISTINCT FROM "
            f"({', '.join('r.' + name for name in RECORD_COLUMNS)}) LIMIT 20", parameters).fetchall()
        if differing:
            shown = ", ".join(f"{request_id} at {time.isoformat()}" for request_id, time in differing)
            raise LedgerError(f"compacted records differ from the JSON lines of the same requests: {shown}; "
                              "one of the copies was changed after compaction")
        self.db.execute(f"INSERT INTO ledger_records SELECT * FROM ({compacted}) AS c "
                        "WHERE NOT EXISTS (SELECT 1 FROM ledger_records AS r "
                        "WHERE r.request_id = c.request_id AND r.time = c.time)", parameters)

    def compact(self, out: Path, now: datetime, grace: timedelta) -> Compaction:
        """See the module function `compact`."""
        if not self.jsonl:
            return Compaction([], [])
        self._create_table()
        self._load_lines(EARLIEST, LATEST, keep_lines=True)
        days = [row[0] for row in self.db.execute(
            "SELECT DISTINCT CAST(time AS DATE) FROM ledger_records ORDER BY 1").fetchall()]
        closed = [day for day in days if _day_span(day, day)[1] + grace <= now.astimezone(UTC)]
        self._load_parquet(EARLIEST, LATEST, True, [name for name in self.parquet if compacted_day(name) in closed])
        written = [_write_day(self.db, out, day) for day in closed]
        _write_manifest(out, self.manifests, self.compacted_files,
                        {name: days for name, days in self.file_days.items() if set(days) <= set(closed)})
        return Compaction(written, [day for day in days if day not in closed])

    def usage(self, start: datetime, end: datetime, by: Sequence[Dimension]) -> list[UsageRow]:
        if self._span is None or not (self._span[0] <= start.astimezone(UTC) and end.astimezone(UTC) <= self._span[1]):
            raise RuntimeError("LedgerFiles.usage outside the loaded span: call load() with the report's whole span")
        query = usage_query("ledger_records", by, "$start", "$end")
        rows = self.db.execute(query, {"start": start.astimezone(UTC), "end": end.astimezone(UTC)}).fetchall()
        return usage_rows(rows, by)


def compact(paths: Sequence[str | Path], out: Path, now: datetime, grace: timedelta) -> Compaction:
    """Write each closed UTC day of the JSON-lines ledgers under `paths` to `out/day=YYYY-MM-DD/ledger.parquet`.

    A day is closed once its end is `grace` in the past (a long stream's line carries the time it
    arrived, and is written when it ends). The day's file holds every record of that day from the
    JSON lines and from its earlier file, each once, each line as written; it is written whole and
    renamed into place, so a crash leaves the old file or the new one. The JSON-lines files are
    left alone: readers count a record in both once, and the proxy's rotation removes them in time.
    A file whose every record is compacted is listed in `out/sources.json` (see MANIFEST): until it
    changes, readers of the compacted days skip it. Running it again writes nothing new.
    """
    earlier = [out] if out.is_dir() and any(out.rglob("*" + PARQUET_SUFFIX)) else []
    return LedgerFiles([*paths, *earlier]).compact(out, now, grace)


def _day_span(first: date, last: date) -> tuple[datetime, datetime]:
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    return start, datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)


def _write_day(db: duckdb.DuckDBPyConnection, out: Path, day: date) -> CompactedDay:
    target = out / f"day={day.isoformat()}" / "ledger.parquet"
    span = dict(zip(("start", "end"), _day_span(day, day), strict=True))
    count = db.execute("SELECT count(*) FROM ledger_records WHERE time >= $start AND time < $end",
                             span).fetchone()
    records = int(count[0]) if count else 0
    if target.exists():
        same = db.execute(
            "SELECT count(*) FROM read_parquet($file) AS old FULL JOIN (SELECT request_id, time FROM ledger_records "
            "WHERE time >= $start AND time < $end) AS new USING (request_id, time) "
            "WHERE old.request_id IS NULL OR new.request_id IS NULL", {**span, "file": str(target)}).fetchone()
        if same is not None and same[0] == 0:
            return CompactedDay(day, records, written=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".ledger.parquet.{os.getpid()}.partial")
    db.execute(f"COPY (SELECT {', '.join(RECORD_COLUMNS)}, line FROM ledger_records "
                     "WHERE time >= $start AND time < $end ORDER BY time, request_id) "
                     f"TO '{_quoted(partial)}' (FORMAT parquet, COMPRESSION zstd)", span)
    _durable_rename(partial, target)
    return CompactedDay(day, records, written=True)


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def _durable_rename(partial: Path, target: Path) -> None:
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    partial.replace(target)
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
