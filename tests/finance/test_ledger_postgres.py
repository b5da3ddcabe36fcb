"""The PostgreSQL ledger store on a real server: exact sums, idempotent on request id, loud conflicts,
partitions by month created on demand, an idempotent migration, concurrent writers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import psycopg
import pytest

from database.postgres import PostgresServer
from finance.ledgerlines import dumps, line
from spendgate.adapters.ledgerpostgres import PostgresLedger, PostgresLedgerWriter
from spendgate.logic.usage import Dimension, Month

NOVEMBER = Month(2026, 11)


async def store(dsn: str, *batches: list[bytes]) -> list[tuple[int, int, list[str]]]:
    writer = await PostgresLedgerWriter.connect(dsn)
    try:
        await writer.migrate()
        results = [await writer.insert(batch) for batch in batches]
    finally:
        await writer.close()
    return [(result.inserted, result.duplicates, result.conflicts) for result in results]


def november_total(dsn: str) -> tuple[int, Decimal]:
    rows = PostgresLedger(dsn).usage(NOVEMBER.start, NOVEMBER.end, ())
    return (rows[0].totals.records, rows[0].totals.cost) if rows else (0, Decimal(0))


@pytest.fixture
def dsn(postgres: PostgresServer) -> str:
    return postgres.new_database()


def test_costs_sum_exactly_and_tokens_by_type(dsn: str) -> None:
    batch = dumps(line("req_1", cost="0.000000015"), line("req_2", cost="1.1"),
                  line("req_3", cost="0.000000001", developer="bob", tokens={"output": 7, "webSearches": 2}))
    assert asyncio.run(store(dsn, batch)) == [(3, 0, [])]

    rows = PostgresLedger(dsn).usage(NOVEMBER.start, NOVEMBER.end, [Dimension.DEVELOPER])
    by_developer = {row.key: row.totals for row in rows}
    assert by_developer[("alice",)].cost == Decimal("1.100000015")
    assert by_developer[("bob",)].cost == Decimal("0.000000001")
    assert (by_developer[("bob",)].tokens.output, by_developer[("bob",)].tokens.web_searches) == (7, 2)
    assert by_developer[("alice",)].tokens.cache_read == 4000


def test_replaying_the_same_records_changes_nothing(dsn: str) -> None:
    batch = dumps(line("req_1"), line("req_2"), line("req_2"))  # one duplicate inside the batch, too
    reordered = [orjson.dumps(dict(reversed(list(record.items())))) for record in (line("req_1"), line("req_2"))]

    results = asyncio.run(store(dsn, batch, batch, reordered))

    assert results == [(2, 1, []), (0, 3, []), (0, 2, [])]  # key order does not make a record different
    assert november_total(dsn) == (2, Decimal("0.002736"))


def test_a_different_record_under_a_stored_request_id_is_kept_aside_and_reported(dsn: str) -> None:
    asyncio.run(store(dsn, dumps(line("req_1", cost="1.00"))))

    results = asyncio.run(store(dsn, dumps(line("req_1", cost="9.00"), line("req_2", cost="2.00"))))

    assert results == [(1, 0, ["req_1"])]
    assert november_total(dsn) == (2, Decimal("3.00"))
    with psycopg.connect(dsn) as connection:
        kept = connection.execute("SELECT request_id, record->>'costUSD' FROM ledger_conflicts").fetchall()
    assert kept == [("req_1", "9.00")]
    # Reported once: sending the same conflicting record again adds nothing.
    assert asyncio.run(store(dsn, dumps(line("req_1", cost="9.00")))) == [(0, 1, [])]


def test_months_get_their_own_partitions_on_demand(dsn: str) -> None:
    batch = dumps(line("req_oct", time="2026-10-31T23:59:59.999999Z"), line("req_nov", time="2026-11-01T00:00:00Z"),
                  line("req_dec", time="2026-12-31T23:00:00.5Z"))
    asyncio.run(store(dsn, batch))

    with psycopg.connect(dsn) as connection:
        partitions = connection.execute(
            "SELECT child.relname, count(r.*) FROM pg_inherits JOIN pg_class child ON child.oid = inhrelid "
            "LEFT JOIN ledger_records r ON r.tableoid = child.oid WHERE child.relkind = 'r' "
            "GROUP BY 1 ORDER BY 1").fetchall()
    assert partitions == [("ledger_records_y2026m10", 1), ("ledger_records_y2026m11", 1),
                          ("ledger_records_y2026m12", 1)]
    # A month's records are exactly those of its UTC days: the end of October stays in October.
    assert november_total(dsn) == (1, Decimal("0.001368"))
    days = PostgresLedger(dsn).usage(datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC),
                                     [Dimension.DAY])
    assert sorted(row.key for row in days) == [("2026-10-31",), ("2026-11-01",), ("2026-12-31",)]


def test_migration_is_idempotent_and_concurrent_writers_store_each_record_once(dsn: str) -> None:
    records = [line(f"req_{number}", time=f"2026-{month:02d}-02T10:00:00Z")
               for number in range(200) for month in (number % 3 + 10,)]

    async def writers() -> list[int]:
        connected = [await PostgresLedgerWriter.connect(dsn) for _ in range(4)]
        try:
            await asyncio.gather(*(writer.migrate() for writer in connected))
            results = await asyncio.gather(*(writer.insert(dumps(*records[offset::2]))
                                             for offset, writer in zip((0, 1, 0, 1), connected, strict=True)))
        finally:
            for writer in connected:
                await writer.close()
        return [result.inserted for result in results]

    inserted = asyncio.run(writers())

    assert sum(inserted) == 200
    with psycopg.connect(dsn) as connection:
        stored = connection.execute("SELECT count(*), count(DISTINCT request_id) FROM ledger_records").fetchone()
        assert stored == (200, 200)
        assert connection.execute("SELECT max(version) FROM spendgate_ledger_schema").fetchone() == (1,)
    asyncio.run(store(dsn))  # a later start migrates nothing
