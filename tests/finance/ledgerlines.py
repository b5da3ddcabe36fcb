"""Ledger lines for the store tests: the shared test line (tests/unit/test_ledger_record.py) with the fields a
test cares about changed."""

from __future__ import annotations

from typing import Any

import orjson

from unit.test_ledger_record import line as shared_line


def line(request_id: str, time: str = "2026-11-24T09:12:03.481220Z", cost: str = "0.001368",
         tokens: dict[str, int] | None = None, **fields: Any) -> dict[str, Any]:
    """A priced, answered request as the proxy writes it (docs/ledger.md)."""
    record = shared_line(requestId=request_id, time=time, costUSD=cost, costCenter="platform", developer="alice",
                         decision={"action": "forward", "reason": "", "model": None},
                         servedModel="claude-opus-5-5", pricedModel="claude-opus-5-5")
    record["tokens"] = {**record["tokens"], **(tokens or {})}
    record.update(fields)
    return record


def dumps(*records: dict[str, Any]) -> list[bytes]:
    return [orjson.dumps(record) for record in records]


def write(path: Any, *records: dict[str, Any]) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(data + b"\n" for data in dumps(*records)))
    return path
