"""The proxy's local spend journal: settled spend that must survive a SIGKILL.

Each settled request appends one line with one write() to a file opened O_APPEND. Once write()
returns, the bytes are in the kernel's page cache, so killing the process (even with SIGKILL)
cannot lose them; only a machine crash could, and `fsync=True` covers that at a latency cost.
The proxy appends before it hands the last bytes of a response to the client, so spend it has
answered for is always on disk.

Replaying the journal rebuilds the cumulative spend per (budget, window) after a restart; a
torn last line (the process died inside write()) is ignored, since that request was never
answered for. Standalone mode uses the journal as its embedded spend store.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import orjson

from spendgate.logic.tracker import Charge, Totals


class SpendJournal:
    def __init__(self, path: Path, fsync: bool = False) -> None:
        self.path = path
        self._fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._end_torn_line()

    def _end_torn_line(self) -> None:
        """A predecessor killed inside write() may have left half a line; the next line must not join it."""
        size = self.path.stat().st_size
        if size == 0:
            return
        with self.path.open("rb") as handle:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                os.write(self._fd, b"\n")

    def append(self, request_id: str, charges: Sequence[Charge], cost: Decimal) -> None:
        os.write(self._fd, orjson.dumps({"r": request_id, "c": str(cost), "b": charges}) + b"\n")
        if self._fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def replay(self) -> dict[Charge, Totals]:
        return totals(read_entries(self.path))

    def compact(self, keep: Iterable[Charge]) -> None:
        """Rewrite the journal with one line per kept (budget, window): old windows fall away."""
        current = self.replay()
        kept = {charge: current[charge] for charge in keep if charge in current}
        temporary = self.path.with_suffix(".compact")
        with temporary.open("w") as handle:
            for (budget, window), total in sorted(kept.items()):
                handle.write(json.dumps({"r": f"compacted:{total.requests}", "c": str(total.spent),
                                         "b": [[budget, window]], "n": total.requests}, separators=(",", ":")) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.close(self._fd)
        temporary.replace(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


@dataclass(frozen=True)
class Entry:
    request_id: str
    cost: Decimal
    charges: tuple[Charge, ...]
    requests: int = 1


def read_entries(path: Path) -> list[Entry]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_bytes().split(b"\n"):
        try:
            raw = json.loads(line)
            entries.append(Entry(raw["r"], Decimal(raw["c"]), tuple((b, w) for b, w in raw["b"]), raw.get("n", 1)))
        except (ValueError, KeyError, TypeError, InvalidOperation):
            continue  # an empty or torn line: that request was never answered for
    return entries


def totals(entries: Iterable[Entry]) -> dict[Charge, Totals]:
    result: dict[Charge, Totals] = defaultdict(lambda: Totals(Decimal(0), 0))
    for entry in entries:
        for charge in entry.charges:
            result[charge].spent += entry.cost
            result[charge].requests += entry.requests
    return dict(result)
