"""Budgets enforced by the proxy in standalone mode: alert, downgrade, pause, exemptions, dry runs,
the journal across restarts, and what the official SDK makes of the pause."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest

from proxy.proxy_harness import Keys, Running, StartGateway, message_request
from spendgate.adapters.journal import SpendJournal
from spendgate.logic.tracker import SpendTracker
from spendgate.proxy.enforce import BudgetAdmission
from spendgate.testing.upstream import MockUpstream, Reply, Scenario

OPUS, SONNET = "claude-opus-5-5", "claude-sonnet-5-5"
# 10,000 input and 1,000 output tokens: $0.06 on Opus 5.5 ($4 / $20 per MTok), $0.03 on Sonnet 5.5.
PRICED = Scenario(content=({"type": "text", "text": "ok"},),
                  usage={"input_tokens": 10_000, "output_tokens": 1_000})
COST = {OPUS: Decimal("0.06"), SONNET: Decimal("0.03")}

DOLLAR_BUDGET = """
apiVersion: spendgate.io/v1alpha1
kind: RoutingPolicy
metadata: {name: cascade-only, namespace: ai-budgets}
spec: {cascade: [claude-opus-5-5, claude-sonnet-5-5, claude-haiku-5-5]}
---
apiVersion: spendgate.io/v1alpha1
kind: Budget
metadata: {name: alice-dollar, namespace: ai-budgets}
spec:
  costCenter: platform
  scope: {kind: Developer, name: alice}
  limitUSD: "1.00"
  window: {period: Daily, timeZone: Europe/Berlin}
  enforcement: MODE
  routingPolicyRef: cascade-only
