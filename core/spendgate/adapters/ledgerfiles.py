"""Read ledgers from disk: files, directories of them, the proxy's rotated `ledger.jsonl.N` files,
gzip-compressed ones (`.gz`, as logrotate leaves them), or standard input (`-`).

Every offline tool reads through here, so they all answer bad input alike: a line that is not a
valid record (spendgate.logic.ledgerrecord) is a LineProblem naming the file, the line number and
the field. By default any bad line fails the read (LedgerError lists them all): a finance tool must
not lose money quietly. With `skip_bad_lines` the bad lines are left out, and every one is returned
in `skipped` for the caller to report and count. A file that cannot be read at all (missing,
unreadable, a truncated gzip) always fails. The same request read twice (the same file passed
twice, a rotated file copied under another name) is a bad line too, never counted twice.
"""

from __future__ import annotations

import gc
import gzip
import re
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, cast

import duckdb
import orjson

from spendgate.logic.ledgerrecord import LedgerLineError, LedgerRecord, parse_line, record_line

STDIN: Final = "-"  # standard input to read, standard output to write
# ledger.jsonl, ledger.jsonl.3, either of them gzipped, and a day compacted by `spendgate ledger compact`.
LEDGER_NAME: Final = re.compile(r".+\.jsonl(\.[0-9]+)?(\.gz)?|.+\.parquet")
PARQUET_SUFFIX: Final = ".parquet"
PARQUET_BATCH: Final = 10_000
# How many bad lines a failed read lists before it says "and N more".
SHOWN_PROBLEMS: Final = 20


@dataclass(frozen=True)
class LineProblem:
    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


