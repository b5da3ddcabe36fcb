"""Hand-made ledger lines for the store tests: one valid line, with the fields a test cares about changed."""

from __future__ import annotations

from typing import Any

import orjson

TOKEN_FIELDS = ("input", "cacheWrite5m", "cacheWrite1h", "cacheRead", "output", "webSearches")


def line(request_id: str, time: str = "2026-11-24T09:12:03.481220Z", cost: str = "0.001368",
         tokens: dict[str, int] | None = None, **fields: Any) -> dict[str, Any]:
    """A ledger line as the proxy writes it (docs/ledger.md), priced and answered."""
    counts = {"input": 42, "cacheWrite5m": 100, "cacheWrite1h": 0, "cacheRead": 2000, "output": 15, "webSearches": 0}
    record: dict[str, Any] = {
        "schemaVersion": "spendgate.io/ledger/v1", "time": time, "requestId": request_id, "method": "POST",
        "path": "/v1/messages", "endpoint": "messages", "keyName": "alice-laptop", "developer": "alice",
        "costCenter": "platform", "repo": "org/payments", "branch": "main", "session": "s-1",
        "sessionSource": "header", "requestClass": None, "agentId": None, "requestedModel": "claude-opus-5-5",
        "servedModel": "claude-opus-5-5", "pricedModel": "claude-opus-5-5", "priceSource": "genai-prices",
        "stream": True, "tokens": {**counts, **(tokens or {})}, "costUSD": cost, "status": 200, "outcome": "ok",
        "errorType": None, "latencyMs": 1.708, "upstreamMs": 1.501, "addedMs": 0.158,
        "decision": {"action": "forward", "reason": "", "model": None}, "flags": [], "bundleVersion": "ff61bc82347b",
    }
    record.update(fields)
    return record


def dumps(*records: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(record) for record in records]
