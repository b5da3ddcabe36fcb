"""The ledger: one JSON line per request, the input of dry-run and chargeback. Schema: docs/ledger.md.

Writes never wait on the disk per request: records are buffered and written together, at most
20 ms after the first of a batch (one write system call per batch, not per request). The one
exception is a request the spend sink journals: settle writes its line at once, before the journal's
settle line, so a SIGKILL never leaves journaled (budget-counted) spend missing from the ledger. A
file ledger rotates by size, like logrotate's `size` rule: `ledger.jsonl` becomes `ledger.jsonl.1`,
and so on up to the configured number of backups.

A write that fails (a full disk, a closed stdout) loses nothing it can keep: the lines stay queued
(up to MAX_QUEUED_BYTES; past that the oldest are dropped, loudly) and are retried at the next
write or every RETRY_SECONDS. It never raises into the request path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from spendgate.logic.ledgerrecord import LEDGER_SCHEMA
from spendgate.logic.pricing import Charge
from spendgate.logic.spend import exact
from spendgate.proxy.admission import Reroute
from spendgate.proxy.exchange import Exchange
from spendgate.proxy.metrics import ProxyMetrics

SCHEMA_VERSION: Final = LEDGER_SCHEMA  # readers: spendgate.logic.ledgerrecord
STDOUT: Final = "-"
# Lines are written together: at most this long after the first of them, or at once past this many.
FLUSH_SECONDS: Final = 0.02
FLUSH_LINES: Final = 256
# While the ledger cannot be written: how much to keep queued, and how often to try again.
MAX_QUEUED_BYTES: Final = 64 * 1024 * 1024
RETRY_SECONDS: Final = 1.0
EXCHANGE_FIELD: Final = b'"exchangeId":"'
# Every line has every field, in this order (docs/ledger.md).
LINE_FIELDS: Final = (
    "schemaVersion", "time", "requestId", "exchangeId", "method", "path", "endpoint", "keyName", "developer",
    "costCenter", "repo", "branch", "session", "sessionSource", "requestClass", "agentId", "requestedModel",
    "servedModel", "pricedModel", "priceSource", "stream", "tokens", "costUSD", "status", "outcome", "errorType",
    "latencyMs", "upstreamMs", "addedMs", "decision", "flags", "bundleVersion", "requestBytes",
)

logger = logging.getLogger("spendgate.proxy.ledger")


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
        "exchangeId": exchange.id,
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


def minimal_record(exchange: Exchange, charge: Charge | None) -> dict[str, Any]:
    """The line of a request whose full line could not be built (a bug): every field present, as the
    schema wants, with what reconciles money filled in and the rest null."""
    known = {
        "schemaVersion": SCHEMA_VERSION, "time": exchange.received_at, "requestId": exchange.request_id,
        "exchangeId": exchange.id, "method": exchange.method, "path": exchange.path, "stream": exchange.stream,
        "costUSD": exact(charge.cost) if charge else "0", "status": exchange.status, "outcome": exchange.outcome,
        "decision": {"action": exchange.decision.action, "reason": "", "model": None},
        "flags": sorted(exchange.flags | charge.flags) if charge else sorted(exchange.flags), "bundleVersion": "",
    }
    return {field: known.get(field) for field in LINE_FIELDS}


class LedgerWriter:
    def __init__(self, target: str, max_bytes: int, backups: int, metrics: ProxyMetrics | None = None) -> None:
        self._path = None if target == STDOUT else Path(target)
        self._max_bytes = max_bytes
        self._backups = max(1, backups)
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._scheduled = False
        self._failing = False
        self._metrics = metrics
        # Further consumers of every line (the PostgreSQL sink): called with the line's bytes, must not block.
        self.consumers: list[Callable[[bytes], None]] = []
        self._file: BinaryIO | None = self._open()

    def _open(self) -> BinaryIO:
        if self._path is None:
            return sys.stdout.buffer
        self._path.parent.mkdir(parents=True, exist_ok=True)
        return self._path.open("ab")

    def position(self) -> tuple[int, int] | None:
        """(inode, size) of the ledger file now: a line written from here on is at or after it."""
        if self._path is None or self._file is None:
            return None
        try:
            return os.fstat(self._file.fileno()).st_ino, self._file.tell()
        except (OSError, ValueError):
            return None

    def write(self, line: dict[str, Any], now: bool = False) -> bool:
        """Queue the line (written within FLUSH_SECONDS); with `now`, write it and the queue at once.

        True when the line is written (`now`) or queued behind a healthy writer; False when it is
        queued behind a failing one (the caller must not journal it as written)."""
        data = orjson.dumps(line, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE)
        self._queue(data)
        for consume in self.consumers:
            consume(data)
        if now or len(self._pending) >= FLUSH_LINES:
            return self.flush()
        if not self._scheduled:
            self._schedule(FLUSH_SECONDS)
        return not self._failing

    def _queue(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        while self._pending_bytes > MAX_QUEUED_BYTES and len(self._pending) > 1:
            dropped = self._pending.popleft()
            self._pending_bytes -= len(dropped)
            if self._metrics is not None:
                self._metrics.ledger_lines_dropped.inc()
            logger.error("ledger queue over %d MiB while the ledger cannot be written: dropped the oldest line: %s",
                         MAX_QUEUED_BYTES // (1024 * 1024), dropped[:200])

    def _schedule(self, delay: float) -> None:
        try:
            asyncio.get_running_loop().call_later(delay, self._flush_later)
            self._scheduled = True
        except RuntimeError:  # no event loop (a tool, shutdown): write at once
            self.flush()

    def _flush_later(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> bool:
        """Write everything queued; False (and a retry scheduled) when the write failed."""
        if not self._pending:
            return True
        data = b"".join(self._pending)
        try:
            if self._file is None:
                self._file = self._open()
            self._file.write(data)
            self._file.flush()
        except (OSError, ValueError) as error:  # ValueError: a closed file
            return self._write_failed(error)
        self._pending.clear()
        self._pending_bytes = 0
        if self._failing:
            self._failing = False
            logger.warning("the ledger is written again")
        if self._path is not None and self._file.tell() >= self._max_bytes:
            self._rotate(self._path)
        return True

    def _write_failed(self, error: Exception) -> bool:
        if self._metrics is not None:
            self._metrics.ledger_write_errors.inc()
        if not self._failing:
            logger.error("cannot write the ledger (%s): %d lines kept queued, retrying every %.0f s",
                         error, len(self._pending), RETRY_SECONDS)
        self._failing = True
        if self._path is not None and self._file is not None:  # reopen on the next try (a rotated-away file)
            self._file.close()
            self._file = None
        if not self._scheduled:
            self._schedule_retry()
        return False

    def _schedule_retry(self) -> None:
        try:
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self._flush_later)
            self._scheduled = True
        except RuntimeError:
            pass

    def _rotate(self, path: Path) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        for number in range(self._backups - 1, 0, -1):
            older = path.with_name(f"{path.name}.{number}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{number + 1}"))
        path.replace(path.with_name(f"{path.name}.1"))
        self._file = self._open()

    def close(self) -> None:
        if not self.flush():
            logger.error("closing with %d ledger lines that could not be written", len(self._pending))
        if self._path is not None and self._file is not None:
            self._file.close()

    def find(self, exchange_ids: set[str]) -> dict[str, dict[str, Any]]:
        """The lines of these exchanges already in the ledger file (the current one and the last
        rotated one), for recovery after a kill. A stdout ledger cannot be read back: {}."""
        self.flush()
        if self._path is None or not exchange_ids:
            return {}
        found: dict[str, dict[str, Any]] = {}
        for path in (self._path.with_name(f"{self._path.name}.1"), self._path):
            for line in _lines(path):
                exchange_id = _exchange_id(line)
                if exchange_id in exchange_ids:
                    found[exchange_id] = orjson.loads(line)
        return found


def _lines(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as handle:
            yield from handle
    except FileNotFoundError:
        return


def _exchange_id(line: bytes) -> str | None:
    start = line.find(EXCHANGE_FIELD)
    if start < 0:
        return None
    start += len(EXCHANGE_FIELD)
    end = line.find(b'"', start)
    return line[start:end].decode("ascii", "replace") if end > start else None