class LedgerError(Exception):
    """The ledger cannot be read as given; the message lists what is wrong, with file and line."""

    def __init__(self, message: str, problems: Sequence[LineProblem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass
class LedgerContents:
    records: list[LedgerRecord] = field(default_factory=list)  # in time order
    files: list[str] = field(default_factory=list)
    skipped: list[LineProblem] = field(default_factory=list)  # bad lines left out (skip_bad_lines only)


def ledger_files(paths: Iterable[str | Path]) -> list[str]:
    """The files to read: each path as given, or a directory's ledger files (recursively), in a stable order."""
    found: list[str] = []
    for given in paths:
        if str(given) == STDIN:
            found.append(STDIN)
            continue
        path = Path(given)
        if path.is_dir():
            inside = sorted(str(p) for p in path.rglob("*") if p.is_file() and LEDGER_NAME.fullmatch(p.name))
            if not inside:
                raise LedgerError(f"{path}: no ledger files in this directory (expected *.jsonl, *.jsonl.N, *.gz, "
                                  "*.parquet)")
            found.extend(inside)
        elif path.is_file():
            found.append(str(path))
        else:
            raise LedgerError(f"{path}: no such ledger file or directory")
    unique = list(dict.fromkeys(str(Path(f).resolve()) if f != STDIN else f for f in found))
    return [f if f == STDIN else _relative(f) for f in unique]


def _relative(resolved: str) -> str:
    """Paths as people typed them where possible (error messages stay short)."""
    try:
        return str(Path(resolved).relative_to(Path.cwd()))
    except ValueError:
        return resolved


def read_ledgers(paths: Iterable[str | Path], skip_bad_lines: bool = False) -> LedgerContents:
    """Every record of the given ledgers, in time order (files may be given in any order)."""
    with _collector_paused():
        return _read_ledgers(paths, skip_bad_lines)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Reading makes hundreds of thousands of objects that all stay alive and hold no reference cycles: the
    cyclic garbage collector would walk them over and over as they pile up (a quarter of the time it takes
    to read 100,000 lines) and find nothing to free."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_ledgers(paths: Iterable[str | Path], skip_bad_lines: bool) -> LedgerContents:
    """A record both in a compacted day and in a JSON-lines file (the file the proxy has not rotated
    away yet) counts once; the two copies must be equal."""
    contents = LedgerContents(files=ledger_files(paths))
    problems: list[LineProblem] = []
    seen: dict[tuple[str, object], tuple[str, int, LedgerRecord]] = {}
    for source in contents.files:
        for number, item in read_file(source):
            if isinstance(item, LedgerRecord):
                key = (item.request_id, item.time)
                first = seen.setdefault(key, (source, number, item))
                if first[:2] == (source, number):
                    contents.records.append(item)
                    continue
                if PARQUET_SUFFIX in (Path(first[0]).suffix, Path(source).suffix) and first[2] == item:
                    continue  # the compacted copy of a line
                item = LineProblem(source, number, f"request {item.request_id} at {item.time.isoformat()} was "
                                                   f"already read at {first[0]}:{first[1]} (a ledger read twice?)")
            problems.append(item)
    if problems and not skip_bad_lines:
        raise LedgerError(failure(problems), problems)
    contents.skipped = problems
    # In place, and each file's lines are in time order already: Timsort merges those runs in linear time.
    contents.records.sort(key=lambda record: (record.time, record.request_id))
    return contents


def failure(problems: Sequence[LineProblem]) -> str:
    """The message of a read that failed on bad lines (every tool words it alike)."""
    shown = "\n".join(str(problem) for problem in problems[:SHOWN_PROBLEMS])
    more = f"\n... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    return (f"{len(problems)} bad ledger line(s); the ledger was not used (pass --skip-bad-lines to leave them out "
            f"and count them):\n{shown}{more}")


def read_file(source: str) -> Iterator[tuple[int, LedgerRecord | LineProblem]]:
    """(line number, record or problem) for each non-empty line of one ledger file (a compacted day's
    Parquet file holds each line as written, in the column `line`; its row number is the line number)."""
    if source.endswith(PARQUET_SUFFIX):
        yield from _read_parquet(source)
        return
    try:
        with _open(source) as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    yield number, _parse(source, number, raw)
    except (OSError, EOFError, zlib.error) as error:  # unreadable, or a truncated / corrupt gzip
        raise LedgerError(f"{source}: cannot be read: {error}") from error


def _read_parquet(source: str) -> Iterator[tuple[int, LedgerRecord | LineProblem]]:
    try:
        result = duckdb.connect().execute("SELECT line FROM read_parquet(?)", [source])
    except duckdb.Error as error:
        raise LedgerError(f"{source}: cannot be read as a compacted ledger day: {str(error).splitlines()[0]}") \
            from error
    number = 0
    while batch := result.fetchmany(PARQUET_BATCH):
        for (line,) in batch:
            number += 1
            yield number, _parse(source, number, (line or "").encode())


def _open(source: str) -> AbstractContextManager[IO[bytes]]:
    if source == STDIN:
        return nullcontext(sys.stdin.buffer)  # read it, leave it open
    if source.endswith(".gz"):
        return cast(IO[bytes], gzip.open(source, "rb"))
    return open(source, "rb")


def _parse(source: str, number: int, raw: bytes) -> LedgerRecord | LineProblem:
    try:
        return parse_line(raw)
    except orjson.JSONDecodeError as error:
        return LineProblem(source, number, f"not a JSON line: {error}")
    except LedgerLineError as error:
        return LineProblem(source, number, str(error))


def write_ledger(records: Iterable[LedgerRecord], target: str) -> Iterator[LedgerRecord]:
    """Write records as ledger lines to `target` (a path, `.gz` compressed, or `-` for standard output),
    passing each one on once written, so a caller can tally what went out."""
    with _create(target) as handle:
        for record in records:
            handle.write(orjson.dumps(record_line(record), option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE))
            yield record


def _create(target: str) -> AbstractContextManager[IO[bytes]]:
    if target == STDIN:
        return nullcontext(sys.stdout.buffer)
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    if target.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "wb"))
    return open(path, "wb")
