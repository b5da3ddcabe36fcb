"""Where the audit log lives in a cluster: ConfigMap segments, checkpoints in an AuditLog's status.

The records (spendgate.logic.audit) are JSON lines in ConfigMaps in the operator's namespace, named
`<log>-audit-<YYYY-MM>-<NNNN>`: one calendar month (UTC) per segment, a new segment when one would
pass `segment_bytes` (a ConfigMap holds at most 1 MiB), numbered in order, labelled
`spendgate.io/audit-log=<log>`. A segment is only ever appended to, through a replace conditional on
its resourceVersion, so two writers (a second operator replica) cannot both append: the loser reads
the new head and chains its records after it. ConfigMaps survive operator restarts, need no volume
(so any replica can write, and the test API server, which runs no kubelet, holds them), and
`spendgate audit verify` reads them with nothing but API access.

After every append the writer stores a checkpoint (record count and head hash) in the status of the
AuditLog `<log>` in the same namespace. Its status can only be written with `auditlogs/status`
rights, which namespace editors do not get, so rewriting the ConfigMaps shows. Records carry an
`id`; a record whose id is among the recent ones is not appended twice (an operator that restarts
between appending a record and writing the status it came from produces the same record again).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import kubernetes

from spendgate.adapters.kube import (
    MERGE_PATCH,
    METADATA_LIST,
    Kube,
    KubeError,
    core_path,
    custom_path,
    load_configuration,
)
from spendgate.api.v1alpha1 import API_VERSION, GROUP, VERSION
from spendgate.logic import audit
from spendgate.logic.audit import Checkpoint, Head
from spendgate.logic.windows import rfc3339

logger = logging.getLogger(__name__)

DEFAULT_LOG = "spendgate"
LOG_LABEL, PERIOD_LABEL = "spendgate.io/audit-log", "spendgate.io/audit-period"
SEGMENT_ANNOTATION, FIRST_SEQ_ANNOTATION = "spendgate.io/audit-segment", "spendgate.io/audit-first-seq"
RECORDS_KEY = "records.jsonl"
SEGMENT_BYTES = 256 * 1024  # well below a ConfigMap's 1 MiB; each append rewrites the open segment
CHECKPOINTS_KEPT = 10
RECENT_IDS = 20_000
ATTEMPTS = 5


class AuditLogError(Exception):
    """The log could not be read; the message says where and why."""


# -- the segment format (shared by the writer and the readers) ---------------------------------------


def segment_name(log: str, period: str, number: int) -> str:
    return f"{log}-audit-{period}-{number:04d}"


def segment_number(metadata: Mapping[str, Any]) -> int:
    try:
        return int((metadata.get("annotations") or {}).get(SEGMENT_ANNOTATION, -1))
    except ValueError:
        return -1


def segment_lines(configmap: Mapping[str, Any]) -> list[str]:
    return [line for line in str((configmap.get("data") or {}).get(RECORDS_KEY, "")).splitlines() if line.strip()]


def parse_lines(lines: Iterable[str]) -> list[Any]:
    """Records as JSON values; a line that is not JSON stays in the list as text, for verify to name."""
    parsed: list[Any] = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            parsed.append(line)
    return parsed


def dumps(record: Mapping[str, Any]) -> str:
    return audit.canonical(record).decode()


def checkpoints_of(status: Mapping[str, Any]) -> list[Checkpoint]:
    return [Checkpoint(int(c["records"]), str(c["head"]), str(c["time"])) for c in status.get("checkpoints") or []
            if isinstance(c, dict) and {"records", "head", "time"} <= c.keys()]


# -- writing (the operator, async) -----------------------------------------------------------------


@dataclass
class _Segment:
    name: str
    number: int
    period: str
    lines: list[str]
    version: str  # resourceVersion

    @property
    def size(self) -> int:
        return sum(map(_size, self.lines))


def _size(line: str) -> int:
    return len(line.encode()) + 1  # with its newline


class _Conflict(Exception):
    """Someone else appended first."""


@dataclass
class AuditLogWriter:
    kube: Kube
    namespace: str
    log: str = DEFAULT_LOG
    segment_bytes: int = SEGMENT_BYTES
    head: Head = field(default_factory=Head)
    _segment: _Segment | None = None
    _segments: int = 0
    _loaded: bool = False
    _recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_IDS))
    _ids: set[str] = field(default_factory=set)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def append(self, records: Sequence[Mapping[str, Any]], now: datetime) -> int:
        """Chain and store the records not stored yet; returns how many were appended. Raises
        KubeError when the API refuses (the caller keeps the records and tries again later)."""
        async with self._lock:
            if not self._loaded:
                await self._load()
            for _ in range(ATTEMPTS):
                fresh = [record for record in records if record["id"] not in self._ids]
                if not fresh:
                    return 0
                chained = audit.chain(fresh, self.head)
                try:
                    await self._store(chained)
                except _Conflict:
                    await self._load()
                    continue
                self.head = audit.head_of(chained, self.head)
                self._remember(record["id"] for record in chained)
                await self._checkpoint(now)
                return len(chained)
            raise KubeError(409, "Conflict", f"audit log {self.namespace}/{self.log}: lost {ATTEMPTS} races to append")

    async def _load(self) -> None:
        """Find the newest segment, its head, and the ids in it."""
        listing = await self.kube.request("GET", core_path("configmaps", self.namespace), accept=METADATA_LIST,
                                          query={"labelSelector": f"{LOG_LABEL}={self.log}"})
        items = sorted(listing.get("items") or [], key=lambda item: segment_number(item["metadata"]))
        self._segments, self._segment = len(items), None
        if items:
            newest_name = items[-1]["metadata"]["name"]
            newest = await self.kube.request("GET", core_path("configmaps", self.namespace, newest_name))
            metadata = newest["metadata"]
            lines = segment_lines(newest)
            self._segment = _Segment(metadata["name"], segment_number(metadata),
                                     (metadata.get("labels") or {}).get(PERIOD_LABEL, ""), lines,
                                     str(metadata["resourceVersion"]))
            records = [r for r in parse_lines(lines) if isinstance(r, dict)]
            if records:
                self.head = Head(int(records[-1]["seq"]) + 1, str(records[-1]["hash"]))
            self._remember(str(r.get("id")) for r in records)
        self._loaded = True

    def _remember(self, ids: Iterable[str]) -> None:
        for record_id in ids:
            if len(self._recent) == self._recent.maxlen:
                self._ids.discard(self._recent[0])
            self._recent.append(record_id)
            self._ids.add(record_id)

    async def _store(self, chained: list[dict[str, Any]]) -> None:
        """Append to the open segment while it has room and the month is the same, and start new
        segments for the rest (a large batch, the first listing of 10,000 policies, spans several)."""
        batch: list[str] = []
        new, period_of_batch = False, ""
        for record in chained:
            line, period = dumps(record), str(record["time"])[:7]
            if not batch:
                segment = self._segment
                new = segment is None or segment.period != period or segment.size + _size(line) > self.segment_bytes
                period_of_batch = period
            elif period != period_of_batch or self._filled(batch, new) + _size(line) > self.segment_bytes:
                await self._write(batch, new, period_of_batch)
                batch, new, period_of_batch = [], True, period
            batch.append(line)
        if batch:
            await self._write(batch, new, period_of_batch)

    def _filled(self, batch: list[str], new: bool) -> int:
        return sum(map(_size, batch)) + (0 if new or self._segment is None else self._segment.size)

    async def _write(self, batch: list[str], new: bool, period: str) -> None:
        if new or self._segment is None:
            await self._create(period, batch)
        else:
            await self._replace(self._segment, batch)

    async def _replace(self, segment: _Segment, lines: list[str]) -> None:
        body = self._manifest(segment.name, segment.number, segment.period, [*segment.lines, *lines], segment.version)
        try:
            written = await self.kube.request("PUT", core_path("configmaps", self.namespace, segment.name), body)
        except KubeError as error:
            if error.status == 409:
                raise _Conflict from error
            raise
        segment.lines.extend(lines)
        segment.version = str(written["metadata"]["resourceVersion"])

    async def _create(self, period: str, lines: list[str]) -> None:
        number = (self._segment.number + 1) if self._segment else 0
        name = segment_name(self.log, period, number)
        body = self._manifest(name, number, period, lines, None)
        try:
            written = await self.kube.request("POST", core_path("configmaps", self.namespace), body)
        except KubeError as error:
            if error.status == 409:
                raise _Conflict from error
            raise
        self._segment = _Segment(name, number, period, list(lines), str(written["metadata"]["resourceVersion"]))
        self._segments += 1

    def _manifest(self, name: str, number: int, period: str, lines: list[str], version: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": name, "namespace": self.namespace,
            "labels": {LOG_LABEL: self.log, PERIOD_LABEL: period, "app.kubernetes.io/name": "spendgate",
                       "app.kubernetes.io/component": "audit-log",
                       "app.kubernetes.io/managed-by": "spendgate-operator"},
            "annotations": {SEGMENT_ANNOTATION: str(number), FIRST_SEQ_ANNOTATION: str(json.loads(lines[0])["seq"])},
        }
        if version is not None:
            metadata["resourceVersion"] = version
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                "data": {RECORDS_KEY: "\n".join(lines) + "\n"}}

    async def _checkpoint(self, now: datetime) -> None:
        """Record the head in the AuditLog's status (created on first use); a newer checkpoint written
        by another replica wins."""
        path = custom_path("auditlogs", self.namespace, self.log)
        for _ in range(ATTEMPTS):
            try:
                current = await self.kube.request("GET", path)
            except KubeError as error:
                if error.status != 404:
                    raise
                current = await self._create_log(path)
            status = current.get("status") or {}
            if int(status.get("records") or 0) >= self.head.records:
                return
            checkpoint = {"records": self.head.records, "head": self.head.hash, "time": rfc3339(now)}
            body = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                    "status": {"records": self.head.records, "head": self.head.hash, "lastAppend": rfc3339(now),
                               "segments": self._segments,
                               "checkpoints": [checkpoint, *(status.get("checkpoints") or [])][:CHECKPOINTS_KEPT]}}
            try:
                await self.kube.request("PATCH", f"{path}/status", body, MERGE_PATCH)
                return
            except KubeError as error:
                if error.status != 409:
                    raise

    async def _create_log(self, path: str) -> dict[str, Any]:
        body = {"apiVersion": API_VERSION, "kind": "AuditLog", "spec": {},
                "metadata": {"name": self.log, "namespace": self.namespace}}
        try:
            return await self.kube.request("POST", custom_path("auditlogs", self.namespace), body)
        except KubeError as error:
            if error.status != 409:
                raise
            return await self.kube.request("GET", path)


# -- reading (the CLI, sync) -------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredLog:
    records: list[Any]
    checkpoints: list[Checkpoint]
    segments: list[str]
    where: str


def read_cluster_log(namespace: str, log: str = DEFAULT_LOG, kubeconfig: Path | None = None,
                     context: str | None = None) -> StoredLog:
    """Every segment, in order, and the checkpoints; AuditLogError says what could not be read."""
    where = f"audit log {namespace}/{log}"
    try:
        client = kubernetes.client.ApiClient(load_configuration(kubeconfig, context))
        core, custom = kubernetes.client.CoreV1Api(client), kubernetes.client.CustomObjectsApi(client)
        listing = core.list_namespaced_config_map(namespace, label_selector=f"{LOG_LABEL}={log}")
        listed = client.sanitize_for_serialization(listing)["items"]  # type: ignore[no-untyped-call]
        try:
            found = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "auditlogs", log)
            status = cast(dict[str, Any], found).get("status") or {}
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise
            status = {}
    except kubernetes.config.ConfigException as error:
        raise AuditLogError(f"{where}: no Kubernetes credentials ({error}); pass --kubeconfig") from error
    except kubernetes.client.ApiException as error:
        raise AuditLogError(f"{where}: {error.status} {error.reason}") from error
    except Exception as error:  # connection refused, TLS: urllib3's many errors
        raise AuditLogError(f"{where}: {type(error).__name__}: {error}") from error
    segments = sorted(listed, key=lambda item: segment_number(item["metadata"]))
    lines = [line for segment in segments for line in segment_lines(segment)]
    return StoredLog(parse_lines(lines), checkpoints_of(status), [s["metadata"]["name"] for s in segments], where)


def read_file_log(path: Path) -> StoredLog:
    """An exported log: JSON lines, as `spendgate audit export --output jsonl` writes them."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise AuditLogError(f"{path}: cannot be read: {error}") from error
    return StoredLog(parse_lines(line for line in lines if line.strip()), [], [str(path)], str(path))
