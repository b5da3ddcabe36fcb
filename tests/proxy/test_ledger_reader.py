"""The offline tools read what the real proxy writes: every kind of line parses, and writes back identically."""

from __future__ import annotations

import orjson

from proxy.proxy_harness import Keys, Running, message_request
from spendgate.adapters.ledgerfiles import read_ledgers
from spendgate.logic.ledgerrecord import LEDGER_SCHEMA, record_line


async def test_every_kind_of_line_the_proxy_writes_reads_back_exactly(gateway: Running, keys: Keys) -> None:
    body = message_request(stream=True)
    async with gateway.client(keys.alice, **{"x-spendgate-repo": "acme/payments-api"}) as client:
        await client.post("/v1/messages", json=body)
        await client.post("/v1/messages", json=message_request(), headers={"x-mock-scenario": "cache"})
        await client.post("/v1/messages", json=message_request(), headers={"x-mock-scenario": "overloaded"})
        await client.post("/v1/messages/count_tokens", json={"model": "claude-opus-5-5", "messages": []})
        await client.get("/v1/models")
        await client.post("/v1/messages", content=b"{not json")
    async with gateway.client("sk-sg-wrong") as client:
        await client.post("/v1/messages", json=message_request())
    raw = gateway.ledger()
    records = read_ledgers([gateway.ledger_path]).records
    assert len(records) == len(raw) == 7
    by_id = {line["requestId"]: line for line in raw}
    for record in records:
        assert record.schema_version == LEDGER_SCHEMA
        assert orjson.loads(orjson.dumps(record_line(record), option=orjson.OPT_UTC_Z)) == by_id[record.request_id]
    first = min(records, key=lambda record: record.time)
    assert first.request_bytes == len(orjson.dumps(body))  # what httpx sent, as admission measured it
    assert first.charged and first.repo == "acme/payments-api"
    assert [r.request_bytes for r in records if r.developer is None] == [None]  # refused before its body was read
