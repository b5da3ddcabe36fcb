"""Bad input and failures: each gets a clear Anthropic-shaped error or a ledger record, and nothing is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx

from proxy.proxy_harness import Keys, Running, StartGateway, assert_anthropic_error, message_request, wait_for_ledger
from spendgate.proxy.admission import AdmissionRequest, Decision
from spendgate.proxy.settle import Spend
from spendgate.testing.upstream import TEXT, MockUpstream, Reply


async def test_malformed_json_names_the_problem(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    async with gateway.client(keys.alice) as client:
        response = await client.post("/v1/messages", content=b'{"model": "claude-opus-5-5",', headers={
            "content-type": "application/json"})
    message = assert_anthropic_error(response, 400, "invalid_request_error")
    assert "not valid JSON" in message and "line 1" in message
    assert upstream.requests == []
    line = gateway.ledger()[-1]
    assert (line["status"], line["outcome"], line["errorType"], line["developer"]) == (
        400, "proxy_error", "invalid_request_error", "alice")


async def test_body_must_be_an_object_with_a_model(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    async with gateway.client(keys.alice) as client:
        not_object = await client.post("/v1/messages", json=[message_request()])
        no_model = await client.post("/v1/messages", json={"max_tokens": 10, "messages": []})
        empty = await client.post("/v1/messages/count_tokens", content=b"")
    assert "JSON object" in assert_anthropic_error(not_object, 400, "invalid_request_error")
    assert "model" in assert_anthropic_error(no_model, 400, "invalid_request_error")
    assert "not valid JSON" in assert_anthropic_error(empty, 400, "invalid_request_error")
    assert upstream.requests == []


async def test_oversized_body_is_refused(start_gateway: StartGateway, keys: Keys, upstream: MockUpstream) -> None:
    gateway = await start_gateway(max_body_bytes=1000)

    async def chunked() -> AsyncIterator[bytes]:  # no content-length: the limit applies while reading
        for _ in range(20):
            yield b" " * 100

    async with gateway.client(keys.alice) as client:
        declared = await client.post("/v1/messages", json=message_request(system="x" * 2000))
        streamed = await client.post("/v1/messages", content=chunked())
        fits = await client.post("/v1/messages", json=message_request())
    assert "1000 bytes" in assert_anthropic_error(declared, 413, "request_too_large")
    assert_anthropic_error(streamed, 413, "request_too_large")
    assert fits.status_code == 200
    assert len(upstream.requests) == 1


async def test_unparseable_content_length(gateway: Running, keys: Keys) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy.port)
    writer.write(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + keys.alice.encode()
                 + b"\r\ncontent-length: 12abc\r\n\r\n")
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"400"  # refused by the HTTP parser before the gateway sees it


async def test_missing_unknown_and_revoked_keys(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    attempts = {"missing": gateway.client(None), "unknown": gateway.client("sk-sg-not-a-key"),
                "bearer-unknown": gateway.client(None, authorization="Bearer sk-sg-nope"),
                "revoked": gateway.client(keys.revoked)}
    messages = {}
    for name, client in attempts.items():
        async with client:
            response = await client.post("/v1/messages", json=message_request())
        messages[name] = assert_anthropic_error(response, 401, "authentication_error")
    assert "missing" in messages["missing"]
    assert messages["unknown"] == messages["bearer-unknown"] == "invalid virtual key"
    assert "revoked" in messages["revoked"] and keys.revoked not in messages["revoked"]
    assert upstream.requests == []
    assert {line["outcome"] for line in gateway.ledger()} == {"proxy_error"}
    assert {line["developer"] for line in gateway.ledger()} == {None}


async def test_paths_outside_v1_are_not_found(gateway: Running, keys: Keys) -> None:
    async with gateway.client(keys.alice) as client:
        response = await client.get("/api/hello")
    assert "/v1/" in assert_anthropic_error(response, 404, "not_found_error")


async def test_upstream_unreachable(start_gateway: StartGateway, keys: Keys) -> None:
    gateway = await start_gateway(upstream_url="http://127.0.0.1:9", connect_timeout=2)
    async with gateway.client(keys.alice) as client:
        response = await client.post("/v1/messages", json=message_request(stream=True))
    message = assert_anthropic_error(response, 502, "api_error")
    assert "127.0.0.1" in message and "unreachable" in message
    line = gateway.ledger()[-1]
    assert (line["outcome"], line["status"], line["costUSD"], line["developer"]) == (
        "upstream_failed", 502, "0", "alice")


async def test_upstream_timeout_before_any_answer(start_gateway: StartGateway, keys: Keys) -> None:
    gateway = await start_gateway(read_timeout=0.2)
    async with gateway.client(keys.alice, **{"x-mock-scenario": "hang"}) as client:
        response = await client.post("/v1/messages", json=message_request(stream=True))
    assert "0.2s" in assert_anthropic_error(response, 504, "timeout_error")
    assert gateway.ledger()[-1]["outcome"] == "upstream_failed"


async def test_upstream_failing_mid_body_of_a_message(start_gateway: StartGateway, keys: Keys) -> None:
    """Before the client has any byte, a broken upstream body is still a clean 502 or 504."""
    gateway = await start_gateway(read_timeout=0.2)
    async with gateway.client(keys.alice, **{"x-mock-scenario": "reset"}) as client:
        reset = await client.post("/v1/messages", json=message_request())
    async with gateway.client(keys.alice, **{"x-mock-scenario": "hang_mid_stream"}) as client:
        silent = await client.post("/v1/messages", json=message_request())
    assert "lost mid-response" in assert_anthropic_error(reset, 502, "api_error")
    assert_anthropic_error(silent, 504, "timeout_error")
    assert [line["outcome"] for line in gateway.ledger()] == ["upstream_failed", "upstream_failed"]


async def stream_text(gateway: Running, key: str, scenario: str) -> tuple[int, bytes]:
    async with gateway.client(key, **{"x-mock-scenario": scenario}) as client, client.stream(
            "POST", "/v1/messages", json=message_request(stream=True)) as response:
        return response.status_code, b"".join([chunk async for chunk in response.aiter_raw()])


async def test_upstream_silence_mid_stream_ends_the_stream_with_an_error_event(
        start_gateway: StartGateway, keys: Keys, upstream: MockUpstream) -> None:
    gateway = await start_gateway(read_timeout=0.2)
    status, received = await stream_text(gateway, keys.alice, "hang_mid_stream")
    sent = bytes(upstream.requests[-1].sent)
    assert status == 200
    assert received.startswith(sent)
    assert received[len(sent):].startswith(b'event: error\ndata: {"type":"error","error":{"type":"timeout_error"')
    line = gateway.ledger()[-1]
    assert (line["outcome"], line["errorType"], line["flags"]) == ("upstream_failed", "timeout_error", ["estimated"])
    assert line["tokens"]["input"] == 42 and Decimal(line["costUSD"]) > 0


async def test_upstream_reset_mid_stream_is_accounted(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    status, received = await stream_text(gateway, keys.alice, "reset")
    sent = bytes(upstream.requests[-1].sent)
    assert status == 200 and received.startswith(sent)
    assert b'"type":"api_error"' in received[len(sent):]
    line = gateway.ledger()[-1]
    assert (line["outcome"], line["errorType"], line["flags"]) == ("upstream_failed", "api_error", ["estimated"])
    # message_start's usage (42 uncached, 100 cache writes, 2000 cache reads) is billed; output is estimated
    assert (line["tokens"]["input"], line["tokens"]["cacheWrite5m"], line["tokens"]["cacheRead"]) == (42, 100, 2000)


async def test_mid_stream_error_event_is_relayed_and_accounted(gateway: Running, keys: Keys,
                                                               upstream: MockUpstream) -> None:
    status, received = await stream_text(gateway, keys.alice, "mid_stream_error")
    assert status == 200
    assert received == bytes(upstream.requests[-1].sent)
    assert received.endswith(b'"error":{"type":"overloaded_error","message":"Overloaded"}}\n\n')
    line = gateway.ledger()[-1]
    assert (line["status"], line["outcome"], line["errorType"]) == (200, "upstream_error", "overloaded_error")
    assert line["flags"] == ["estimated"] and Decimal(line["costUSD"]) > 0


async def test_client_disconnect_mid_stream_still_bills_what_was_served(gateway: Running, keys: Keys,
                                                                        upstream: MockUpstream) -> None:
    """The client leaves while the upstream is silent: the proxy hangs up upstream and settles at once."""
    gate = asyncio.Event()  # never set: the upstream would hold the stream forever
    upstream.enqueue(Reply(TEXT, gate=gate, fail_after=6))
    async with gateway.client(keys.alice) as client, client.stream(
            "POST", "/v1/messages", json=message_request(stream=True)) as response:
        received = b""
        async for chunk in response.aiter_raw():
            received += chunk
            if received.count(b"\n\n") == 6:
                break
    line = (await wait_for_ledger(gateway, 1))[-1]
    assert (line["status"], line["outcome"], line["flags"]) == (200, "client_disconnected", ["estimated"])
    # 36 characters of text were relayed: at least 9 output tokens are billed, with the input
    assert line["tokens"]["output"] >= 9 and line["tokens"]["input"] == 42
    assert Decimal(line["costUSD"]) > 0
    assert line["developer"] == "alice"


async def test_client_gone_before_its_body_arrived(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy.port)
    writer.write(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: " + keys.alice.encode()
                 + b"\r\ncontent-length: 5000\r\n\r\n{\"model\"")
    await writer.drain()
    writer.close()
    line = (await wait_for_ledger(gateway, 1))[-1]
    assert (line["status"], line["outcome"], line["developer"]) == (499, "client_disconnected", "alice")
    assert upstream.requests == []


class Exploding:
    def admit(self, request: AdmissionRequest) -> Decision:
        raise RuntimeError("bug in admission")


async def test_an_internal_error_is_still_an_anthropic_error(start_gateway: StartGateway, keys: Keys) -> None:
    gateway = await start_gateway(admission=Exploding())
    async with gateway.client(keys.alice) as client:
        response = await client.post("/v1/messages", json=message_request())
    assert "bug" not in assert_anthropic_error(response, 500, "api_error")
    assert gateway.ledger()[-1]["status"] == 500


class BrokenSink:
    def record(self, spend: Spend) -> None:
        raise OSError("journal disk full")


async def test_a_failing_spend_sink_does_not_fail_the_answer(start_gateway: StartGateway, keys: Keys) -> None:
    gateway = await start_gateway(spend_sink=BrokenSink())
    async with gateway.client(keys.alice) as client:
        response = await client.post("/v1/messages", json=message_request())
    assert response.status_code == 200
    assert "spendgate_spend_sink_errors_total 1.0" in await gateway.metrics()
    assert gateway.ledger()[-1]["outcome"] == "ok"


async def test_http_errors_are_not_retried_or_changed(gateway: Running, keys: Keys, upstream: MockUpstream) -> None:
    """One client request is one upstream request, whatever the upstream answers."""
    async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": keys.alice,
                                                                "x-mock-scenario": "overloaded"}) as client:
        response = await client.post("/v1/messages", json=message_request())
    assert response.status_code == 529
    assert len(upstream.requests) == 1
