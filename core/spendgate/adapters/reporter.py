"""The spend report protocol, proxy side. The proxy wires its spend tracker into this module; the
tests drive it directly as a fake proxy.

The protocol (docs/operator.md has the long form):
- Each proxy owns one SpendReport, named after itself (its pod name), in the operator's namespace.
- `spec.entries` holds the proxy's cumulative spend and request count for each (budget, window)
  it still keeps. Values never go down, so a repeated report changes nothing.
- Every write raises `spec.sequence` by one and is a JSON patch whose first operation tests the
  previous sequence: a delayed, retried or reordered write fails instead of overwriting a newer one.
- A proxy writes at most once a second when something changed, and at least once per heartbeat
  (15 s) regardless, so the operator can tell a quiet proxy from a gone one; its last report
  before a clean shutdown says `stopped`.
- On start, the proxy reads its SpendReport and continues from its sequence and values (its local
  journal covers whatever it had not reported yet; per entry the larger value wins).
- It drops an entry once the entry's window has ended and the final value has been reported.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from spendgate.adapters.kube import JSON_PATCH, Kube, KubeError, custom_path
from spendgate.api import v1alpha1 as api
from spendgate.logic.reportstate import ReportState

logger = logging.getLogger(__name__)

PROXY_LABEL = "spendgate.io/proxy"


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

    async def report(self, now: datetime, heartbeat: timedelta | None = None) -> bool:
        """Write the next report if anything changed (or the heartbeat is due); True when one was accepted."""
        if not self.state.due(now, heartbeat):
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
