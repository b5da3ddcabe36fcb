"""The operator's audit trail: which records a status change makes, and getting them into the log.

Records wait in memory until the log accepted them. A policy change is appended before the status
that shows it is written, and an enforcement transition before the Budget status that makes it
official, so a crash in between repeats a record (the log drops the repeat by its id) rather than
losing one. If the API refuses, enforcement goes on: the records stay pending, are retried on every
pass of the reconcile loop, and `spendgate_audit_pending_records` says how many wait.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from spendgate.adapters.auditlog import AuditLogWriter
from spendgate.adapters.kube import KubeError
from spendgate.api import v1alpha1 as api
from spendgate.logic import audit

logger = logging.getLogger(__name__)

PENDING_LIMIT = 100_000  # past this the oldest pending records are dropped, loudly: memory is finite


def budget_records(budget: api.Budget, uid: str, previous: api.BudgetStatus, status: api.BudgetStatus,
                   now: datetime) -> list[dict[str, Any]]:
    """Enforcement transitions (Ok / Alert / Downgrade / Paused) and window resets, as records."""
    about = audit.subject("Budget", budget.metadata.namespace, budget.metadata.name, uid)
    records = []
    if previous.window and status.window and previous.window != status.window:
        records.append(audit.window_reset(now, about, previous.window, previous.spentUSD, status.window,
                                          previous.state.value if previous.state else None))
    reset_to_ok = bool(records) and status.state == api.BudgetState.OK  # the reset record says it all
    if previous.state is not None and status.state is not None and previous.state != status.state and not reset_to_ok:
        records.append(audit.enforcement(now, about, budget.metadata.generation or 0, status.window or "",
                                         previous.state.value, status.state.value, status.spentUSD,
                                         budget.spec.limitUSD, budget.spec.enforcement.value))
    return records


class AuditTrail:
    def __init__(self, writer: AuditLogWriter, registry: CollectorRegistry) -> None:
        self._writer = writer
        self._pending: list[Mapping[str, Any]] = []
        self._appended = Counter("spendgate_audit_records_total", "Records appended to the audit log",
                                 registry=registry)
        self._waiting = Gauge("spendgate_audit_pending_records", "Audit records the log has not accepted yet",
                              registry=registry)
        self._dropped = Counter("spendgate_audit_dropped_records_total",
                                "Audit records dropped after the log refused writes for too long", registry=registry)

    async def append(self, records: Iterable[Mapping[str, Any]], now: datetime) -> None:
        """Queue the records and try to write everything pending; never raises."""
        self._pending.extend(records)
        if len(self._pending) > PENDING_LIMIT:
            dropped = len(self._pending) - PENDING_LIMIT
            logger.error("audit log: %d records dropped, the log has refused writes for too long", dropped)
            self._dropped.inc(dropped)
            del self._pending[:dropped]
        if self._pending:
            try:
                self._appended.inc(await self._writer.append(self._pending, now))
                self._pending = []
            except KubeError as error:
                logger.error("audit log: %d records not appended yet (%s); retrying", len(self._pending), error)
        self._waiting.set(len(self._pending))
