"""The audit log's ConfigMap segments, on an in-memory stand-in for the API: batches larger than a
segment, month boundaries, a second writer racing the first, repeated records. (The real API server
runs it in tests/operator/test_provenance_audit.py.)"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spendgate.adapters.auditlog import (
    LOG_LABEL,
    RECORDS_KEY,
    AuditLogWriter,
    checkpoints_of,
    parse_lines,
    segment_number,
)
from spendgate.adapters.kube import KubeError
from spendgate.logic import audit

T0 = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
BUDGET = audit.subject("Budget", "ai-budgets", "alice-daily", "uid-1")


class FakeApi:
    """ConfigMaps and AuditLogs in one namespace, with resourceVersion preconditions like the API's."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.conflicts = 0

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "",
                      accept: str = "", query: dict[str, str] | None = None) -> dict[str, Any]:
        parts = path.strip("/").split("/")
        collection = "/".join(parts[:6]) if parts[0] == "apis" else "/".join(parts[:5])
        name = path[len(collection) + 2:].split("/")[0] if len(path) > len(collection) + 1 else ""
        key = f"{collection}/{name}"
        if method == "GET" and not name:
            selector = (query or {}).get("labelSelector", "=").split("=")
            items = [copy.deepcopy(o) for k, o in self.objects.items() if k.startswith(collection + "/")
                     and o["metadata"].get("labels", {}).get(selector[0]) == selector[1]]
            return {"items": items}
        if method == "GET":
            if key not in self.objects:
                raise KubeError(404, "NotFound", key)
            return copy.deepcopy(self.objects[key])
        if method == "POST":
            key = f"{collection}/{body['metadata']['name']}"
            if key in self.objects:
                self.conflicts += 1
                raise KubeError(409, "AlreadyExists", key)
            return self._store(key, copy.deepcopy(body))
        current = self.objects.get(key)
        if current is None:
            raise KubeError(404, "NotFound", key)
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise KubeError(409, "Conflict", key)
        if method == "PUT":
            return self._store(key, copy.deepcopy(body))
        return self._store(key, {**current, "status": {**current.get("status", {}), **body["status"]}})

    def _store(self, key: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def segments(self) -> list[dict[str, Any]]:
        found = [o for o in self.objects.values() if o["metadata"].get("labels", {}).get(LOG_LABEL) == "spendgate"]
        return sorted(found, key=lambda o: segment_number(o["metadata"]))

    def log(self) -> list[Any]:
        return parse_lines(line for s in self.segments() for line in s["data"][RECORDS_KEY].splitlines())

    def checkpoints(self) -> list[audit.Checkpoint]:
        log = next(o for k, o in self.objects.items() if "/auditlogs/" in k)
        return checkpoints_of(log["status"])


def writer(api: FakeApi, segment_bytes: int = 2048) -> AuditLogWriter:
    return AuditLogWriter(kube=api, namespace="ns", segment_bytes=segment_bytes)  # type: ignore[arg-type]


def transitions(count: int, start: int = 0, step: timedelta = timedelta(seconds=1)) -> list[dict[str, Any]]:
    return [audit.enforcement(T0 + step * n, BUDGET, n, "2026-11-30", "Ok", "Alert", f"{n}.00", "40.00", "Enforce")
            for n in range(start, start + count)]


async def test_a_batch_larger_than_a_segment_spans_several() -> None:
    api = FakeApi()
    assert await writer(api).append(transitions(300), T0) == 300

    sizes = [len(s["data"][RECORDS_KEY].encode()) for s in api.segments()]
    assert len(sizes) > 10 and max(sizes) <= 2048
    result = audit.verify(api.log(), api.checkpoints())
    assert result.ok and result.records == 300 and result.checkpoints_matched == 1


async def test_a_new_month_starts_a_new_segment() -> None:
    api = FakeApi()
    await writer(api, segment_bytes=1_000_000).append(transitions(4, step=timedelta(minutes=30)), T0)
    periods = [s["metadata"]["labels"]["spendgate.io/audit-period"] for s in api.segments()]
    assert periods == ["2026-11", "2026-12"]
    assert [s["metadata"]["name"] for s in api.segments()] == ["spendgate-audit-2026-11-0000",
                                                               "spendgate-audit-2026-12-0001"]


async def test_two_writers_chain_one_log_and_a_repeat_is_dropped() -> None:
    api = FakeApi()
    first, second = writer(api), writer(api)
    await second.append([], T0)  # second has read the (empty) log
    await first.append(transitions(3), T0)
    await second.append(transitions(3, start=3), T0)  # its head is stale: it loses the race, reloads, re-chains
    await first.append(transitions(2, start=6), T0)
    assert await second.append(transitions(3, start=3), T0) == 0  # the same records again: already there

    log = api.log()
    assert audit.verify(log, api.checkpoints()).ok
    assert [record["generation"] for record in log] == list(range(8))
    assert api.checkpoints()[0].records == 8 and api.conflicts == 2  # each writer lost one race


async def test_a_refused_write_raises_and_the_records_can_be_sent_again() -> None:
    class Refusing(FakeApi):
        async def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
            if method == "POST":
                raise KubeError(403, "Forbidden", "configmaps is forbidden")
            return await super().request(method, path, *args, **kwargs)

    refusing = Refusing()
    with pytest.raises(KubeError, match="403 Forbidden"):
        await writer(refusing).append(transitions(2), T0)
    assert refusing.segments() == []
