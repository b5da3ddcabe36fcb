"""A proxy killed with requests in flight: Anthropic bills what it served, so every request that went
upstream is accounted for after a restart, and its ledger line and journal never disagree,
whatever instant the kill came at (issue 9, section 2)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.proxy_harness import Keys, StartGateway, message_request
from proxy.test_cli import free_port, spendgate, until_ready
from spendgate.adapters.journal import SpendJournal, read_journal, totals
from spendgate.logic.tracker import SpendTracker
from spendgate.proxy.enforce import BudgetAdmission
from spendgate.proxy.ledger import LedgerWriter
from spendgate.proxy.recovery import settle_interrupted
from spendgate.testing.upstream import TEXT, Failure, MockUpstream, Reply

BUDGET = ("ai-budgets/alice-daily", "2026-12-04")
INTERRUPTED_LINE = {"schemaVersion": "spendgate.io/ledger/v2", "requestId": "req_proxy_recovered", "exchangeId": "xg_1",
                    "costUSD": "0.25", "status": 0, "outcome": "interrupted", "flags": ["estimated", "interrupted"]}


def ledger_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def journal_total(path: Path) -> Decimal:
    found = totals(read_journal(path).entries).get(BUDGET)
    return found.spent if found else Decimal(0)


@pytest.mark.parametrize("instant", ["after the start line", "after the ledger line", "after the settle line"])
def test_a_kill_at_any_instant_leaves_ledger_and_journal_agreeing(instant: str, tmp_path: Path) -> None:
    """The three states settle leaves behind (start line -> ledger line -> settle line), each then recovered."""
    journal_path, ledger_path = tmp_path / "spend.journal", tmp_path / "ledger.jsonl"
    journal, ledger = SpendJournal(journal_path), LedgerWriter(str(ledger_path), 2**30, 1)
    journal.start("xg_1", [BUDGET], Decimal("0.25"), INTERRUPTED_LINE, ledger.position())
    real_line = {**INTERRUPTED_LINE, "requestId": "req_real", "costUSD": "0.31", "status": 200, "outcome": "ok",
                 "flags": []}
    if instant != "after the start line":
        ledger.write(real_line, now=True)
    if instant == "after the settle line":
        journal.append("req_real", [BUDGET], Decimal("0.31"), "xg_1")
    ledger.close()
    journal.close()

    for _ in range(2):  # a restart, then another one: recovery is idempotent
        journal, ledger = SpendJournal(journal_path), LedgerWriter(str(ledger_path), 2**30, 1)
        settle_interrupted(journal, SpendTracker(journal), ledger)
        ledger.close()
        journal.close()

    (line,) = [line for line in ledger_lines(ledger_path) if line["exchangeId"] == "xg_1"]  # exactly one
    expected = Decimal("0.25") if instant == "after the start line" else Decimal("0.31")
    assert Decimal(line["costUSD"]) == journal_total(journal_path) == expected
    assert read_journal(journal_path).unfinished() == []


async def test_the_start_line_is_journaled_before_the_request_goes_upstream(
        start_gateway: StartGateway, keys: Keys, upstream: MockUpstream, tmp_path: Path) -> None:
    journal = tmp_path / "spend.journal"
    budgets = BudgetAdmission(SpendTracker(SpendJournal(journal)))
    running = await start_gateway(admission=budgets, spend_sink=budgets)
    gate = asyncio.Event()
    upstream.enqueue(Reply(TEXT, gate=gate, fail_after=3))
    async with running.client(keys.alice) as client:
        request = asyncio.create_task(client.post("/v1/messages", json=message_request(stream=True)))
        while not upstream.requests or len(upstream.requests[-1].sent) == 0:
            await asyncio.sleep(0.005)
        (started,) = read_journal(journal).unfinished()  # in flight: started, not settled, no ledger line
        assert running.ledger() == []
        assert started.context["outcome"] == "interrupted" and started.estimate > 0
        gate.set()
        assert (await request).status_code == 200
    (line,) = running.ledger()
    assert line["exchangeId"] == started.exchange_id and read_journal(journal).unfinished() == []


async def test_requests_in_flight_at_a_sigkill_are_settled_at_their_estimate_on_restart(
        policies: Path, keys: Keys, tmp_path: Path, upstream: MockUpstream) -> None:
    """A real process, killed with -9 while three requests hang upstream, then started again."""
    upstream.default = Reply(TEXT, fail=Failure.HANG_BEFORE_HEADERS)
    port, admin_port = free_port(), free_port()
    ledger, state = tmp_path / "ledger.jsonl", tmp_path / "state"
    arguments = ("proxy", "--policies", str(policies), "--keys-file", str(keys.file), "--upstream", upstream.url,
                 "--port", str(port), "--admin-port", str(admin_port), "--ledger", str(ledger),
                 "--state-dir", str(state))
    proxy = await spendgate(*arguments)
    await until_ready(f"http://127.0.0.1:{admin_port}", proxy)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                 headers={"x-api-key": keys.alice}) as client:
        hanging = [asyncio.create_task(client.post("/v1/messages", json=message_request(stream=stream)))
                   for stream in (False, True, True)]
        while len(upstream.requests) < 3:
            await asyncio.sleep(0.01)
        os.kill(proxy.pid, signal.SIGKILL)
        await proxy.wait()
        for task in hanging:
            with contextlib.suppress(httpx.HTTPError):
                await task
    restarted = await spendgate(*arguments)
    try:
        await until_ready(f"http://127.0.0.1:{admin_port}", restarted)
    finally:
        restarted.send_signal(signal.SIGTERM)
        _, errors = await restarted.communicate()
    lines = ledger_lines(ledger)
    assert len(lines) == 3 and {line["outcome"] for line in lines} == {"interrupted"}
    assert all({"estimated", "interrupted"} <= set(line["flags"]) for line in lines)
    assert all(line["developer"] == "alice" and Decimal(line["costUSD"]) > 0 for line in lines)
    assert "settled 3 requests a previous run left unsettled" in errors.decode()
    contents = read_journal(state / "spend.journal")
    assert contents.unfinished() == []
    daily = [charge for charge in totals(contents.entries) if charge[0] == "ai-budgets/alice-daily"]
    assert totals(contents.entries)[daily[0]].spent == sum(Decimal(line["costUSD"]) for line in lines)


async def test_repeated_sigkills_under_concurrent_load_lose_and_double_nothing(
        policies: Path, keys: Keys, tmp_path: Path, upstream: MockUpstream) -> None:
    """Eight clients, three kills at arbitrary moments: every 200 is in the ledger and the journal
    exactly once, and the journal's total for the budget equals the ledger's, to the last digit."""
    upstream.default = Reply(TEXT, chunk_delay=0.01)
    port, admin_port = free_port(), free_port()
    ledger, state = tmp_path / "ledger.jsonl", tmp_path / "state"
    arguments = ("proxy", "--policies", str(policies), "--keys-file", str(keys.file), "--upstream", upstream.url,
                 "--port", str(port), "--admin-port", str(admin_port), "--ledger", str(ledger),
                 "--state-dir", str(state))
    answered: list[str] = []
    stop = asyncio.Event()

    async def client(stream: bool) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5,
                                     headers={"x-api-key": keys.alice}) as http:
            while not stop.is_set():
                try:
                    response = await http.post("/v1/messages", json=message_request(stream=stream))
                except httpx.HTTPError:
                    await asyncio.sleep(0.02)
                    continue
                if response.status_code == 200:
                    answered.append(response.headers["request-id"])

    proxy = await spendgate(*arguments)
    await until_ready(f"http://127.0.0.1:{admin_port}", proxy)
    clients = [asyncio.create_task(client(stream=number % 2 == 0)) for number in range(8)]
    for pause in (0.4, 0.25, 0.55):
        await asyncio.sleep(pause)
        os.kill(proxy.pid, signal.SIGKILL)
        await proxy.wait()
        proxy = await spendgate(*arguments)
        await until_ready(f"http://127.0.0.1:{admin_port}", proxy)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*clients)
    proxy.send_signal(signal.SIGTERM)
    await proxy.communicate()

    lines = ledger_lines(ledger)
    by_request = [line["requestId"] for line in lines]
    assert len(answered) > 50
    assert all(by_request.count(request_id) == 1 for request_id in answered)
    contents = read_journal(state / "spend.journal")
    settled = [entry.request_id for entry in contents.entries]
    assert all(settled.count(request_id) == 1 for request_id in answered)
    assert contents.unfinished() == []
    daily = next(charge for charge in totals(contents.entries) if charge[0] == "ai-budgets/alice-daily")
    assert totals(contents.entries)[daily].spent == sum(Decimal(line["costUSD"]) for line in lines)
