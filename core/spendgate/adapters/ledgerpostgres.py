"""The cluster ledger store: ledger records in PostgreSQL, idempotent on request id, partitioned by month.

Why PostgreSQL: it is the database most platform teams already run and back up, its NUMERIC is
exact at any scale, and declarative partitioning keeps a month of records one table to scan, to
archive, or to drop.

Tables (migration 1; `PostgresLedgerWriter.migrate` applies what is missing, under an advisory lock, so every proxy and
CLI can call it at start-up, concurrently, as often as it likes):

- `ledger_records`: one row per request, the report columns (ledgersql.RECORD_COLUMNS: exact
  NUMERIC cost, token counts) and the whole line as `record` jsonb, so nothing of a line is lost.
  Range-partitioned on `time` by UTC month; a month's partition is created when its first record
  arrives (`ledger_records_y2026m11`).
- `ledger_request_ids`: the idempotency key. PostgreSQL cannot hold a unique index across
  partitions, so this table owns the request ids: a record is inserted only together with its id.
  It keeps the md5 of the record's canonical JSON (jsonb text: key order and spacing do not count).
- `ledger_conflicts`: a record whose request id is already stored with a *different* digest. The
  ledger has one line per request; two different lines with one id mean a corrupted or tampered
  file, or two upstreams issuing the same id. The first record stays; the other is kept here, never
  counted, and the caller is told (the CLI fails, the proxy's sink logs an error and counts it).

An identical record sent again (a replayed spill file or ledger, a retried batch) changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Final

import psycopg

from spendgate.adapters.ledgersql import usage_query, usage_rows
from spendgate.logic.usage import Dimension, UsageRow

SCHEMA_LOCK: Final = 0x5EED_1ED6  # pg_advisory_xact_lock key: one migration or partition change at a time

SCHEMA_TABLE: Final = ("CREATE TABLE IF NOT EXISTS spendgate_ledger_schema "
                       "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
MIGRATIONS: Final = (
    # 1: records partitioned by month, the request-id index, conflicts.
    """
    CREATE TABLE ledger_records (
        time timestamptz NOT NULL,
        request_id text NOT NULL,
        endpoint text,
        key_name text,
        developer text,
        cost_center text,
        repo text,
        session text,
        requested_model text,
        served_model text,
        priced_model text,
        price_source text,
        outcome text NOT NULL,
        status integer NOT NULL,
        input_tokens bigint,
        cache_write_5m_tokens bigint,
        cache_write_1h_tokens bigint,
        cache_read_tokens bigint,
        output_tokens bigint,
        web_searches bigint,
        cost_usd numeric NOT NULL CHECK (cost_usd >= 0),
        flags text[] NOT NULL,
        record jsonb NOT NULL,
        PRIMARY KEY (request_id, time)
    ) PARTITION BY RANGE (time);
    CREATE TABLE ledger_request_ids (
        request_id text PRIMARY KEY,
        time timestamptz NOT NULL,
        digest text NOT NULL
    );
    CREATE TABLE ledger_conflicts (
        request_id text NOT NULL,
        digest text NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now(),
        record jsonb NOT NULL,
        PRIMARY KEY (request_id, digest)
    );
    """,
)

# Per connection: raw lines arrive by COPY, are parsed once by the server, then inserted.
STAGING: Final = """
    CREATE TEMP TABLE IF NOT EXISTS ledger_incoming (line text NOT NULL) ON COMMIT DELETE ROWS;
    CREATE TEMP TABLE IF NOT EXISTS ledger_parsed (LIKE ledger_records, digest text NOT NULL) ON COMMIT DELETE ROWS;
"""
# Raw JSON lines, unescaped: CSV with a delimiter and a quote that a JSON line never contains
# (JSON escapes every control character), so COPY takes each line as one field, byte for byte.
COPY_LINES: Final = "COPY ledger_incoming (line) FROM STDIN (FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')"
# Each line is parsed once (MATERIALIZED: the planner would otherwise repeat the cast for every field).
PARSE: Final = """
    WITH incoming AS MATERIALIZED (SELECT j, md5(j::text) AS digest FROM (
        SELECT line::jsonb AS j FROM ledger_incoming) AS cast_once)
    INSERT INTO ledger_parsed
    SELECT DISTINCT ON (j->>'requestId', digest)
        (j->>'time')::timestamptz, j->>'requestId', j->>'endpoint', j->>'keyName', j->>'developer',
        j->>'costCenter', j->>'repo', j->>'session', j->>'requestedModel', j->>'servedModel', j->>'pricedModel',
        j->>'priceSource', j->>'outcome', (j->>'status')::integer,
        (j->'tokens'->>'input')::bigint, (j->'tokens'->>'cacheWrite5m')::bigint,
        (j->'tokens'->>'cacheWrite1h')::bigint, (j->'tokens'->>'cacheRead')::bigint,
        (j->'tokens'->>'output')::bigint, (j->'tokens'->>'webSearches')::bigint,
        (j->>'costUSD')::numeric, ARRAY(SELECT jsonb_array_elements_text(j->'flags')), j, digest
    FROM incoming
"""
MONTHS: Final = "SELECT DISTINCT date_trunc('month', time AT TIME ZONE 'UTC')::date FROM ledger_parsed"
INSERT_NEW: Final = """
    WITH new AS (
        INSERT INTO ledger_request_ids (request_id, time, digest)
        SELECT DISTINCT ON (request_id) request_id, time, digest FROM ledger_parsed ORDER BY request_id, digest
        ON CONFLICT (request_id) DO NOTHING
        RETURNING request_id, digest
    )
    INSERT INTO ledger_records
    SELECT p.time, p.request_id, p.endpoint, p.key_name, p.developer, p.cost_center, p.repo, p.session,
           p.requested_model, p.served_model, p.priced_model, p.price_source, p.outcome, p.status,
           p.input_tokens, p.cache_write_5m_tokens, p.cache_write_1h_tokens, p.cache_read_tokens, p.output_tokens,
           p.web_searches, p.cost_usd, p.flags, p.record
    FROM ledger_parsed AS p JOIN new USING (request_id, digest)
