"""Rate limits enforced by the proxy: the 429 Anthropic sends (retry-after, anthropic-ratelimit-*),
tokens counted from the real usage, every limit of the caller's cost centers, a pause before a rate
limit, free routes, a replica's share, and the official SDK backing off for exactly retry-after."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest

from proxy.proxy_harness import Clock, Keys, Running, StartGateway, assert_anthropic_error, message_request
from spendgate.adapters.journal import SpendJournal
from spendgate.api.v1alpha1 import Period
from spendgate.logic.tracker import SpendTracker
from spendgate.logic.windows import window_at
from spendgate.proxy.enforce import BudgetAdmission
from spendgate.proxy.ratelimits import RateLimits
from spendgate.testing.upstream import MockUpstream, Reply, Scenario

OPUS = "claude-opus-5-5"
# 300 uncached input (100 plus 200 written to the cache), 5,000 read from the cache, 1,000 output.
USAGE = {"input_tokens": 100, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 5_000,
         "output_tokens": 1_000}
ANSWER = Scenario(content=({"type": "text", "text": "ok"},), usage=USAGE)


def limit(policies: Path, center: str, limits: str) -> None:
    """Give a cost center of examples/policies rate limits (YAML flow mapping)."""
    path = policies / "10-costcenters.yaml"
    text = path.read_text()
    anchor = {"platform": "  members: [alice, bob, carol]\n", "engineering": "  displayName: Engineering\n"}[center]
    assert anchor in text
    path.write_text(text.replace(anchor, f"{anchor}  rateLimits: {limits}\n"))


@pytest.fixture
def answering(upstream: MockUpstream) -> MockUpstream:
    upstream.default = Reply(scenario=ANSWER)
    return upstream


async def limited(start_gateway: StartGateway, tmp_path: Path, clock: Callable[[], float] = time.monotonic,
                  replicas: int = 1) -> Running:
    budgets = BudgetAdmission(SpendTracker(SpendJournal(tmp_path / "journal")), RateLimits(replicas, clock))
    return await start_gateway(admission=budgets, spend_sink=budgets)


async def send(running: Running, key: str, **body: Any) -> Any:
    async with running.client(key) as client:
        return await client.post("/v1/messages", json=message_request(**body))


async def test_over_the_requests_limit_is_anthropics_429(start_gateway: StartGateway, policies: Path, keys: Keys,
                                                         answering: MockUpstream, tmp_path: Path) -> None:
    limit(policies, "platform", "{perDeveloper: {requestsPerMinute: 3}}")
    running = await limited(start_gateway, tmp_path)
    assert [(await send(running, keys.alice, stream=n == 1)).status_code for n in range(3)] == [200, 200, 200]
    before = datetime.now(UTC)
    refused = await send(running, keys.alice)

    message = assert_anthropic_error(refused, 429, "rate_limit_error")
    assert message.startswith("rate limit reached: developer alice (cost center platform, perDeveloper) may "
                              "send 3 requests per minute; try again in ")
    retry_after = int(refused.headers["retry-after"])
    assert 55 <= retry_after <= 60  # the first of the three counts for another minute
    assert refused.headers["x-should-retry"] == "true"
    assert (refused.headers["anthropic-ratelimit-requests-limit"],
            refused.headers["anthropic-ratelimit-requests-remaining"]) == ("3", "0")
    reset = datetime.fromisoformat(refused.headers["anthropic-ratelimit-requests-reset"])
    assert 59 <= (reset - before).total_seconds() <= 63
    assert "anthropic-ratelimit-unified-status" not in refused.headers  # a throttle, not a spend cap
    assert len(answering.requests) == 3  # the refused one never went upstream

    line = running.ledger()[-1]
    assert (line["status"], line["outcome"], line["errorType"], line["decision"]["action"]) == (
        429, "rejected", "rate_limit_error", "reject")
    assert line["decision"]["reason"] == ("rate limit: developer alice (cost center platform, perDeveloper) "
                                          "3 requests/min")
    assert ('spendgate_enforcement_decisions_total{cost_center="platform",decision="rate_limit",'
            'developer="alice"} 1.0') in await running.metrics()
    async with running.client(keys.bob) as client:  # bob is in engineering: platform's limits are not his
        assert (await client.post("/v1/messages", json=message_request())).status_code == 200


async def test_a_minute_later_the_caller_is_admitted_again(start_gateway: StartGateway, policies: Path, keys: Keys,
                                                           answering: MockUpstream, tmp_path: Path) -> None:
    limit(policies, "platform", "{perVirtualKey: {requestsPerMinute: 1}}")
    clock = Clock()
    running = await limited(start_gateway, tmp_path, clock)
    assert (await send(running, keys.alice)).status_code == 200
    refused = await send(running, keys.alice)
    assert refused.status_code == 429
    assert "key alice-laptop (cost center platform, perVirtualKey)" in refused.json()["error"]["message"]
    clock.offset += int(refused.headers["retry-after"])
    assert (await send(running, keys.alice)).status_code == 200


async def test_token_limits_count_the_real_usage_without_cache_reads(
        start_gateway: StartGateway, policies: Path, keys: Keys, answering: MockUpstream, tmp_path: Path) -> None:
    """Output 1,000 a request against 2,500 a minute: the third request is admitted with 2,000 used and
    takes the count to 3,000 (the documented slack: the last request's tokens); the fourth is refused.
    Input counts 300 a request (cache reads do not count), so 1,000 a minute is not reached."""
    limit(policies, "platform", "{perDeveloper: {outputTokensPerMinute: 2500, inputTokensPerMinute: 1000}}")
    running = await limited(start_gateway, tmp_path)
    statuses = [(await send(running, keys.alice, stream=n % 2 == 0)).status_code for n in range(3)]
    assert statuses == [200, 200, 200]
    refused = await send(running, keys.alice)
    assert refused.status_code == 429
    assert "may send 2,500 output tokens per minute" in refused.json()["error"]["message"]
    headers = refused.headers
    assert (headers["anthropic-ratelimit-output-tokens-limit"], headers["anthropic-ratelimit-output-tokens-remaining"],
            headers["anthropic-ratelimit-input-tokens-limit"], headers["anthropic-ratelimit-input-tokens-remaining"]
            ) == ("2500", "0", "1000", "100")
    assert (headers["anthropic-ratelimit-tokens-limit"], headers["anthropic-ratelimit-tokens-remaining"]) == (
        "2500", "0")  # the tighter of the two


async def test_every_limit_of_the_cost_center_chain_binds(start_gateway: StartGateway, policies: Path, keys: Keys,
                                                          answering: MockUpstream, tmp_path: Path) -> None:
    """engineering's total covers platform's alice and engineering's bob together."""
    limit(policies, "engineering", "{total: {requestsPerMinute: 3}}")
    running = await limited(start_gateway, tmp_path)
    assert [(await send(running, key)).status_code for key in (keys.alice, keys.bob, keys.alice)] == [200, 200, 200]
    refused = await send(running, keys.bob)
    assert refused.status_code == 429
    assert "cost center engineering (total) may send 3 requests per minute" in refused.json()["error"]["message"]


async def test_a_paused_budget_is_said_before_a_rate_limit(
        start_gateway: StartGateway, policies: Path, keys: Keys, answering: MockUpstream, tmp_path: Path) -> None:
    limit(policies, "platform", "{perDeveloper: {requestsPerMinute: 1}}")
    journal = SpendJournal(tmp_path / "journal")
    today = window_at(Period.DAILY, "Europe/Berlin", datetime.now(UTC)).id
    journal.append("earlier", [("ai-budgets/alice-daily", today)], Decimal("45"))
    budgets = BudgetAdmission(SpendTracker(journal), RateLimits())
    running = await start_gateway(admission=budgets, spend_sink=budgets)
    for _ in range(2):
        assert_anthropic_error(await send(running, keys.alice), 429, "billing_error")


async def test_free_routes_are_never_rate_limited(start_gateway: StartGateway, policies: Path, keys: Keys,
                                                  answering: MockUpstream, tmp_path: Path) -> None:
    limit(policies, "platform", "{perDeveloper: {requestsPerMinute: 1}}")
    running = await limited(start_gateway, tmp_path)
    assert (await send(running, keys.alice)).status_code == 200
    async with running.client(keys.alice) as client:
        for _ in range(3):
            counted = await client.post("/v1/messages/count_tokens", json={"model": OPUS, "messages": []})
            assert counted.status_code == 200
            assert (await client.get("/v1/models")).status_code == 200


async def test_a_replica_enforces_its_share(start_gateway: StartGateway, policies: Path, keys: Keys,
                                            answering: MockUpstream, tmp_path: Path) -> None:
    limit(policies, "platform", "{perDeveloper: {requestsPerMinute: 5}}")
    running = await limited(start_gateway, tmp_path, replicas=3)
    assert [(await send(running, keys.alice)).status_code for _ in range(3)] == [200, 200, 429]  # ceil(5 / 3)
    refused = await send(running, keys.alice)
    assert "may send 2 requests per minute, this gateway's share of 3 replicas" in refused.json()["error"]["message"]
    assert refused.headers["anthropic-ratelimit-requests-limit"] == "2"


async def test_the_sdk_waits_retry_after_then_gets_through(start_gateway: StartGateway, policies: Path,
                                                           keys: Keys, answering: MockUpstream,
                                                           tmp_path: Path) -> None:
    """One request 58 s ago fills a 1-a-minute limit: the official SDK is told to wait ~3 s (it would
    back off 0.5-1 s on its own), waits it, and its retry is admitted. Two attempts, one answer."""
    limit(policies, "platform", "{perDeveloper: {requestsPerMinute: 1}}")
    clock = Clock()
    running = await limited(start_gateway, tmp_path, clock)
    clock.offset = -58.0
    assert (await send(running, keys.alice)).status_code == 200
    clock.offset = 0.0
    client = anthropic.AsyncAnthropic(api_key=keys.alice, base_url=running.url, max_retries=2)
    started = time.monotonic()
    message = await client.messages.create(model=OPUS, max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    waited = time.monotonic() - started
    assert message.content[0].type == "text"
    lines = running.ledger()
    attempts = [line for line in lines[1:] if line["endpoint"] == "messages"]
    assert [line["status"] for line in attempts] == [429, 200]
    assert 2 <= waited < 8, waited  # retry-after (2-3 s from the clock's second), not the SDK's own backoff
