"""Hostile clients cannot exhaust the gateway (issue 9, section 3): slow or idle sockets, too many
connections, oversized or malformed requests, paths that hide another endpoint, and tags that
would grow memory or step around a repository budget."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import orjson
import pytest

from proxy.proxy_harness import (
    Keys,
    Running,
    StartGateway,
    assert_anthropic_error,
    message_request,
    raw_exchange,
    status_and_body,
)
from spendgate.adapters.journal import SpendJournal
from spendgate.logic.enforcement import BudgetIndex, Caller
from spendgate.logic.repository import normalize_repository
from spendgate.logic.tracker import SpendTracker
from spendgate.proxy.enforce import BudgetAdmission
from spendgate.proxy.guard import ClientLimits
from spendgate.testing.upstream import MockUpstream

FAST = ClientLimits(header_timeout=0.3, idle_timeout=0.3, body_timeout=0.3, max_connections=8)


async def test_headers_that_never_finish_are_answered_408_and_closed(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(client=FAST)
    for partial in (b"", b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-k"):  # idle socket, slowloris
        status, body = status_and_body(await raw_exchange(gateway, partial))
        assert status == 408 and body["error"]["type"] == "timeout_error"  # type: ignore[index]
    assert 'spendgate_client_connections_refused_total{reason="header_timeout"} 2.0' in await gateway.metrics()


async def test_a_body_that_never_finishes_is_answered_and_recorded(start_gateway: StartGateway, keys: Keys,
                                                                   upstream: MockUpstream) -> None:
    gateway = await start_gateway(client=FAST)
    head = (f"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {keys.alice}\r\ncontent-type: application/json"
            "\r\ncontent-length: 500\r\n\r\n{\"model\":").encode()
    status, body = status_and_body(await raw_exchange(gateway, head))
    assert status == 408 and "did not arrive within 0.3 s" in body["error"]["message"]  # type: ignore[index]
    (line,) = gateway.ledger()
    assert (line["status"], line["developer"], line["outcome"]) == (408, "alice", "proxy_error")
    assert upstream.requests == []


async def test_idle_keep_alive_connections_are_closed(start_gateway: StartGateway, keys: Keys) -> None:
    gateway = await start_gateway(client=FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy.port)
    writer.write(f"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-api-key: {keys.alice}\r\n\r\n".encode())
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await asyncio.wait_for(reader.read(), 3)  # the rest of the answer, then EOF once idle for 0.3 s
    assert reader.at_eof()
    writer.close()


async def test_oversized_headers_are_refused(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(client=FAST)
    answer = await raw_exchange(gateway, b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 70_000)
    assert status_and_body(answer)[0] == 431


async def test_a_large_body_sent_with_its_headers_in_one_write_is_no_header_overflow(gateway: Running,
                                                                                   keys: Keys) -> None:
    body = json.dumps(message_request(system="x" * 400_000)).encode()
    head = (f"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {keys.alice}\r\ncontent-type: application/json"
            f"\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    answer = await raw_exchange(gateway, head + body)
    assert answer.startswith(b"HTTP/1.1 200")


async def test_malformed_http_gets_an_anthropic_shaped_400(gateway: Running) -> None:
    status, body = status_and_body(await raw_exchange(gateway, b"NONSENSE\x00\x01 / HTTP/9\r\n\r\n"))
    assert status == 400 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


async def test_past_the_connection_limit_clients_get_overloaded_and_admin_still_answers(
        start_gateway: StartGateway, keys: Keys) -> None:
    gateway = await start_gateway(client=ClientLimits(max_connections=8, header_timeout=30))
    held = [await asyncio.open_connection("127.0.0.1", gateway.proxy.port) for _ in range(8)]
    try:
        answer = await raw_exchange(gateway, b"")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in head
        assert orjson.loads(body)["error"]["type"] == "overloaded_error"
        async with httpx.AsyncClient(base_url=gateway.admin_url) as admin:
            assert (await admin.get("/readyz")).status_code == 200
            assert 'reason="connections"' in (await admin.get("/metrics")).text
    finally:
        for _, writer in held:
            writer.close()
    await asyncio.sleep(0.05)
    async with gateway.client(keys.alice) as client:  # capacity is back once they are gone
        assert (await client.get("/v1/models")).status_code == 200


async def test_pipelined_requests_are_answered_in_order(gateway: Running, keys: Keys) -> None:
    one = f"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-api-key: {keys.alice}\r\n\r\n".encode()
    last = f"GET /v1/models/x HTTP/1.1\r\nhost: x\r\nx-api-key: {keys.alice}\r\nconnection: close\r\n\r\n".encode()
    answer = await raw_exchange(gateway, one + one + last)
    assert answer.count(b"HTTP/1.1 200") == 3
    assert len(gateway.ledger()) == 3


@pytest.mark.parametrize("path", ["/v1/models/../messages", "/v1/%2e%2e/v1/messages", "/v1/./messages",
                                  "/v1//messages", "/v1/models/..%2fmessages", "/v1/messages;x=1",
                                  "/v1/models\\..\\messages"])
async def test_paths_that_hide_another_endpoint_are_refused(path: str, gateway: Running, keys: Keys,
                                                            upstream: MockUpstream) -> None:
    answer = await raw_exchange(gateway, f"POST {path} HTTP/1.1\r\nhost: x\r\nx-api-key: {keys.alice}\r\n"
                                         "content-length: 2\r\nconnection: close\r\n\r\n{}".encode())
    status, body = status_and_body(answer)
    assert status == 400 and "normalised" in body["error"]["message"]  # type: ignore[index]
    assert upstream.requests == []


@pytest.mark.parametrize("path", ["/v1/messages/", "/V1/MESSAGES", "/v1/Messages?beta=true"])
async def test_other_spellings_of_messages_are_priced_and_budgeted(path: str, gateway: Running, keys: Keys) -> None:
    """Whatever the upstream makes of these, they are treated as Messages: never forwarded unpriced."""
    async with gateway.client(keys.alice) as client:
        await client.post(path, json=message_request())
    (line,) = gateway.ledger()
    assert line["endpoint"] == "messages"
    assert line["costUSD"] != "0" or "usage_missing" in line["flags"]  # the mock echoes odd paths: no usage


def test_repository_tags_have_one_normal_form() -> None:
    same = ["acme/payments-api", "Acme/Payments-API", "https://github.com/acme/payments-api.git",
            "git@github.com:acme/payments-api.git", "ssh://git@github.com:22/acme/payments-api",
            "github.com/acme/payments-api/", "https://user:token@github.com/Acme/payments-api"]
    assert {normalize_repository(tag) for tag in same} == {"acme/payments-api"}
    assert normalize_repository("gitlab.com/group/sub/repo") == "group/sub/repo"
    assert normalize_repository(" / .git ") is None


async def test_the_covering_budget_cache_does_not_grow_with_client_tags(gateway: Running) -> None:
    index = BudgetIndex(gateway.proxy.bundles.current.signed.bundle)
    for number in range(5000):
        index.budgets_for(Caller("alice", "platform", "alice-laptop", f"org/repo-{number}"))
    assert len(index._covering) == 1
    payments = index.budgets_for(Caller("alice", "platform", "alice-laptop", "acme/payments-api"))
    assert "ai-budgets/payments-api-weekly" in {budget.id for budget in payments}


async def test_a_cost_center_can_require_the_repository_tag(start_gateway: StartGateway, policies: Path,
                                                            keys: Keys, tmp_path: Path, upstream: MockUpstream) -> None:
    manifest = policies / "10-costcenters.yaml"
    manifest.write_text(manifest.read_text().replace("  members: [alice, bob, carol]",
                                                     "  members: [alice, bob, carol]\n  requireRepositoryTag: true"))
    budgets = BudgetAdmission(SpendTracker(SpendJournal(tmp_path / "journal")))
    gateway = await start_gateway(admission=budgets, spend_sink=budgets)
    async with gateway.client(keys.alice) as client:
        untagged = await client.post("/v1/messages", json=message_request())
    message = assert_anthropic_error(untagged, 400, "invalid_request_error")
    assert "ANTHROPIC_CUSTOM_HEADERS" in message and "x-spendgate-repo" in message
    async with gateway.client(keys.alice, **{"x-spendgate-repo": "https://github.com/Acme/payments-api.git"}
                              ) as client:
        tagged = await client.post("/v1/messages", json=message_request())
    assert tagged.status_code == 200
    assert gateway.ledger()[-1]["repo"] == "acme/payments-api"
    assert tagged.headers["x-spendgate-budget"]  # the repository budget covers it now
    async with gateway.client(keys.bob) as client:  # another cost center: no requirement
        assert (await client.post("/v1/messages", json=message_request())).status_code == 200
    assert len(upstream.requests) == 2