"""
RECORD_CONFLICTS: Final = """
    INSERT INTO ledger_conflicts (request_id, digest, record)
    SELECT p.request_id, p.digest, p.record
    FROM ledger_parsed AS p JOIN ledger_request_ids AS known USING (request_id)
    WHERE known.digest <> p.digest
    ON CONFLICT (request_id, digest) DO NOTHING
    RETURNING request_id
"""


@dataclass
class IngestResult:
    inserted: int = 0
    duplicates: int = 0  # identical to a record already stored (or to one kept as a conflict): nothing changed
    conflicts: list[str] = field(default_factory=list)  # request ids stored with a different record

    def __iadd__(self, other: IngestResult) -> IngestResult:
        self.inserted += other.inserted
        self.duplicates += other.duplicates
        self.conflicts.extend(other.conflicts)
        return self


class LedgerConflict(Exception):
    """Records whose request id is stored with different content (kept in ledger_conflicts, not counted)."""

    def __init__(self, request_ids: Sequence[str]) -> None:
        shown = ", ".join(request_ids[:5]) + (f" and {len(request_ids) - 5} more" if len(request_ids) > 5 else "")
        super().__init__(f"{len(request_ids)} records have the request id of a different stored record ({shown}); "
                         "they are kept in the table ledger_conflicts and not counted")
        self.request_ids = list(request_ids)


def partition_statement(month: date) -> str:
    following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return (f"CREATE TABLE IF NOT EXISTS ledger_records_y{month.year:04d}m{month.month:02d} "
            f"PARTITION OF ledger_records FOR VALUES FROM ('{month.isoformat()} 00:00:00+00') "
            f"TO ('{following.isoformat()} 00:00:00+00')")


class PostgresLedgerWriter:
    """Inserts batches of raw ledger lines over one async connection (the proxy's sink, `ledger load`)."""

    def __init__(self, connection: psycopg.AsyncConnection) -> None:
        self._connection = connection
        self._months: set[date] = set()  # partitions known to exist
        self._staged = False

    @classmethod
    async def connect(cls, dsn: str, timeout: float = 5.0) -> PostgresLedgerWriter:
        connection = await psycopg.AsyncConnection.connect(dsn, connect_timeout=max(1, int(timeout)))
        await connection.execute("SET TIME ZONE 'UTC'")
        # Batches are small, statements simple: compiling them (JIT) costs more than it saves, and a batch's
        # sort fits in memory.
        await connection.execute("SET jit = off")
        await connection.execute("SET work_mem = '64MB'")
        await connection.commit()
        return cls(connection)

    @property
    def closed(self) -> bool:
        return self._connection.closed

    async def close(self) -> None:
        await self._connection.close()

    async def migrate(self) -> None:
        """Apply the migrations this database lacks. Idempotent, and safe from many writers at once."""
        async with self._connection.transaction():
            await self._connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            await self._connection.execute(SCHEMA_TABLE)
            cursor = await self._connection.execute("SELECT coalesce(max(version), 0) FROM spendgate_ledger_schema")
            row = await cursor.fetchone()
            current = int(row[0]) if row else 0
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                await self._connection.execute(script)
                await self._connection.execute("INSERT INTO spendgate_ledger_schema (version) VALUES (%s)", (version,))

    async def insert(self, lines: Sequence[bytes]) -> IngestResult:
        """Store each line once (one transaction); lines must be ledger records (JSON, newline-free)."""
        connection = self._connection
        if not self._staged:
            await connection.execute(STAGING)
            await connection.commit()
            self._staged = True
        async with connection.transaction():
            async with connection.cursor().copy(COPY_LINES) as copy:
                await copy.write(b"\n".join(lines) + b"\n")
            await connection.execute(PARSE)
            months = {row[0] for row in await (await connection.execute(MONTHS)).fetchall()} - self._months
            if months:
                await self._create_partitions(months)
            inserted = (await connection.execute(INSERT_NEW)).rowcount
            conflicts = [row[0] for row in await (await connection.execute(RECORD_CONFLICTS)).fetchall()]
        return IngestResult(inserted=inserted, duplicates=len(lines) - inserted - len(conflicts), conflicts=conflicts)

    async def _create_partitions(self, months: set[date]) -> None:
        # In a savepoint of the batch's transaction: concurrent writers serialize on the lock, and
        # IF NOT EXISTS makes the second one a no-op.
        async with self._connection.transaction():
            await self._connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for month in sorted(months):
                await self._connection.execute(partition_statement(month))
        self._months |= months


class PostgresLedger:
    """The report side: usage totals straight from the database (implements logic.usage.UsageSource)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    def _connect(self) -> psycopg.Connection:
        connection = psycopg.connect(self._dsn, connect_timeout=10)
        connection.execute("SET TIME ZONE 'UTC'")
        return connection

    def usage(self, start: datetime, end: datetime, by: Sequence[Dimension]) -> list[UsageRow]:
        query = usage_query("ledger_records", by, "%(start)s", "%(end)s")
        with self._connect() as connection:
            rows = connection.execute(query, {"start": start.astimezone(UTC), "end": end.astimezone(UTC)}).fetchall()
        return usage_rows(rows, by)

    def describe(self) -> str:
        info = psycopg.conninfo.conninfo_to_dict(self._dsn)
        return f"PostgreSQL database {info.get('dbname', '?')} on {info.get('host', 'localhost')}"
