"""The ledger: one JSON line per request, the input of dry-run and chargeback. Schema: docs/ledger.md.

Writes never wait on the disk per request: records are buffered and written together, at most
20 ms after the first of a batch (one write system call per batch, not per request). The one
exception is spend the spend sink journals: settle writes its line at once, before the journal
entry, so a SIGKILL never leaves journaled (budget-counted) spend missing from the ledger. A file
ledger rotates by size, like logrotate's `size` rule: `ledger.jsonl` becomes `ledger.jsonl.1`,
and so on up to the configured number of backups.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from spendgate.logic.ledgerrecord import LEDGER_SCHEMA
from spendgate.logic.pricing import Charge
from spendgate.logic.spend import exact
from spendgate.proxy.admission import Reroute
from spendgate.proxy.exchange import Exchange

SCHEMA_VERSION: Final = LEDGER_SCHEMA  # readers: spendgate.logic.ledgerrecord
STDOUT: Final = "-"
# Lines are written together: at most this long after the first of them, or at once past this many.
FLUSH_SECONDS: Final = 0.02
FLUSH_LINES: Final = 256


def _milliseconds(seconds: float | None) -> float | None:
    """To the microsecond (truncated: round() with digits costs more than the rest of the line)."""
    return int(seconds * 1_000_000) / 1000 if seconds is not None else None


def record(exchange: Exchange, charge: Charge | None) -> dict[str, Any]:
    """The ledger line of one settled request (schema spendgate.io/ledger/v2)."""
    attribution, identity = exchange.attribution, exchange.identity
    tokens = charge.tokens if charge else None
    decision = exchange.decision
    return {
        "schemaVersion": SCHEMA_VERSION,
        "time": exchange.received_at,
        "requestId": exchange.request_id,
        "method": exchange.method,
        "path": exchange.path,
        "endpoint": exchange.endpoint,
        "keyName": identity.key_name if identity else None,
        "developer": identity.developer if identity else None,
        "costCenter": identity.cost_center if identity else None,
        "repo": attribution.repo if attribution else None,
        "branch": attribution.branch if attribution else None,
        "session": attribution.session if attribution else None,
        "sessionSource": attribution.session_source if attribution else None,
        "requestClass": attribution.request_class if attribution else None,
        "agentId": attribution.agent_id if attribution else None,
        "requestedModel": exchange.requested_model,
        "servedModel": exchange.served_model or exchange.forwarded_model,
        "pricedModel": charge.model if charge else None,
        "priceSource": charge.source if charge else None,
        "stream": exchange.stream,
        "tokens": {
            "input": tokens.input, "cacheWrite5m": tokens.cache_write_5m, "cacheWrite1h": tokens.cache_write_1h,
            "cacheRead": tokens.cache_read, "output": tokens.output, "webSearches": tokens.web_searches,
        } if tokens else None,
        "costUSD": exact(charge.cost) if charge else "0",
        "status": exchange.status,
        "outcome": exchange.outcome,
        "errorType": exchange.error_type,
        "latencyMs": _milliseconds(exchange.total_seconds),
        "upstreamMs": _milliseconds(exchange.upstream_seconds),
        "addedMs": _milliseconds(exchange.added_seconds),
        "decision": {"action": decision.action, "reason": decision.reason,
                     "model": decision.model if isinstance(decision, Reroute) else None},
        "flags": sorted(exchange.flags | charge.flags) if charge else sorted(exchange.flags),
        "bundleVersion": exchange.bundle_version,
        "requestBytes": exchange.request_bytes,  # v2: replay estimates input tokens from it, as admission did
    }


class LedgerWriter:
    def __init__(self, target: str, max_bytes: int, backups: int) -> None:
        self._path = None if target == STDOUT else Path(target)
        self._max_bytes = max_bytes
        self._backups = max(1, backups)
        self._pending: list[bytes] = []
        self._scheduled = False
        self._file: BinaryIO = self._open()

    def _open(self) -> BinaryIO:
        if self._path is None:
            return sys.stdout.buffer
        self._path.parent.mkdir(parents=True, exist_ok=True)
        return self._path.open("ab")

    def write(self, line: dict[str, Any], now: bool = False) -> None:
        """Buffer the line (written within FLUSH_SECONDS); with `now`, write it and the batch at once."""
        self._pending.append(orjson.dumps(line, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE))
        if now or len(self._pending) >= FLUSH_LINES:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._file.write(data)
        self._file.flush()
        if self._path is not None and self._file.tell() >= self._max_bytes:
            self._rotate(self._path)

    def _rotate(self, path: Path) -> None:
        self._file.close()
        for number in range(self._backups - 1, 0, -1):
            older = path.with_name(f"{path.name}.{number}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{number + 1}"))
        path.replace(path.with_name(f"{path.name}.1"))
        self._file = self._open()

    def close(self) -> None:
        self.flush()
        if self._path is not None:
            self._file.close()