"""


def with_budget(policies: Path, mode: str = "Enforce") -> None:
    (policies / "40-dollar.yaml").write_text(DOLLAR_BUDGET.replace("MODE", mode))


@pytest.fixture
def priced(upstream: MockUpstream) -> MockUpstream:
    upstream.default = Reply(scenario=PRICED)
    return upstream


async def enforcing(start_gateway: StartGateway, journal: Path) -> Running:
    budgets = BudgetAdmission(SpendTracker(SpendJournal(journal)))
    return await start_gateway(admission=budgets, spend_sink=budgets)


async def already_spent(start_gateway: StartGateway, policies: Path, tmp_path: Path, spent: str,
                        mode: str = "Enforce") -> Running:
    """An enforcing gateway whose journal already holds `spent` dollars on the $1.00 budget today."""
    with_budget(policies, mode)
    journal = tmp_path / "journal"
    SpendJournal(journal).append("earlier", [("ai-budgets/alice-dollar", today_in_berlin())], Decimal(spent))
    return await enforcing(start_gateway, journal)


async def send(running: Running, key: str, stream: bool = False, **body: Any) -> Any:
    async with running.client(key) as client:
        return await client.post("/v1/messages", json=message_request(stream=stream, **body))


async def test_alert_then_downgrade_then_pause(start_gateway: StartGateway, policies: Path, keys: Keys,
                                               priced: MockUpstream, tmp_path: Path) -> None:
    with_budget(policies)
    running = await enforcing(start_gateway, tmp_path / "journal")
    seen: list[tuple[str, str]] = []  # (state before the request, model that served it)
    spent = Decimal(0)
    for _ in range(30):
        response = await send(running, keys.alice, stream=len(seen) % 2 == 1)
        if response.status_code == 429:
            break
        assert response.status_code == 200
        served = priced.requests[-1].json()["model"]
        seen.append((response.headers["x-spendgate-budget-state"], served))
        spent += COST[served]
    states = [state for state, _ in seen]
    assert states == sorted(states, key=["Ok", "Alert", "Downgrade"].index)  # in order, never back
    assert {"Ok", "Alert", "Downgrade"} == set(states)
    assert all(model == (SONNET if state == "Downgrade" else OPUS) for state, model in seen)
    assert spent >= Decimal("1.10") > spent - COST[SONNET]  # paused on the first request past 110%

    body = response.json()
    assert body["error"]["type"] == "billing_error"
    message = body["error"]["message"]
    assert message.startswith("spend limit reached (daily; resets ")
    assert "Europe/Berlin" in message and "ai-budgets/alice-dollar" in message
    assert f"${spent:.2f} of $1.00 spent" in message
    assert "Alerted: platform-oncall" in message
    assert response.headers["x-should-retry"] == "false"
    assert 0 < int(response.headers["retry-after"]) <= 25 * 3600
    assert response.headers["anthropic-ratelimit-unified-status"] == "rejected"
    assert response.headers["anthropic-ratelimit-unified-overage-disabled-reason"] == "org_spend_cap_reached"
    assert "anthropic-ratelimit-unified-overage-status" not in response.headers  # Claude Code would reword it
    assert len(priced.requests) == len(seen)  # the paused request never went upstream

    ledger = running.ledger()
    assert [line["decision"]["action"] for line in ledger].count("reroute") == states.count("Downgrade")
    assert ledger[-1]["decision"]["action"] == "reject" and ledger[-1]["status"] == 429
    assert sum(Decimal(line["costUSD"]) for line in ledger if line["costUSD"]) == spent


async def test_downgrade_is_announced_and_keeps_the_rest_of_the_request(
        start_gateway: StartGateway, policies: Path, keys: Keys, priced: MockUpstream, tmp_path: Path) -> None:
    running = await already_spent(start_gateway, policies, tmp_path, "0.97")
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    response = await send(running, keys.alice, tools=tools, system=[{"type": "text", "text": "be brief"}])
    assert response.status_code == 200
    assert response.headers["x-spendgate-downgraded-from"] == OPUS
    assert response.json()["model"] == SONNET  # the cheaper model answered
    forwarded = priced.requests[-1].json()
    assert forwarded["model"] == SONNET
    assert forwarded["tools"] == tools and forwarded["system"] == [{"type": "text", "text": "be brief"}]


async def test_usage_headers_on_success(start_gateway: StartGateway, policies: Path, keys: Keys,
                                        priced: MockUpstream, tmp_path: Path) -> None:
    running = await already_spent(start_gateway, policies, tmp_path, "0.85")
    headers = (await send(running, keys.alice)).headers
    assert {name: headers[name] for name in headers if name.startswith(("anthropic-ratelimit-unified",
                                                                         "x-spendgate"))} == {
        "anthropic-ratelimit-unified-status": "allowed_warning",
        "anthropic-ratelimit-unified-reset": headers["anthropic-ratelimit-unified-reset"],
        "anthropic-ratelimit-unified-representative-claim": "overage",
        "anthropic-ratelimit-unified-overage-status": "allowed_warning",
        "anthropic-ratelimit-unified-overage-utilization": "0.8500",
        "anthropic-ratelimit-unified-overage-reset": headers["anthropic-ratelimit-unified-reset"],
        "anthropic-ratelimit-unified-overage-surpassed-threshold": "0.8",
        "x-spendgate-budget": "ai-budgets/alice-dollar",
        "x-spendgate-budget-used": "85.0%",
        "x-spendgate-budget-state": "Alert",
    }
    assert int(headers["anthropic-ratelimit-unified-reset"]) > 0


async def test_under_the_alert_threshold_no_threshold_is_surpassed(
        start_gateway: StartGateway, policies: Path, keys: Keys, priced: MockUpstream, tmp_path: Path) -> None:
    running = await already_spent(start_gateway, policies, tmp_path, "0.5")
    headers = (await send(running, keys.alice)).headers
    assert headers["anthropic-ratelimit-unified-status"] == "allowed"
    assert headers["anthropic-ratelimit-unified-overage-utilization"] == "0.5000"
    assert "anthropic-ratelimit-unified-overage-surpassed-threshold" not in headers


async def test_paused_survives_a_restart_and_spares_free_routes(
        start_gateway: StartGateway, policies: Path, keys: Keys, priced: MockUpstream, tmp_path: Path) -> None:
    running = await already_spent(start_gateway, policies, tmp_path, "1.20")
    assert (await send(running, keys.alice)).status_code == 429
    async with running.client(keys.alice) as client:
        counted = await client.post("/v1/messages/count_tokens", json={"model": OPUS, "messages": []})
        models = await client.get("/v1/models")
    assert (counted.status_code, models.status_code) == (200, 200)
    async with running.client(keys.bob) as client:  # bob's budgets are not alice's
        assert (await client.post("/v1/messages", json=message_request())).status_code == 200


async def test_dry_run_records_but_never_acts(start_gateway: StartGateway, policies: Path, keys: Keys,
                                              priced: MockUpstream, tmp_path: Path) -> None:
    running = await already_spent(start_gateway, policies, tmp_path, "5", mode="DryRun")
    response = await send(running, keys.alice)
    assert response.status_code == 200
    assert priced.requests[-1].json()["model"] == OPUS
    decision = running.ledger()[-1]["decision"]
    assert decision["action"] == "forward"
    assert decision["reason"].startswith("dry-run pause: ai-budgets/alice-dollar Paused 500.0%")


async def test_the_sdk_sees_a_rate_limit_error_with_the_message(
        start_gateway: StartGateway, policies: Path, keys: Keys, priced: MockUpstream, tmp_path: Path) -> None:
    running = await already_spent(start_gateway, policies, tmp_path, "1.10")
    client = anthropic.AsyncAnthropic(api_key=keys.alice, base_url=running.url, max_retries=3)
    with pytest.raises(anthropic.RateLimitError) as raised:
        await client.messages.create(model=OPUS, max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    assert "spend limit reached (daily; resets" in str(raised.value)
    assert raised.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
    assert len([line for line in running.ledger() if line["status"] == 429]) == 1  # x-should-retry: false


def today_in_berlin() -> str:
    from datetime import UTC, datetime

    from spendgate.api.v1alpha1 import Period
    from spendgate.logic.windows import window_at

    return window_at(Period.DAILY, "Europe/Berlin", datetime.now(UTC)).id
