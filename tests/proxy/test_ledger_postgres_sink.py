"""The proxy's PostgreSQL ledger sink against a real PostgreSQL server: every ledger line stored once, through an
outage during traffic (the server stopped and started again), a restart of the proxy while the database is
down, and replays; clients never see a failure."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from database.postgres import PostgresServer
from proxy.proxy_harness import UPSTREAM_KEY, Keys, Running, message_request
from proxy.test_cli import free_port, until_ready
from spendgate.adapters.ledgerpostgres import PostgresLedgerWriter
from spendgate.proxy.bundles import PolicyDirectory
from spendgate.proxy.ledgersink import REPLAYING_SUFFIX, PostgresLedgerSink, SinkConfigError, attach
from spendgate.proxy.server import Proxy, Settings
from spendgate.testing.upstream import MockUpstream

Start = Callable[..., Awaitable[tuple[Running, PostgresLedgerSink]]]


@pytest.fixture
async def start_proxy(upstream: MockUpstream, policies: Path, keys: Keys, tmp_path: Path,
                      postgres: PostgresServer) -> AsyncIterator[Start]:
    """A proxy whose ledger lines also go to PostgreSQL, as `spendgate proxy --ledger-postgres DSN` wires it."""
    started: list[Proxy] = []

    async def start(dsn: str, spill: Path | None = None, **sink: Any) -> tuple[Running, PostgresLedgerSink]:
        ledger = tmp_path / f"ledger-{len(started)}.jsonl"
        settings = Settings(source=PolicyDirectory(policies, keys.file), upstream_key=UPSTREAM_KEY,
                            upstream_url=upstream.url, port=0, admin_port=0, ledger=str(ledger))
        proxy = Proxy(settings)
        attached = attach(proxy.ledger.consumers, proxy.companions, proxy.finalizers, dsn,
                          spill or tmp_path / "ledger-postgres.spill", proxy.metrics.registry)
        for name, value in sink.items():
            setattr(attached, name, value)
        await proxy.start()
        started.append(proxy)
        return Running(proxy, ledger), attached

    yield start
    for proxy in started:
        if not proxy.health.stopping:
            await proxy.stop()
    if not (postgres.data / "postmaster.pid").exists():
        postgres.start()  # a test that failed during an outage leaves the server as it found it


def stored(dsn: str) -> dict[str, Decimal]:
    """The records in the database (none before the sink's first connection creates the tables).

    Blocking: a test calls it off the event loop (`until`, `stored_now`), because the proxy's sink runs
    on that loop, and a query waiting for a lock the sink's open transaction holds would wait forever."""
    with psycopg.connect(dsn) as connection:
        try:
            rows = connection.execute("SELECT request_id, cost_usd FROM ledger_records").fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return {request_id: cost for request_id, cost in rows}


def ledger_lines(*paths: Path) -> dict[str, Decimal]:
    lines = [orjson.loads(line) for path in paths for line in path.read_bytes().splitlines() if line.strip()]
    return {line["requestId"]: Decimal(line["costUSD"]) for line in lines}


async def stored_now(dsn: str) -> dict[str, Decimal]:
    return await asyncio.to_thread(stored, dsn)


async def until(probe: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Polls `probe` in a thread, so that the event loop (and the proxy's sink on it) keeps running."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(probe):
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        await asyncio.sleep(0.1)


async def send(running: Running, key: str, count: int, concurrency: int = 8) -> list[int]:
    async with running.client(key) as client:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(number: int) -> int:
            async with semaphore:
                response = await client.post("/v1/messages", json=message_request(stream=number % 2 == 0))
                await response.aread()
                return response.status_code

        return await asyncio.gather(*(one(number) for number in range(count)))


async def test_every_ledger_line_is_stored_once(start_proxy: Start, postgres: PostgresServer, keys: Keys) -> None:
    dsn = postgres.new_database()
    running, sink = await start_proxy(dsn)

    statuses = await send(running, keys.alice, 60)
    await running.proxy.stop()

    assert set(statuses) == {200}
    assert await stored_now(dsn) == ledger_lines(running.ledger_path)
    assert len(await stored_now(dsn)) == 60
    assert not sink.spill.exists() or sink.spill.stat().st_size == 0
    metrics = running.proxy.metrics.registry.get_sample_value
    assert metrics("spendgate_ledger_postgres_lines_total", {"result": "stored"}) == 60


async def test_an_outage_during_traffic_loses_nothing_and_fails_no_request(
        start_proxy: Start, postgres: PostgresServer, keys: Keys) -> None:
    dsn = postgres.new_database()
    running, sink = await start_proxy(dsn)
    before = await send(running, keys.alice, 40)
    await until(lambda: len(stored(dsn)) == 40, "the first lines stored")

    postgres.stop()  # clients keep sending while the database is down
    during = await send(running, keys.alice, 120)
    await until(lambda: sink.spill.exists() and sink.spill.stat().st_size > 0, "lines spilled")
    metrics = running.proxy.metrics.registry.get_sample_value
    assert metrics("spendgate_ledger_postgres_up") == 0
    postgres.start()
    after = await send(running, keys.alice, 40)

    await until(lambda: len(stored(dsn)) == 200, "every line stored after the outage", timeout=60)
    assert set(before + during + after) == {200}
    assert await stored_now(dsn) == ledger_lines(running.ledger_path)
    assert not Path(str(sink.spill) + REPLAYING_SUFFIX).exists()
    assert metrics("spendgate_ledger_postgres_lines_total", {"result": "spilled"}) > 0  # the rest waited queued
    assert metrics("spendgate_ledger_postgres_lines_total", {"result": "conflict"}) in (None, 0.0)


async def test_a_proxy_restarted_while_the_database_is_down_replays_its_spill_file(
        start_proxy: Start, postgres: PostgresServer, keys: Keys, tmp_path: Path) -> None:
    dsn = postgres.new_database()
    spill = tmp_path / "state" / "ledger-postgres.spill"
    first, _ = await start_proxy(dsn, spill)
    await send(first, keys.alice, 10)
    await until(lambda: len(stored(dsn)) == 10, "the first lines stored")
    postgres.stop()
    await send(first, keys.alice, 30)
    await first.proxy.stop()  # what was queued goes to the spill file
    assert spill.stat().st_size > 0

    second, _ = await start_proxy(dsn, spill)
    await send(second, keys.alice, 5)
    postgres.start()

    await until(lambda: len(stored(dsn)) == 45, "the spilled and the new lines stored", timeout=60)
    assert await stored_now(dsn) == ledger_lines(first.ledger_path, second.ledger_path)
    await second.proxy.stop()
    assert spill.stat().st_size == 0


async def test_replaying_spill_files_and_whole_ledgers_again_changes_nothing(
        start_proxy: Start, postgres: PostgresServer, keys: Keys, tmp_path: Path) -> None:
    dsn = postgres.new_database()
    running, _ = await start_proxy(dsn)
    await send(running, keys.alice, 25)
    await running.proxy.stop()
    assert len(await stored_now(dsn)) == 25
    # A spill file holding lines already stored (a batch whose acknowledgement was lost), left half replayed
    # by a crash, is replayed at the next start without counting anything twice.
    spill = tmp_path / "again.spill"
    Path(str(spill) + REPLAYING_SUFFIX).write_bytes(running.ledger_path.read_bytes())
    spill.write_bytes(running.ledger_path.read_bytes()[:-40])  # and a torn last line
    second, sink = await start_proxy(dsn, spill)

    await until(lambda: not Path(str(spill) + REPLAYING_SUFFIX).exists(), "the aside file replayed")
    await until(lambda: spill.stat().st_size == 0 and sink.rejected.exists(), "the spill file replayed")
    writer = await PostgresLedgerWriter.connect(dsn)
    result = await writer.insert(running.ledger_path.read_bytes().splitlines())  # the whole ledger once more
    await writer.close()

    assert (result.inserted, result.duplicates, result.conflicts) == (0, 25, [])
    assert await stored_now(dsn) == ledger_lines(running.ledger_path)
    assert sink.rejected.read_bytes() == running.ledger_path.read_bytes().splitlines(keepends=True)[-1][:-40] + b"\n"
    metrics = second.proxy.metrics.registry.get_sample_value
    assert metrics("spendgate_ledger_postgres_lines_total", {"result": "rejected"}) == 1
    await second.proxy.stop()


async def test_a_conflicting_record_is_kept_aside_and_the_proxy_serves_on(
        start_proxy: Start, postgres: PostgresServer, keys: Keys, upstream: MockUpstream,
        caplog: pytest.LogCaptureFixture) -> None:
    dsn = postgres.new_database()
    writer = await PostgresLedgerWriter.connect(dsn)
    await writer.migrate()
    # What the mock upstream will call its first request, stored beforehand with another cost.
    taken = orjson.dumps({**orjson.loads(_a_line()), "requestId": "req_mock_000001"})
    await writer.insert([taken])
    await writer.close()
    running, _ = await start_proxy(dsn)

    statuses = await send(running, keys.alice, 3, concurrency=1)
    await running.proxy.stop()

    assert statuses == [200, 200, 200]
    assert len(await stored_now(dsn)) == 3  # the stored one and the two others
    metrics = running.proxy.metrics.registry.get_sample_value
    assert metrics("spendgate_ledger_postgres_lines_total", {"result": "conflict"}) == 1
    assert "have the request id of a different stored record" in caplog.text
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT count(*) FROM ledger_conflicts").fetchone() == (1,)


def _a_line() -> bytes:
    from finance.ledgerlines import dumps, line

    return dumps(line("req_x", cost="99"))[0]


def test_a_dsn_that_is_not_one_is_refused_at_start_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(SinkConfigError) as refused:
        attach([], [], [], "postgresql://user:s3cret-password@db:5432/x?bad_option=1&&", tmp_path / "spill",
               CollectorRegistry())

    assert "s3cret" not in str(refused.value)
    assert str(refused.value).startswith("--ledger-postgres is not a PostgreSQL connection string")


async def test_clients_see_no_failure_when_the_database_never_answers(start_proxy: Start, keys: Keys) -> None:
    running, sink = await start_proxy("postgresql://spendgate@127.0.0.1:1/nothing")

    statuses = await send(running, keys.alice, 30)
    await running.proxy.stop()

    assert set(statuses) == {200}
    assert ledger_lines(sink.spill) == ledger_lines(running.ledger_path)  # every line waits in the spill file


async def test_spendgate_proxy_with_ledger_postgres_from_the_environment(
        policies: Path, keys: Keys, tmp_path: Path, upstream: MockUpstream, postgres: PostgresServer) -> None:
    """The command as deployed: the DSN from $SPENDGATE_LEDGER_POSTGRES (a Secret), the spill file in the
    state directory; nothing of the DSN in the logs."""
    dsn = postgres.new_database()
    port, admin_port = free_port(), free_port()
    environment = {**os.environ, "ANTHROPIC_API_KEY": UPSTREAM_KEY, "SPENDGATE_LEDGER_POSTGRES": dsn,
                   "SPENDGATE_STATE_DIR": str(tmp_path / "state")}
    proxy = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spendgate.cli", "proxy", "--policies", str(policies), "--keys-file", str(keys.file),
        "--upstream", upstream.url, "--port", str(port), "--admin-port", str(admin_port), "--ledger",
        str(tmp_path / "ledger.jsonl"), env=environment, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        await until_ready(f"http://127.0.0.1:{admin_port}", proxy)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"x-api-key": keys.alice}) as client:
            for _ in range(3):
                assert (await client.post("/v1/messages", json=message_request())).status_code == 200
    finally:
        proxy.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proxy.communicate(), timeout=15)

    assert proxy.returncode == 0, stderr.decode()
    assert await stored_now(dsn) == ledger_lines(tmp_path / "ledger.jsonl")
    assert len(await stored_now(dsn)) == 3
    assert "ledger lines also go to PostgreSQL at 127.0.0.1/test_" in stderr.decode()
    assert dsn not in stderr.decode()
    assert (tmp_path / "state" / "ledger-postgres.spill").exists()
