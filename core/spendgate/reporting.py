"""The spend report protocol, proxy side. The proxy wires its spend tracker into this module; the
tests drive it directly as a fake proxy.

The protocol (docs/operator.md has the long form):
- Each proxy owns one SpendReport, named after itself (its pod name), in the operator's namespace.
- `spec.entries` holds the proxy's cumulative spend and request count for each (budget, window)
  it still keeps. Values never go down, so a repeated report changes nothing.
- Every write raises `spec.sequence` by one and is a JSON patch whose first operation tests the
  previous sequence: a delayed, retried or reordered write fails instead of overwriting a newer one.
- A proxy writes at most once a second, and only when something changed.
- On start, the proxy reads its SpendReport and continues from its sequence and values (its local
  journal covers whatever it had not reported yet; per entry the larger value wins).
- It drops an entry once the entry's window has ended and the final value has been reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from spendgate.api import v1alpha1 as api
from spendgate.journal import Charge, Totals
from spendgate.kube import JSON_PATCH, Kube, KubeError, custom_path
from spendgate.spend import exact
from spendgate.windows import rfc3339

logger = logging.getLogger(__name__)

PROXY_LABEL = "spendgate.io/proxy"


class ReportState:
    """A proxy's cumulative spend and the sequence of its last accepted report. Pure."""

    def __init__(self, proxy: str) -> None:
        self.proxy = proxy
        self.sequence = 0
        self.exists = False  # whether the SpendReport object exists in the API
        self._totals: dict[Charge, Totals] = {}
        self._dirty = False
        self.reported: dict[Charge, Decimal] = {}  # what the SpendReport in the API says

    def add(self, budget: str, window: str, spent: Decimal, requests: int = 1) -> None:
        total = self._totals.setdefault((budget, window), Totals(Decimal(0), 0))
        total.spent += spent
        total.requests += requests
        self._dirty = True

    def merge(self, totals: Mapping[Charge, Totals]) -> None:
        """Take cumulative totals kept elsewhere (the proxy's journal); per entry the larger wins."""
        for charge, total in totals.items():
            known = self._totals.get(charge)
            if known is None or total.spent > known.spent:
                self._totals[charge] = Totals(total.spent, total.requests)
                self._dirty = True

    def totals(self) -> dict[Charge, Decimal]:
        return {charge: total.spent for charge, total in self._totals.items()}

    def resume(self, spec: api.SpendReportSpec) -> None:
        """Continue from what the API holds: its sequence, and per entry the larger total."""
        self.sequence, self.exists = spec.sequence, True
        self.reported = reported_values(spec)
        for entry in spec.entries:
            known = self._totals.get((entry.budget, entry.window))
            reported = Totals(Decimal(entry.spentUSD), entry.requests)
            if known is None or reported.spent > known.spent:
                self._totals[(entry.budget, entry.window)] = reported
                continue
            self._dirty |= known.spent > reported.spent

    def forget(self, ended: Callable[[Charge], bool]) -> None:
        """Drop entries whose window ended; call it only after their final value was reported."""
        kept = {charge: total for charge, total in self._totals.items() if not ended(charge)}
        self._dirty |= len(kept) != len(self._totals)
        self._totals = kept

    @property
    def changed(self) -> bool:
        return self._dirty

    def next_report(self, now: datetime) -> api.SpendReportSpec:
        entries = [api.SpendEntry(budget=budget, window=window, spentUSD=exact(total.spent), requests=total.requests)
                   for (budget, window), total in sorted(self._totals.items())]
        return api.SpendReportSpec(proxy=self.proxy, entries=entries, sequence=self.sequence + 1,
                                   reportedAt=rfc3339(now))

    def accepted(self, report: api.SpendReportSpec) -> None:
        self.sequence, self.exists, self._dirty = report.sequence, True, False
        self.reported = reported_values(report)


def reported_values(report: api.SpendReportSpec) -> dict[Charge, Decimal]:
    return {(entry.budget, entry.window): Decimal(entry.spentUSD) for entry in report.entries}


class SequenceConflict(Exception):
    """The SpendReport's sequence is not the one this proxy last wrote (another writer, or a lost
    reply to our own write): read it again with `resume`, then report again."""


class SpendReporter:
    def __init__(self, kube: Kube, namespace: str, name: str, state: ReportState) -> None:
        self._kube = kube
        self._namespace = namespace
        self._name = name
        self.state = state

    async def resume(self) -> None:
        try:
            found = await self._kube.request("GET", self._path())
        except KubeError as error:
            if error.status == 404:
                self.state.exists = False
                return
            raise
        self.state.resume(api.SpendReportSpec.model_validate(found["spec"]))

    async def report(self, now: datetime) -> bool:
        """Write the next report if anything changed; True when a report was accepted."""
        if not self.state.changed:
            return False
        report = self.state.next_report(now)
        await (self.send(self.state.sequence, report) if self.state.exists else self._create(report))
        self.state.accepted(report)
        return True

    async def send(self, expected_sequence: int, report: api.SpendReportSpec) -> None:
        """One compare-and-swap write: replace the spec only if it still has `expected_sequence`."""
        patch = [{"op": "test", "path": "/spec/sequence", "value": expected_sequence},
                 {"op": "replace", "path": "/spec", "value": api.as_json(report)}]
        try:
            await self._kube.request("PATCH", self._path(), patch, JSON_PATCH)
        except KubeError as error:
            if error.status in (409, 422):
                raise SequenceConflict(str(error)) from error
            raise

    async def _create(self, report: api.SpendReportSpec) -> None:
        body: dict[str, Any] = {
            "apiVersion": api.API_VERSION, "kind": "SpendReport",
            "metadata": {"name": self._name, "namespace": self._namespace, "labels": {PROXY_LABEL: self._name}},
            "spec": api.as_json(report),
        }
        try:
            await self._kube.request("POST", custom_path("spendreports", self._namespace), body)
        except KubeError as error:
            if error.status == 409:
                raise SequenceConflict("the SpendReport exists already") from error
            raise

    def _path(self) -> str:
        return custom_path("spendreports", self._namespace, self._name)
