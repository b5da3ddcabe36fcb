"""The official `anthropic` SDK as the client: through the proxy it gets what it gets from the upstream."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from proxy.proxy_harness import Keys, Running
from spendgate.testing.upstream import MockUpstream

TOOLS: list[Any] = [{"name": "get_weather", "description": "Weather at a place.",
                     "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]
MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in San Francisco?"}]


def clients(gateway: Running, upstream: MockUpstream, key: str, scenario: str
            ) -> tuple[anthropic.AsyncAnthropic, anthropic.AsyncAnthropic]:
    headers = {"x-mock-scenario": scenario}
    return (anthropic.AsyncAnthropic(api_key=key, base_url=gateway.url, default_headers=headers, max_retries=0),
            anthropic.AsyncAnthropic(api_key="direct", base_url=upstream.url, default_headers=headers, max_retries=0))


@pytest.mark.parametrize("scenario", ["tool_use", "thinking", "web_search", "cache"])
async def test_streaming_gives_the_same_final_message(gateway: Running, keys: Keys, upstream: MockUpstream,
                                                      scenario: str) -> None:
    finals = []
    for client in clients(gateway, upstream, keys.alice, scenario):
        async with client, client.messages.stream(model="claude-opus-5-5", max_tokens=1024, messages=MESSAGES,
                                                  tools=TOOLS) as stream:
            finals.append(await stream.get_final_message())
    through_proxy, direct = finals
    assert through_proxy == direct
    assert through_proxy.usage.output_tokens > 1
    if scenario == "tool_use":
        tool = through_proxy.content[1]
        assert tool.type == "tool_use" and tool.input == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    line = gateway.ledger()[-1]
    assert (line["outcome"], line["tokens"]["output"]) == ("ok", through_proxy.usage.output_tokens)


async def test_non_streaming_gives_the_same_message(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    results = []
    for client in clients(gateway, upstream, keys.bob, "tool_use"):
        async with client:
            results.append(await client.messages.create(model="claude-sonnet-5-5", max_tokens=1024,
                                                        messages=MESSAGES, tools=TOOLS))
    assert results[0] == results[1]
    assert results[0].stop_reason == "tool_use"


async def test_count_tokens_and_models_through_the_sdk(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    proxied, _ = clients(gateway, upstream, keys.alice, "text")
    async with proxied:
        counted = await proxied.messages.count_tokens(model="claude-opus-5-5", messages=MESSAGES)
        models = [model.id async for model in proxied.models.list()]
    assert counted.input_tokens > 0
    assert "claude-haiku-5-5" in models


async def test_errors_reach_the_sdk_as_api_errors(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    proxied, _ = clients(gateway, upstream, keys.alice, "overloaded")
    async with proxied:
        with pytest.raises(anthropic.APIStatusError) as overloaded:
            await proxied.messages.create(model="claude-opus-5-5", max_tokens=10, messages=MESSAGES)
    assert overloaded.value.status_code == 529
    assert overloaded.value.request_id and overloaded.value.request_id.startswith("req_mock_")

    unknown = anthropic.AsyncAnthropic(api_key="sk-sg-nobody", base_url=gateway.url, max_retries=0)
    async with unknown:
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await unknown.messages.create(model="claude-opus-5-5", max_tokens=10, messages=MESSAGES)
    assert refused.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                             "message": "invalid virtual key"},
                                  "request_id": refused.value.request_id}


async def test_a_broken_stream_is_an_error_for_the_sdk(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    proxied, _ = clients(gateway, upstream, keys.alice, "reset")
    async with proxied:
        with pytest.raises(anthropic.APIStatusError, match="lost mid-response"):
            async with proxied.messages.stream(model="claude-opus-5-5", max_tokens=10, messages=MESSAGES) as stream:
                await stream.get_final_message()
