"""The proxy's local spend journal: every forwarded request and the spend it settled, SIGKILL-safe.

Two kinds of line, each appended with one write() to a file opened O_APPEND:
- a start line (`{"s": exchange id, "b": charges, "e": estimate, "l": ledger context, "o": ledger
  position}`), written before the request goes upstream: Anthropic bills what it serves, so a
  request the proxy was killed in the middle of must still be accounted for;
- a settle line (`{"r": request id, "c": cost, "b": charges, "x": exchange id}`), written after the
  request's ledger line and before the last bytes of its response go to the client.

Once write() returns, the bytes are in the kernel's page cache, so killing the process (even with
SIGKILL) cannot lose them; only a machine crash could, and `fsync=True` covers that at a latency
cost. Replaying the journal rebuilds the cumulative spend per (budget, window) after a restart,
and lists the started requests that never settled (spendgate.proxy.recovery settles them). A torn
last line (the process died inside write()) is ignored; a damaged line anywhere else is counted
and reported, never guessed at. Standalone mode uses the journal as its embedded spend store.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

from spendgate.logic.tracker import Charge, Totals

logger = logging.getLogger("spendgate.journal")

STATE_DIR_ENV = "SPENDGATE_STATE_DIR"
JOURNAL_NAME = "spend.journal"


def default_state_dir(port: int) -> Path:
    """Where a proxy on client port `port` keeps its journal unless told (`--state-dir`)."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    return Path.home() / ".local" / "state" / "spendgate" / str(port)


@dataclass(frozen=True)
class Entry:
    """A settled request (or, after compaction, the sum of several)."""

    request_id: str
    cost: Decimal
    charges: tuple[Charge, ...]
    requests: int = 1
    exchange_id: str | None = None


@dataclass(frozen=True)
class Started:
    """A request as it went upstream: enough to settle it at its estimate if it never finished."""

    exchange_id: str
    charges: tuple[Charge, ...]
    estimate: Decimal
    context: Mapping[str, Any]  # the ledger line as far as it was known (spendgate.proxy.ledger)
    ledger_position: tuple[int, int] | None  # (inode, offset) of the ledger file when it started
    raw: bytes  # the line as written, kept by compaction while the request is unsettled


@dataclass
class Contents:
    entries: list[Entry] = field(default_factory=list)
    started: dict[str, Started] = field(default_factory=dict)
    damaged: list[int] = field(default_factory=list)  # line numbers, the torn last line excluded

    def unfinished(self) -> list[Started]:
        """Started requests with no settle line, oldest first."""
        settled = {entry.exchange_id for entry in self.entries if entry.exchange_id}
        return [started for xid, started in self.started.items() if xid not in settled]


class SpendJournal:
    def __init__(self, path: Path, fsync: bool = False) -> None:
        self.path = path
        self._fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._end_torn_line()
        self._appended = 0

    def _end_torn_line(self) -> None:
        """A predecessor killed inside write() may have left half a line; the next line must not join it."""
        size = self.path.stat().st_size
        if size == 0:
            return
        with self.path.open("rb") as handle:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                os.write(self._fd, b"\n")

    def _write(self, line: bytes) -> None:
        os.write(self._fd, line)
        self._appended += len(line)
        if self._fsync:
            os.fsync(self._fd)

    def start(self, exchange_id: str, charges: Sequence[Charge], estimate: Decimal, context: Mapping[str, Any],
              ledger_position: tuple[int, int] | None) -> bytes:
        line = orjson.dumps({"s": exchange_id, "b": charges, "e": str(estimate), "l": context,
                             "o": ledger_position}, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE)
        self._write(line)
        return line

    def append(self, request_id: str, charges: Sequence[Charge], cost: Decimal, exchange_id: str | None = None
               ) -> None:
        line = {"r": request_id, "c": str(cost), "b": charges}
        if exchange_id is not None:
            line["x"] = exchange_id
        self._write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))

    def close(self) -> None:
        os.close(self._fd)

    def read(self) -> Contents:
        contents = read_journal(self.path)
        if contents.damaged:
            logger.error("%s: %d damaged lines ignored (line %s%s); their spend is not counted", self.path,
                         len(contents.damaged), ", ".join(map(str, contents.damaged[:5])),
                         ", ..." if len(contents.damaged) > 5 else "")
        return contents

    def replay(self) -> dict[Charge, Totals]:
        return totals(self.read().entries)

    def written_since_rewrite(self) -> int:
        return self._appended

    def rewrite(self, totals: Mapping[Charge, Totals], open_lines: Iterable[bytes]) -> None:
        """Replace the journal (atomically: a temporary file, fsync, rename) with one line per
        (budget, window) total and the start lines of requests it has not settled."""
        temporary = self.path.with_suffix(".rewrite")
        with temporary.open("wb") as handle:
            for (budget, window), total in sorted(totals.items()):
                handle.write(orjson.dumps({"r": f"compacted:{total.requests}", "c": str(total.spent),
                                           "b": [[budget, window]], "n": total.requests},
                                          option=orjson.OPT_APPEND_NEWLINE))
            for line in open_lines:
                handle.write(line if line.endswith(b"\n") else line + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.close(self._fd)
        temporary.replace(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._appended = 0


def _charges(raw: Any) -> tuple[Charge, ...]:
    return tuple((str(budget), str(window)) for budget, window in raw)


def _position(raw: Any) -> tuple[int, int] | None:
    return (int(raw[0]), int(raw[1])) if isinstance(raw, list) and len(raw) == 2 else None


def read_journal(path: Path) -> Contents:
    contents = Contents()
    if not path.exists():
        return contents
    number = 0
    with path.open("rb") as handle:  # line by line: memory stays flat whatever the journal's size
        for number, line in enumerate(handle, start=1):
            _read_line(contents, number, line.rstrip(b"\n"))
    if contents.damaged and contents.damaged[-1] == number:  # a torn last line: never answered for
        contents.damaged.pop()
    return contents


def _read_line(contents: Contents, number: int, line: bytes) -> None:
    if not line:
        return
    try:
        raw = orjson.loads(line)
        if "s" in raw:
            xid = str(raw["s"])
            contents.started[xid] = Started(xid, _charges(raw["b"]), Decimal(raw["e"]), dict(raw["l"]),
                                            _position(raw.get("o")), line)
        else:
            contents.entries.append(Entry(str(raw["r"]), Decimal(raw["c"]), _charges(raw["b"]),
                                          int(raw.get("n", 1)), raw.get("x")))
    except (ValueError, KeyError, TypeError, InvalidOperation):
        contents.damaged.append(number)


def read_entries(path: Path) -> list[Entry]:
    return read_journal(path).entries


def totals(entries: Iterable[Entry]) -> dict[Charge, Totals]:
    result: dict[Charge, Totals] = defaultdict(lambda: Totals(Decimal(0), 0))
    for entry in entries:
        for charge in entry.charges:
            result[charge].spent += entry.cost
            result[charge].requests += entry.requests
    return dict(result)
