"""Spend without a cluster: the admin port's /budgets, a developer's own /spendgate/v1/budgets on the
client port (their budgets only, with their key, no ledger line), and `spendgate status` and
`spendgate statusline` reading them (and the state directory) as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.proxy_harness import Keys, Running, StartGateway, assert_anthropic_error, message_request
from spendgate.adapters.journal import SpendJournal
from spendgate.api.v1alpha1 import Period
from spendgate.logic.budgetview import BudgetViews
from spendgate.logic.spend import format_money
from spendgate.logic.tracker import SpendTracker
from spendgate.logic.windows import window_at
from spendgate.proxy.enforce import BudgetAdmission
from spendgate.testing.upstream import MockUpstream

REPO_HEADER = {"x-spendgate-repo": "https://github.com/Acme/Payments-API.git"}


async def enforcing(start_gateway: StartGateway, tmp_path: Path) -> Running:
    budgets = BudgetAdmission(SpendTracker(SpendJournal(tmp_path / "state" / "spend.journal")))
    return await start_gateway(admission=budgets, spend_sink=budgets, budgets=budgets)


async def spend_once(running: Running, key: str) -> None:
    async with running.client(key, **REPO_HEADER) as client:
        assert (await client.post("/v1/messages", json=message_request())).status_code == 200


async def test_the_admin_port_serves_every_budget_as_kubectl_would(
        start_gateway: StartGateway, keys: Keys, upstream: MockUpstream, tmp_path: Path) -> None:
    running = await enforcing(start_gateway, tmp_path)
    await spend_once(running, keys.alice)
    async with httpx.AsyncClient(base_url=running.admin_url) as admin:
        answer = await admin.get("/budgets")
    assert answer.status_code == 200
    views = BudgetViews.model_validate_json(answer.content)
    by_id = {view.id: view for view in views.budgets}
    assert set(by_id) == {"ai-budgets/alice-daily", "ai-budgets/platform-monthly", "ai-budgets/payments-api-weekly"}
    cost = running.ledger()[-1]["costUSD"]
    assert by_id["ai-budgets/alice-daily"].spentUSD == cost  # the ledger's cost, to the last digit
    assert by_id["ai-budgets/payments-api-weekly"].spentUSD == cost
    assert (by_id["ai-budgets/alice-daily"].scope, by_id["ai-budgets/alice-daily"].state.value) == (
        "Developer/alice", "Ok")


async def test_a_developer_sees_their_own_budgets_with_their_key(
        start_gateway: StartGateway, keys: Keys, upstream: MockUpstream, tmp_path: Path) -> None:
    running = await enforcing(start_gateway, tmp_path)
    await spend_once(running, keys.alice)
    lines = len(running.ledger())
    async with running.client(keys.alice) as client:
        mine = BudgetViews.model_validate_json((await client.get("/spendgate/v1/budgets")).content)
        tagged = await client.get("/spendgate/v1/budgets/", headers=REPO_HEADER)
    assert sorted(view.name for view in mine.budgets) == ["alice-daily", "platform-monthly"]
    assert sorted(view.name for view in BudgetViews.model_validate_json(tagged.content).budgets) == [
        "alice-daily", "payments-api-weekly", "platform-monthly"]
    assert tagged.headers["cache-control"] == "no-store"
    async with running.client(keys.bob) as client:  # engineering has no budget of its own: bob sees none of alice's
        assert BudgetViews.model_validate_json((await client.get("/spendgate/v1/budgets")).content).budgets == []
    assert len(running.ledger()) == lines  # reading budgets is no API request: no ledger line
    assert upstream.requests[-1].path == "/v1/messages"  # and nothing went upstream


@pytest.mark.parametrize(("key", "method", "path", "status", "error_type"), [
    (None, "GET", "/spendgate/v1/budgets", 401, "authentication_error"),
    ("revoked", "GET", "/spendgate/v1/budgets", 401, "authentication_error"),
    ("sk-sg-not-a-key", "GET", "/spendgate/v1/budgets", 401, "authentication_error"),
    ("alice", "POST", "/spendgate/v1/budgets", 405, "invalid_request_error"),
    ("alice", "GET", "/spendgate/v1/spend", 404, "not_found_error"),
    ("alice", "GET", "/spendgate/v2/budgets", 404, "not_found_error"),
])
async def test_the_own_route_refuses_in_anthropics_shape(
        start_gateway: StartGateway, keys: Keys, upstream: MockUpstream, tmp_path: Path, key: str | None,
        method: str, path: str, status: int, error_type: str) -> None:
    running = await enforcing(start_gateway, tmp_path)
    plaintext = {"alice": keys.alice, "revoked": keys.revoked}.get(key or "", key)
    async with running.client(plaintext) as client:
        response = await client.request(method, path)
    message = assert_anthropic_error(response, status, error_type)
    assert plaintext is None or plaintext not in message
    assert running.ledger() == [] and upstream.requests == []


async def test_without_budgets_the_routes_are_not_there(start_gateway: StartGateway, keys: Keys,
                                                        upstream: MockUpstream) -> None:
    running = await start_gateway()
    async with running.client(keys.alice) as client:
        assert_anthropic_error(await client.get("/spendgate/v1/budgets"), 404, "not_found_error")
    async with httpx.AsyncClient(base_url=running.admin_url) as admin:
        assert (await admin.get("/budgets")).status_code == 404


# the commands, as a user runs them --------------------------------------------------------------


async def spendgate(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spendgate.cli", *args, env={**os.environ, "TZ": "UTC", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_status_from_the_admin_port_and_from_the_state_directory_agree(
        start_gateway: StartGateway, policies: Path, keys: Keys, upstream: MockUpstream, tmp_path: Path) -> None:
    running = await enforcing(start_gateway, tmp_path)
    await spend_once(running, keys.alice)
    code, table, _ = await spendgate("status", "--admin", running.admin_url)
    assert code == 0
    assert table.startswith("3 budgets at ")
    row = next(line for line in table.splitlines() if "ai-budgets/alice-daily" in line)
    cells = [cell.strip() for cell in row.split("│")]
    assert cells[1:7] == ["platform", "Developer/alice", "$40.00",
                          format_money(Decimal(running.ledger()[-1]["costUSD"])), "0.0%", "Ok"]
    code, admin_json, _ = await spendgate("status", "--admin", running.admin_url, "--output", "json")
    code2, journal_json, _ = await spendgate("status", "--policies", str(policies), "--state-dir",
                                             str(tmp_path / "state"), "-o", "json")
    assert (code, code2) == (0, 0)
    from_admin, from_journal = json.loads(admin_json), json.loads(journal_json)
    assert from_admin["budgets"] and from_admin["budgets"] == from_journal["budgets"]


async def test_status_watch_prints_again_when_spend_moves(
        start_gateway: StartGateway, keys: Keys, upstream: MockUpstream, tmp_path: Path) -> None:
    running = await enforcing(start_gateway, tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spendgate.cli", "status", "--admin", running.admin_url, "--watch", "--interval",
        "0.1", "-o", "json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        await spend_once(running, keys.alice)
        second = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 10)
    spent = {view["name"]: view["spentUSD"] for view in second["budgets"]}
    assert {view["spentUSD"] for view in first["budgets"]} == {"0"}
    assert spent["alice-daily"] == running.ledger()[-1]["costUSD"]
    assert process.returncode == 130


@pytest.mark.parametrize(("args", "code", "words"), [
    ((), 2, "pass --admin URL (a running gateway's admin port) or --policies DIR"),
    (("--admin", "http://127.0.0.1:9", "--policies", "x"), 2, "one of them"),
    (("--admin", "http://127.0.0.1:9"), 1, "cannot reach http://127.0.0.1:9/budgets"),
    (("--policies", "examples/policies", "--state-dir", "/nonexistent/state"), 1,
     "no spend journal at /nonexistent/state/spend.journal: pass the proxy's --state-dir"),
    (("--admin", "x", "--interval", "0"), 2, "--interval must be positive"),
])
async def test_status_says_what_is_wrong(args: tuple[str, ...], code: int, words: str) -> None:
    returned, out, err = await spendgate("status", *args)
    assert returned == code and words in err and "Traceback" not in err, (returned, out, err)


async def test_status_refuses_an_answer_that_is_not_budgets(upstream: MockUpstream) -> None:
    """The mock upstream echoes unknown paths: a gateway that is no spendgate admin port."""
    returned, _, err = await spendgate("status", "--admin", upstream.url)
    assert returned == 1
    assert f"{upstream.url}/budgets answered something that is not a list of budgets" in err


def claude_code_env(running: Running, **overrides: str) -> dict[str, Any]:
    return {"ANTHROPIC_BASE_URL": running.url, "ANTHROPIC_API_KEY": "", "ANTHROPIC_AUTH_TOKEN": "",
            "ANTHROPIC_CUSTOM_HEADERS": "x-spendgate-branch: main\nx-spendgate-repo: acme/payments-api",
            **overrides}


async def test_statusline_reads_the_developers_own_budgets(start_gateway: StartGateway, keys: Keys,
                                                           upstream: MockUpstream, tmp_path: Path) -> None:
    running = await enforcing(start_gateway, tmp_path)
    await spend_once(running, keys.alice)
    cost = running.ledger()[-1]["costUSD"]
    code, out, _ = await spendgate("statusline", env=claude_code_env(running, ANTHROPIC_API_KEY=keys.alice))
    assert code == 0
    midnight = window_at(Period.DAILY, "Europe/Berlin", datetime.now(UTC)).end.strftime("%H:%M")  # in UTC (TZ=UTC)
    assert out.splitlines()[0] == f"alice-daily <1% · Ok · {format_money(Decimal(cost))} of $40.00 · resets {midnight}"
    code, token, _ = await spendgate("statusline", env=claude_code_env(running, ANTHROPIC_AUTH_TOKEN=keys.alice))
    assert (code, token) == (0, out)


@pytest.mark.parametrize(("overrides", "words"), [
    ({"ANTHROPIC_BASE_URL": ""}, "spendgate: ANTHROPIC_BASE_URL is not set"),
    ({}, "spendgate: no virtual key: set ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN"),
    ({"ANTHROPIC_API_KEY": "sk-sg-unknown"}, "/spendgate/v1/budgets answered 401: invalid virtual key"),
])
async def test_statusline_says_what_is_wrong_in_one_line(start_gateway: StartGateway, keys: Keys,
                                                         upstream: MockUpstream, tmp_path: Path,
                                                         overrides: dict[str, str], words: str) -> None:
    running = await enforcing(start_gateway, tmp_path)
    code, out, err = await spendgate("statusline", env=claude_code_env(running, **overrides))
    assert code == 1 and len(out.splitlines()) == 1 and words in out and err == "", (out, err)


def test_the_status_line_starts_lean() -> None:
    """Claude Code runs it after every turn: neither the Kubernetes client nor aiohttp is imported."""
    probe = ("import sys\nfrom spendgate.cli import main\nmain(['statusline', '--gateway', 'http://127.0.0.1:9'])\n"
             "print(sorted({name.split('.')[0] for name in sys.modules} & {'kubernetes', 'aiohttp', 'kopf'}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "ANTHROPIC_API_KEY": "sk-sg-x"})
    assert result.stdout.splitlines()[-1] == "[]", result.stdout + result.stderr
