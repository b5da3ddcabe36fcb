"""Wire compatibility: the client cannot tell the proxy from the upstream, byte for byte."""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest

from proxy.proxy_harness import UPSTREAM_KEY, Keys, Running, message_request
from spendgate.testing.upstream import MODELS, SCENARIOS, TEXT, MockUpstream, Reply

STREAMED = ["text", "tool_use", "thinking", "cache", "web_search", "utf8_split", "refusal"]


@pytest.mark.parametrize("scenario", STREAMED)
async def test_streams_arrive_byte_for_byte(gateway: Running, keys: Keys, upstream: MockUpstream,
                                            scenario: str) -> None:
    async with gateway.client(keys.alice, **{"x-mock-scenario": scenario}) as client, client.stream(
            "POST", "/v1/messages?beta=true", json=message_request(stream=True)) as response:
        received = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert received == bytes(upstream.requests[-1].sent)


async def test_non_streaming_message_arrives_unchanged(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    async with gateway.client(keys.alice, **{"x-mock-scenario": "tool_use"}) as client:
        response = await client.post("/v1/messages", json=message_request())
    assert response.status_code == 200
    assert response.content == bytes(upstream.requests[-1].sent)
    assert response.headers["request-id"] == "req_mock_000001"
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "3999"
    assert response.headers["anthropic-organization-id"] == "org-mock"
    assert [value.split("/")[0] for value in response.headers.get_list("server")] == ["Python"]  # aiohttp's only


async def test_request_reaches_the_upstream_as_sent_with_the_organisation_key(
        gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    body = json.dumps(message_request(stream=True, metadata={"user_id": "u"}), indent=1).encode()
    headers = {"anthropic-beta": "interleaved-thinking-2025-05-14,advisor-tool-2026-03-01",
               "user-agent": "claude-cli/2.1.328 (external, sdk-cli)", "x-app": "cli",
               "x-claude-code-session-id": "5d1c0e9a-0000-4000-8000-000000000001", "x-custom-tag": "kept",
               "x-spendgate-repo": "org/app", "content-type": "application/json",
               "keep-alive": "timeout=5", "proxy-authorization": "Basic eA==", "connection": "keep-alive, x-hop",
               "x-hop": "dropped: the client named it hop-by-hop"}
    async with gateway.client(keys.alice, **headers) as client:
        response = await client.post("/v1/messages?beta=true", content=body)
    assert response.status_code == 200
    received = upstream.requests[-1]
    assert received.body == body
    assert received.query == "beta=true"
    for name in ("anthropic-beta", "anthropic-version", "user-agent", "x-app", "x-claude-code-session-id",
                 "x-custom-tag", "content-type"):
        assert received.header(name) == (headers.get(name) or "2023-06-01"), name
    assert received.header("x-api-key") == UPSTREAM_KEY
    assert received.header("accept-encoding") == "identity"  # usage is read from the body
    assert not received.header_names() & {"authorization", "x-spendgate-repo", "keep-alive", "proxy-authorization",
                                          "x-hop"}


async def test_bearer_token_authenticates_and_is_not_forwarded(gateway: Running, keys: Keys,
                                                               upstream: MockUpstream) -> None:
    async with gateway.client(None, authorization=f"Bearer {keys.bob}") as client:
        response = await client.post("/v1/messages", json=message_request())
    assert response.status_code == 200
    assert upstream.requests[-1].header("authorization") is None
    assert upstream.requests[-1].header("x-api-key") == UPSTREAM_KEY
    assert gateway.ledger()[-1]["developer"] == "bob"


async def test_upstream_errors_pass_through_unchanged(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    for scenario, status in (("overloaded", 529), ("rate_limited", 429), ("bad_request", 400), ("server_error", 500)):
        async with gateway.client(keys.alice, **{"x-mock-scenario": scenario}) as client:
            response = await client.post("/v1/messages", json=message_request(stream=True))
        assert response.status_code == status
        assert response.content == SCENARIOS[scenario].body
        assert response.headers["request-id"].startswith("req_mock_")
    ledger = gateway.ledger()
    assert [line["status"] for line in ledger] == [529, 429, 400, 500]
    assert [line["errorType"] for line in ledger] == ["overloaded_error", "rate_limit_error", "invalid_request_error",
                                                      "api_error"]
    assert {line["outcome"] for line in ledger} == {"upstream_error"}
    assert {line["costUSD"] for line in ledger} == {"0"}


async def test_rate_limit_headers_reach_the_client(gateway: Running, keys: Keys) -> None:
    async with gateway.client(keys.alice, **{"x-mock-scenario": "rate_limited"}) as client:
        response = await client.post("/v1/messages", json=message_request())
    assert (response.status_code, response.headers["retry-after"]) == (429, "17")


async def test_count_tokens_and_models(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    async with gateway.client(keys.alice) as client:
        counted = await client.post("/v1/messages/count_tokens", json={"model": "claude-opus-5-5", "messages": []})
        models = await client.get("/v1/models", params={"limit": 1000})
        model = await client.get("/v1/models/claude-sonnet-5-5")
    assert counted.json()["input_tokens"] > 0
    assert [entry["id"] for entry in models.json()["data"]] == [model["id"] for model in MODELS]
    assert model.json()["id"] == "claude-sonnet-5-5"
    assert upstream.requests[1].query == "limit=1000"
    ledger = gateway.ledger()
    assert [(line["endpoint"], line["costUSD"], line["developer"]) for line in ledger] == [
        ("count_tokens", "0", "alice"), ("models", "0", "alice"), ("models", "0", "alice")]
    assert ledger[0]["requestedModel"] == "claude-opus-5-5"


async def test_anything_else_under_v1_is_forwarded_as_is(gateway: Running, keys: Keys,
                                                         upstream: MockUpstream) -> None:
    async with gateway.client(keys.alice) as client:
        response = await client.post("/v1/messages/batches?x=1", content=b"not even json")
    assert response.json() == {"method": "POST", "path": "/v1/messages/batches", "query": "x=1"}
    assert upstream.requests[-1].body == b"not even json"
    assert gateway.ledger()[-1]["endpoint"] == "passthrough"


async def test_compressed_responses_pass_through_compressed(gateway: Running, keys: Keys) -> None:
    async with gateway.client(keys.alice, **{"x-mock-gzip": "1", "accept-encoding": "gzip"}) as client, \
            client.stream("GET", "/v1/files") as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(raw)) == {"method": "GET", "path": "/v1/files", "query": ""}


async def test_streams_are_relayed_as_they_arrive(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    """The upstream holds the stream after three events: the client has them all before it continues."""
    gate = asyncio.Event()
    upstream.enqueue(Reply(TEXT, gate=gate, fail_after=3))
    async with gateway.client(keys.alice) as client, client.stream(
            "POST", "/v1/messages", json=message_request(stream=True)) as response:
        chunks = response.aiter_raw()
        early = b""
        while early.count(b"\n\n") < 3:
            early += await asyncio.wait_for(anext(chunks), timeout=5)
        assert not gate.is_set()
        gate.set()
        rest = b"".join([chunk async for chunk in chunks])
    assert early + rest == bytes(upstream.requests[-1].sent)
    assert early.startswith(b"event: message_start")
