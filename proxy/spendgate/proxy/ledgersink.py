"""The PostgreSQL ledger sink: a second consumer of the ledger lines the LedgerWriter writes.

Off the hot path: `offer` (called for every ledger line, on the event loop) only appends the line's
bytes to a bounded queue. A background task takes batches from it and stores them with one COPY
and two statements (spendgate.adapters.ledgerpostgres), so PostgreSQL parses the lines, not us.

Nothing is lost and nothing counted twice:
- records are idempotent on request id, so any line may be sent again (a batch retried after a
  lost acknowledgement, a spill file replayed, a whole ledger loaded with `spendgate ledger load`);
- when the database is down, slow or refuses a batch, the batch goes to the spill file (one
  append, as the file ledger does), and so does every line offered while the queue is full: the
  queue bounds memory and a full queue never blocks a request. Once the database answers again the
  spill file is replayed (renamed aside first, so lines spilled meanwhile go to a new one), then
  removed;
- a stopping proxy sends what is queued (for a few seconds), spills the rest, and the next start
  replays the spill file. Lines still queued when a proxy is killed with SIGKILL (at most one batch
  interval's worth) are in its file ledger: `spendgate ledger load` of that file fills the gap,
  and stores nothing twice.
A request id stored with different content is a conflict: kept in ledger_conflicts, logged as an
error and counted (spendgate_ledger_postgres_lines{result="conflict"}). A line the database refuses
for its content (a torn last line of a spill file) goes to the `.rejected` file beside the spill
file, logged and counted; neither is retried for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge

from spendgate.adapters.ledgerpostgres import IngestResult, PostgresLedgerWriter

logger = logging.getLogger("spendgate.proxy.ledgersink")

BATCH_LINES: Final = 5000
INTERVAL: Final = 1.0  # seconds between batches (fewer, larger batches: their round trips cost the gateway CPU)
MAX_QUEUED_LINES: Final = 20_000  # about 20 MB; past this, lines go straight to the spill file
BACKOFF: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before reconnecting, after each failure in a row
CONNECT_TIMEOUT: Final = 5.0
BATCH_TIMEOUT: Final = 30.0  # a batch the database has not stored by then counts as failed (and is spilled)
CLOSE_TIMEOUT: Final = 5.0  # how long a stopping proxy keeps sending before it spills the rest
REPLAYING_SUFFIX: Final = ".replaying"
REJECTED_SUFFIX: Final = ".rejected"


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lines = Counter("spendgate_ledger_postgres_lines", "Ledger lines by what the PostgreSQL sink did with "
                             "them: stored, duplicate (already stored), conflict (another record under the request "
                             "id), spilled (to the spill file), rejected (refused by the database for its content: "
                             "kept in the .rejected file), lost (the spill file could not be written either: only "
                             "in the file ledger).", ["result"], registry=registry)
        self.queued = Gauge("spendgate_ledger_postgres_queued_lines", "Ledger lines waiting for PostgreSQL in memory.",
                            registry=registry)
        self.spilled = Gauge("spendgate_ledger_postgres_spill_bytes", "Bytes waiting in the spill file.",
                             registry=registry)
        self.up = Gauge("spendgate_ledger_postgres_up", "1 while the last batch reached PostgreSQL.",
                        registry=registry)


class PostgresLedgerSink:
    def __init__(self, dsn: str, spill: Path, registry: CollectorRegistry, batch_lines: int = BATCH_LINES,
                 interval: float = INTERVAL, max_queued_lines: int = MAX_QUEUED_LINES) -> None:
        self._dsn = dsn  # never logged: it may hold a password
        self.spill = spill
        self._replaying = spill.with_name(spill.name + REPLAYING_SUFFIX)
        self.rejected = spill.with_name(spill.name + REJECTED_SUFFIX)
        self._batch_lines, self._interval, self._max_queued = batch_lines, interval, max_queued_lines
        self._queue: deque[bytes] = deque()
        self._wakeup = asyncio.Event()
        self._writer: PostgresLedgerWriter | None = None
        self._failures = 0
        self._retry_at = 0.0  # monotonic time of the next connection attempt after a failure
        self._closed = False
        self.metrics = SinkMetrics(registry)
        self.where = _where(dsn)
        spill.parent.mkdir(parents=True, exist_ok=True)
        self._spill_fd = os.open(spill, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.metrics.spilled.set(self._spill_size())

    # the hot path ------------------------------------------------------------------------------

    def offer(self, line: bytes) -> None:
        """Called with each ledger line (JSON and a newline): queued, or spilled when the queue is full."""
        if self._closed or len(self._queue) >= self._max_queued:
            self._to_spill([line])
            return
        self._queue.append(line)
        if len(self._queue) >= self._batch_lines:
            self._wakeup.set()

    # the background task -----------------------------------------------------------------------

    async def run(self) -> None:
        """Send batches for as long as the proxy runs; replay the spill file whenever the database answers.
        While it does not, the queue goes to the spill file every interval (small writes, memory stays low)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._interval)
            self._wakeup.clear()
            self.metrics.queued.set(len(self._queue))
            if not await self._connected():
                self._spill_queue()
                continue
            if self._spill_size() or self._replaying.exists():
                await self._replay()
            # What was queued when the interval ended, in full batches: lines arriving meanwhile wait for the
            # next round (chasing them would send many small batches, each costing its round trips).
            waiting = len(self._queue)
            while waiting > 0 and await self._send(self._take(min(waiting, self._batch_lines))):
                waiting -= self._batch_lines

    def _take(self, count: int | None = None) -> list[bytes]:
        count = min(len(self._queue), self._batch_lines if count is None else count)
        return [self._queue.popleft() for _ in range(count)]

    async def _connected(self) -> bool:
        """Connected, or connected now; after a failure, the next attempt waits for its backoff."""
        if self._writer is not None and not self._writer.closed:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._writer = await asyncio.wait_for(PostgresLedgerWriter.connect(self._dsn, CONNECT_TIMEOUT),
                                                  CONNECT_TIMEOUT + 1)
            await asyncio.wait_for(self._writer.migrate(), BATCH_TIMEOUT)
        except (psycopg.Error, OSError, TimeoutError) as error:
            await self._lost(error)
            return False
        if self._failures:
            logger.warning("PostgreSQL ledger at %s reachable again after %d failed attempts", self.where,
                           self._failures)
        self._failures = 0
        self.metrics.up.set(1)
        return True

    async def _send(self, lines: list[bytes]) -> bool:
        """Store one batch; if the database fails, the batch is spilled (never lost) and False returned."""
        try:
            await self._store(lines)
        except asyncio.CancelledError:  # the proxy is stopping: the batch may or may not be stored, so keep it
            self._to_spill(lines)
            await self._drop_writer()
            raise
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError) as error:
            self._to_spill(lines)
            await self._lost(error)
            return False
        return True

    async def _store(self, lines: list[bytes]) -> None:
        """Insert a batch. A batch the database refuses for its content (not for being down) is stored line by
        line, and a line it refuses alone goes to the rejected file (a torn spill line, say), never retried."""
        assert self._writer is not None
        try:
            self._count(await asyncio.wait_for(self._writer.insert([line.rstrip(b"\n") for line in lines]),
                                               BATCH_TIMEOUT))
            return
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as refused:
            if len(lines) == 1:
                self._reject(lines[0], refused)
                return
        for line in lines:
            await self._store([line])

    def _reject(self, line: bytes, error: psycopg.Error) -> None:
        with self.rejected.open("ab") as handle:
            handle.write(line if line.endswith(b"\n") else line + b"\n")
        self.metrics.lines.labels("rejected").inc()
        logger.error("PostgreSQL refused a ledger line (%s), kept in %s: %.200s", type(error).__name__,
                     self.rejected, line)

    def _count(self, result: IngestResult) -> None:
        self.metrics.lines.labels("stored").inc(result.inserted)
        self.metrics.lines.labels("duplicate").inc(result.duplicates)
        if result.conflicts:
            self.metrics.lines.labels("conflict").inc(len(result.conflicts))
            logger.error("%d ledger lines have the request id of a different stored record (kept in the table "
                         "ledger_conflicts, not counted): %s", len(result.conflicts), ", ".join(result.conflicts[:5]))

    async def _lost(self, error: BaseException) -> None:
        self._failures += 1
        self._retry_at = time.monotonic() + BACKOFF[min(self._failures, len(BACKOFF)) - 1]
        self.metrics.up.set(0)
        if self._failures == 1:  # once per outage; the metric says how long it lasts
            logger.error("PostgreSQL ledger at %s unavailable (%s); spilling ledger lines to %s", self.where,
                         type(error).__name__, self.spill)
        await self._drop_writer()

    async def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.close()

    # the spill file ----------------------------------------------------------------------------

    def _to_spill(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        try:
            os.write(self._spill_fd, data)
        except OSError as error:  # a full disk: the lines are still in the file ledger (`ledger load` them)
            self.metrics.lines.labels("lost").inc(len(lines))
            logger.error("cannot write the PostgreSQL spill file %s (%s): %d ledger lines only in the file ledger",
                         self.spill, error.strerror, len(lines))
            return
        self.metrics.lines.labels("spilled").inc(len(lines))
        self.metrics.spilled.inc(len(data))

    def _spill_queue(self) -> None:
        if self._queue:
            self._to_spill(self._take_all())

    def _take_all(self) -> list[bytes]:
        lines = list(self._queue)
        self._queue.clear()
        return lines

    def _spill_size(self) -> int:
        try:
            return self.spill.stat().st_size
        except FileNotFoundError:
            return 0

    async def _replay(self) -> None:
        """Send the spilled lines: set aside (a crash mid-replay leaves the aside file for the next try), sent
        batch by batch, removed once all are stored. Lines spilled meanwhile start a new spill file."""
        if not self._replaying.exists():
            self.spill.replace(self._replaying)
            os.close(self._spill_fd)
            self._spill_fd = os.open(self.spill, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        started, count = time.monotonic(), 0
        with self._replaying.open("rb") as handle:
            batch: list[bytes] = []
            for line in handle:
                if not line.strip():
                    continue
                if not line.endswith(b"\n"):  # a torn last line: the process died inside write()
                    line += b"\n"
                batch.append(line)
                if len(batch) >= self._batch_lines:
                    if not await self._resend(batch):
                        return
                    count += len(batch)
                    batch = []
            if batch and not await self._resend(batch):
                return
            count += len(batch)
        self._replaying.unlink()
        self.metrics.spilled.set(self._spill_size())
        logger.warning("replayed %d spilled ledger lines into PostgreSQL in %.1f s", count, time.monotonic() - started)

    async def _resend(self, lines: list[bytes]) -> bool:
        """A replayed batch: if the database fails, it stays in the aside file (not spilled again)."""
        try:
            await self._store(lines)
        except asyncio.CancelledError:
            await self._drop_writer()
            raise
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError) as error:
            await self._lost(error)
            return False
        return True

    # stopping ----------------------------------------------------------------------------------

    async def close(self) -> None:
        """Send what is queued for up to CLOSE_TIMEOUT seconds, spill the rest; later lines are spilled."""
        self._closed = True
        try:
            await asyncio.wait_for(self._drain(), CLOSE_TIMEOUT)
        except TimeoutError:
            logger.warning("PostgreSQL ledger at %s too slow while stopping: the rest goes to %s", self.where,
                           self.spill)
        self._spill_queue()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer.close()

    async def _drain(self) -> None:
        """What is queued, and what a spill file holds, while the database answers."""
        if not await self._connected():
            return
        if self._spill_size() or self._replaying.exists():
            await self._replay()
        while self._queue and await self._connected() and await self._send(self._take()):
            pass  # each _send spills its batch if it fails


def _where(dsn: str) -> str:
    """The database's host and name, for logs: never the DSN (it may hold a password)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(an unreadable DSN)"
    return f"{info.get('host', 'localhost')}/{info.get('dbname', '')}"


class SinkConfigError(ValueError):
    """The sink cannot be set up as given (the message never holds the DSN)."""


def attach(proxy_ledger_consumers: list[Callable[[bytes], None]],
           companions: list[Callable[[], Coroutine[Any, Any, None]]],
           finalizers: list[Callable[[], Coroutine[Any, Any, None]]], dsn: str, spill: Path,
           registry: CollectorRegistry) -> PostgresLedgerSink:
    """The sink as a second consumer of the proxy's ledger lines, its task beside the servers, its close on stop.
    The database is not contacted here: a proxy starts (and spills) while PostgreSQL is down."""
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        raise SinkConfigError("--ledger-postgres is not a PostgreSQL connection string "
                              "(e.g. postgresql://spendgate@db:5432/spendgate)") from None
    try:
        sink = PostgresLedgerSink(dsn, spill, registry)
    except OSError as error:
        raise SinkConfigError(f"cannot open the PostgreSQL spill file {spill}: {error.strerror}") from None
    proxy_ledger_consumers.append(sink.offer)
    companions.append(sink.run)
    finalizers.append(sink.close)
    logger.info("ledger lines also go to PostgreSQL at %s (spill file %s)", sink.where, spill)
    return sink
