"""Fault injection (issue 9, section 6): a misbehaving upstream and misbehaving clients, one table.

For each fault: what the client gets, exactly one ledger line with its outcome and flags, the
reservation released, and the proxy serving the next normal request. (Connection-level abuse
that never becomes a request, like slow headers, is in test_hostile_clients.py: it has no ledger
line, and is counted instead.)
"""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from proxy.proxy_harness import Keys, Running, StartGateway, message_request, raw_exchange, wait_for_ledger
from proxy.test_cli import free_port
from spendgate.adapters.journal import SpendJournal, read_journal
from spendgate.logic.tracker import SpendTracker
from spendgate.proxy.enforce import BudgetAdmission
from spendgate.proxy.guard import ClientLimits
from spendgate.testing.upstream import TEXT, Failure, MockUpstream, Reply, Scenario, message_json

ABSURD = Scenario(content=({"type": "text", "text": "ok"},), usage={"input_tokens": 10**18, "output_tokens": 5})
MALFORMED_SSE = (b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-opus-5-5\","
                 b"\"usage\":{\"input_tokens\":100,\"output_tokens\":1}}}\n\n"
                 b"event: content_block_delta\ndata: {not json at all\n\n"
                 b"data: \xff\xfe\n\n"
                 b": a comment\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
                 b"{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n"
                 b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
BIG = Scenario(content=({"type": "text", "text": "y" * 3_000_000},), usage=TEXT.usage)


@dataclass
class Fault:
    reply: Reply | None  # what the upstream does (None: its default answer)
    stream: bool
    status: int | None  # what the client gets (None: the client left before an answer)
    outcome: str
    flags: set[str] = field(default_factory=set)
    priced: bool = True  # the ledger line carries a non-zero cost
    client: str = "normal"  # normal, leaves-before-answer, leaves-mid-stream


UPSTREAM_FAULTS: dict[str, Fault] = {
    "hangs before headers": Fault(Reply(TEXT, fail=Failure.HANG_BEFORE_HEADERS), False, 504, "upstream_failed",
                                  priced=False),
    "hangs mid-stream": Fault(Reply(TEXT, fail=Failure.HANG, fail_after=4), True, 200, "upstream_failed",
                              {"estimated"}),
    "closes mid-event": Fault(Reply(TEXT, fail=Failure.RESET, fail_after=80, chunk_size=7), True, 200,
                              "upstream_failed", {"estimated"}),
    "closes a message halfway": Fault(Reply(TEXT, fail=Failure.RESET), False, 502, "upstream_failed", priced=False),
    "sends malformed SSE": Fault(Reply(status=200, body=MALFORMED_SSE, content_type="text/event-stream"), True, 200,
                                 "ok"),
    "sends an error event mid-stream": Fault(Reply(Scenario(TEXT.content, TEXT.usage, error_after=5)), True, 200,
                                             "upstream_error", {"estimated"}),
    "compresses the body": Fault(Reply(status=200, body=gzip.compress(message_json(TEXT, "claude-opus-5-5", "m")),
                                       headers=(("content-encoding", "gzip"),)), False, 200, "ok"),
    "sends a huge body": Fault(Reply(BIG), False, 200, "ok"),
    "sends a non-JSON error": Fault(Reply(status=502, body=b"<html>502 Bad Gateway</html>", content_type="text/html"),
                                    False, 502, "upstream_error", priced=False),
    "sends absurd usage": Fault(Reply(ABSURD), False, 200, "ok", {"usage_implausible"}),
    "sends absurd usage in a stream": Fault(Reply(ABSURD), True, 200, "ok", {"usage_implausible"}),
    "sends no usage at all": Fault(Reply(status=200, body=json.dumps({"type": "message", "content": []}).encode()),
                                   False, 200, "ok", {"usage_missing", "estimated"}),
}
CLIENT_FAULTS: dict[str, Fault] = {
    # A Message is completed upstream and billed in full even when its client has gone (docs/proxy.md).
    "leaves before the answer": Fault(Reply(TEXT, delay=0.3), False, None, "ok", client="leaves-before-answer"),
    "leaves mid-stream": Fault(Reply(TEXT, chunk_delay=0.05), True, None, "client_disconnected", {"estimated"},
                               client="leaves-mid-stream"),
}


@pytest.fixture
async def enforcing(start_gateway: StartGateway, tmp_path: Path) -> tuple[Running, SpendTracker, Path]:
    journal = tmp_path / "spend.journal"
    tracker = SpendTracker(SpendJournal(journal))
    budgets = BudgetAdmission(tracker)
    running = await start_gateway(admission=budgets, spend_sink=budgets, read_timeout=0.5,
                                  max_buffered_response_bytes=256 * 1024,
                                  client=ClientLimits(body_timeout=0.5))
    return running, tracker, journal


async def send(running: Running, key: str, fault: Fault) -> httpx.Response | None:
    request = message_request(stream=fault.stream)
    async with running.client(key) as client:
        if fault.client == "normal":
            return await client.post("/v1/messages", json=request)
        if fault.client == "leaves-before-answer":
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/v1/messages", json=request, timeout=0.1)
            return None
        async with client.stream("POST", "/v1/messages", json=request) as response:
            async for _ in response.aiter_bytes():
                break  # the first bytes, then hang up
        return None


async def check(fault: Fault, running: Running, tracker: SpendTracker, journal: Path, keys: Keys) -> None:
    response = await send(running, keys.alice, fault)
    if fault.status is not None:
        assert response is not None and response.status_code == fault.status, response and response.text
        if fault.stream and fault.status == 200 and fault.outcome != "ok":
            assert "event: error" in response.text or fault.outcome == "upstream_error"
    (line,) = await wait_for_ledger(running, 1)
    assert line["outcome"] == fault.outcome, line
    assert fault.flags <= set(line["flags"]), line["flags"]
    assert (Decimal(line["costUSD"]) > 0) is fault.priced, line
    assert read_journal(journal).unfinished() == []  # settled in the journal too
    assert all(tracker.in_flight(*charge) == 0 for charge in tracker.local_totals())
    async with running.client(keys.alice) as client:  # the proxy still serves the next normal request
        assert (await client.post("/v1/messages", json=message_request())).status_code == 200
    assert len(await wait_for_ledger(running, 2)) == 2


@pytest.mark.parametrize("name", sorted([*UPSTREAM_FAULTS, *CLIENT_FAULTS]))
async def test_a_misbehaving_upstream_or_client(name: str, enforcing: tuple[Running, SpendTracker, Path],
                                                keys: Keys, upstream: MockUpstream) -> None:
    fault = UPSTREAM_FAULTS.get(name) or CLIENT_FAULTS[name]
    if fault.reply is not None:
        upstream.enqueue(fault.reply)
    await check(fault, *enforcing, keys)


async def test_an_upstream_that_refuses_connections(start_gateway: StartGateway, keys: Keys) -> None:
    running = await start_gateway(upstream_url=f"http://127.0.0.1:{free_port()}")
    async with running.client(keys.alice) as client:
        response = await client.post("/v1/messages", json=message_request())
    assert response.status_code == 502 and response.json()["error"]["type"] == "api_error"
    (line,) = running.ledger()
    assert (line["outcome"], line["costUSD"]) == ("upstream_failed", "0")


async def lying_client(running: Running, key: str, declared_minus_sent: int) -> bytes:
    """A request whose content-length differs from the body it sends."""
    body = json.dumps(message_request()).encode()
    return await raw_exchange(running, f"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\ncontent-type: "
                                       f"application/json\r\ncontent-length: {len(body) + declared_minus_sent}"
                                       "\r\n\r\n".encode() + body, wait=3.0)


async def test_a_client_that_leaves_while_sending_its_body(enforcing: tuple[Running, SpendTracker, Path],
                                                           keys: Keys, upstream: MockUpstream) -> None:
    running, _, _ = enforcing
    _, writer = await asyncio.open_connection("127.0.0.1", running.proxy.port)
    writer.write(f"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {keys.alice}\r\ncontent-length: 900\r\n\r\n"
                 '{"model":'.encode())
    await writer.drain()
    writer.close()
    (line,) = await wait_for_ledger(running, 1)
    assert (line["status"], line["outcome"], line["developer"]) == (499, "client_disconnected", "alice")
    assert upstream.requests == []


@pytest.mark.parametrize(("declared_minus_sent", "first_status", "outcome"), [(100, b"408", "proxy_error"),
                                                                             (-10, b"400", "proxy_error")],
                         ids=["longer than sent", "shorter than sent"])
async def test_a_lying_content_length(declared_minus_sent: int, first_status: bytes, outcome: str,
                                      enforcing: tuple[Running, SpendTracker, Path], keys: Keys,
                                      upstream: MockUpstream) -> None:
    running, tracker, _ = enforcing
    answer = await lying_client(running, keys.alice, declared_minus_sent)
    assert answer.split(b"\r\n", 1)[0].split()[1] == first_status
    (line,) = await wait_for_ledger(running, 1)
    assert line["outcome"] == outcome and upstream.requests == []  # a cut body is never forwarded
    assert all(tracker.in_flight(*charge) == 0 for charge in tracker.local_totals())
    async with running.client(keys.alice) as client:
        assert (await client.post("/v1/messages", json=message_request())).status_code == 200


def test_every_fault_the_issue_names_is_covered() -> None:
    named = {"refuses", "hangs before headers", "hangs mid-stream", "closes mid-event", "malformed SSE",
             "error event mid-stream", "compresses", "huge body", "non-JSON error", "absurd usage"}
    cases = " ".join([*UPSTREAM_FAULTS, "refuses"])
    assert all(word in cases for word in named)
    assert {"leaves before the answer", "leaves mid-stream"} <= set(CLIENT_FAULTS)

