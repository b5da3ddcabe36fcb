"""The enforcement seam: admission decides before forwarding, settle tells the spend sink after.

These tests plug in small Admission and SpendSink implementations, the way the enforcement issue
will plug in the budget engine and the spend tracker.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from proxy.proxy_harness import Keys, StartGateway, assert_anthropic_error, message_request
from spendgate.proxy.admission import (
    FORWARD,
    AdmissionRequest,
    Decision,
    Endpoint,
    Forward,
    Reject,
    Reroute,
)
from spendgate.proxy.settle import Spend
from spendgate.testing.upstream import MockUpstream


class Recorder:
    """Admission that remembers what it was asked and answers with a fixed decision."""

    def __init__(self, decision: Decision = FORWARD) -> None:
        self.decision = decision
        self.requests: list[AdmissionRequest] = []

    def admit(self, request: AdmissionRequest) -> Decision:
        self.requests.append(request)
        return self.decision


class Sink:
    def __init__(self) -> None:
        self.spends: list[Spend] = []

    def record(self, spend: Spend) -> None:
        self.spends.append(spend)


PAUSE = Reject(429, "billing_error", "spend limit reached (daily; resets 2026-11-25 00:00 Europe/Berlin)",
               reason="budget ai-budgets/alice-daily paused",
               headers=(("x-should-retry", "false"), ("retry-after", "40213")))


async def test_by_default_everything_is_forwarded_unchanged(start_gateway: StartGateway, keys: Keys,
                                                            upstream: MockUpstream) -> None:
    sink = Sink()
    gateway = await start_gateway(spend_sink=sink)
    async with gateway.client(keys.alice) as client:
        response = await client.post("/v1/messages", json=message_request())
    assert response.status_code == 200
    assert gateway.ledger()[-1]["decision"] == {"action": "forward", "reason": "", "model": None}
    assert [spend.decision for spend in sink.spends] == [FORWARD]


async def test_admission_sees_every_route_with_who_and_what(start_gateway: StartGateway, keys: Keys) -> None:
    admission = Recorder()
    gateway = await start_gateway(admission=admission)
    body = message_request(stream=True, metadata={"user_id": '{"session_id":"s-1"}'})
    async with gateway.client(keys.alice, **{"x-spendgate-repo": "org/app"}) as client:
        await client.post("/v1/messages", json=body)
        await client.post("/v1/messages/count_tokens", json={"model": "claude-haiku-5-5", "messages": []})
        await client.get("/v1/models")
        await client.delete("/v1/files/file_1")
    first = admission.requests[0]
    assert [request.endpoint for request in admission.requests] == [
        Endpoint.MESSAGES, Endpoint.COUNT_TOKENS, Endpoint.MODELS, Endpoint.PASSTHROUGH]
    assert (first.model, first.stream) == ("claude-opus-5-5", True)
    assert first.body_bytes > 0
    assert (first.attribution.identity.developer, first.attribution.identity.cost_center) == ("alice", "platform")
    assert (first.attribution.repo, first.attribution.session) == ("org/app", "s-1")
    assert first.bundle is gateway.proxy.bundles.current.signed
    assert first.now.tzinfo is not None
    assert admission.requests[1].model == "claude-haiku-5-5"
    assert admission.requests[2].model is None


async def test_reject_answers_at_once_in_anthropic_shape_with_its_headers(
        start_gateway: StartGateway, keys: Keys, upstream: MockUpstream) -> None:
    sink = Sink()
    gateway = await start_gateway(admission=Recorder(PAUSE), spend_sink=sink)
    async with gateway.client(keys.alice) as client:
        response = await client.post("/v1/messages", json=message_request(stream=True))
    assert assert_anthropic_error(response, 429, "billing_error") == PAUSE.message
    assert (response.headers["x-should-retry"], response.headers["retry-after"]) == ("false", "40213")
    assert upstream.requests == []
    assert sink.spends == []  # nothing was admitted, nothing to settle
    line = gateway.ledger()[-1]
    assert (line["status"], line["outcome"], line["decision"]) == (
        429, "rejected", {"action": "reject", "reason": PAUSE.reason, "model": None})


@pytest.mark.parametrize("stream", [False, True])
async def test_reroute_rewrites_only_the_model(start_gateway: StartGateway, keys: Keys, upstream: MockUpstream,
                                               stream: bool) -> None:
    sink = Sink()
    decision = Reroute("claude-haiku-5-5", reason="alice-daily at 96%: one step down",
                       headers=(("x-spendgate-downgraded", "claude-opus-5-5 -> claude-haiku-5-5"),), hold="r-1")
    gateway = await start_gateway(admission=Recorder(decision), spend_sink=sink)
    body = message_request(stream=stream, system=[{"type": "text", "text": "x-anthropic-billing-header: cc=1;",
                                                   "cache_control": {"type": "ephemeral"}}], temperature=0.5)
    async with gateway.client(keys.alice) as client:
        response = await client.post("/v1/messages", json=body)
    assert response.status_code == 200
    assert response.headers["x-spendgate-downgraded"] == "claude-opus-5-5 -> claude-haiku-5-5"
    assert upstream.requests[-1].json() == {**body, "model": "claude-haiku-5-5"}
    assert list(upstream.requests[-1].json()) == list(body)  # key order kept
    line = gateway.ledger()[-1]
    assert (line["requestedModel"], line["servedModel"], line["pricedModel"]) == (
        "claude-opus-5-5", "claude-haiku-5-5", "claude-haiku-5-5")
    assert line["decision"] == {"action": "reroute", "reason": decision.reason, "model": "claude-haiku-5-5"}
    [spend] = sink.spends
    assert (spend.decision, spend.model, spend.cost) == (decision, "claude-haiku-5-5", Decimal(line["costUSD"]))
    assert spend.decision.hold == "r-1"  # handed back untouched, e.g. a reservation to settle


async def test_forward_headers_reach_the_client(start_gateway: StartGateway, keys: Keys) -> None:
    warning = Forward(reason="alice-daily at 82%", headers=(("x-spendgate-budget-used", "82%"),))
    gateway = await start_gateway(admission=Recorder(warning))
    async with gateway.client(keys.alice) as client:
        response = await client.post("/v1/messages", json=message_request())
    assert response.headers["x-spendgate-budget-used"] == "82%"
    assert gateway.ledger()[-1]["decision"]["reason"] == "alice-daily at 82%"


async def test_the_sink_hears_of_every_admitted_request_once(start_gateway: StartGateway, keys: Keys) -> None:
    """Priced or not: a failure without usage has cost None, so a reservation can be released."""
    sink = Sink()
    gateway = await start_gateway(spend_sink=sink)
    async with gateway.client(keys.bob, **{"x-mock-scenario": "cache"}) as client:
        await client.post("/v1/messages", json=message_request(stream=True))
    async with gateway.client(keys.bob, **{"x-mock-scenario": "overloaded"}) as client:
        await client.post("/v1/messages", json=message_request())
    async with gateway.client(keys.bob) as client:
        await client.post("/v1/messages/count_tokens", json={"model": "claude-opus-5-5", "messages": []})
        await client.post("/v1/messages", content=b"{broken")  # refused before admission: not admitted
    ledger = gateway.ledger()
    assert [(spend.cost, spend.model, spend.output_tokens) for spend in sink.spends] == [
        (Decimal(ledger[0]["costUSD"]), "claude-opus-5-5", 30), (None, None, None), (None, None, None)]
    cached = sink.spends[0]
    assert cached.cost == (50 * 4 + 1500 * 5 + 2500 * 8 + 120000 * Decimal("0.2") + 30 * 20) / Decimal(1_000_000)
    assert (cached.attribution.identity.developer, cached.attribution.identity.cost_center) == ("bob", "engineering")
    assert cached.request_id == ledger[0]["requestId"] and not cached.estimated
    assert cached.at.isoformat().replace("+00:00", "Z") == ledger[0]["time"]
