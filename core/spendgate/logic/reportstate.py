"""A proxy's cumulative spend per (budget, window) and the sequence of its last accepted SpendReport.

Pure: the report protocol's state machine (docs/operator.md "The spend report protocol");
spendgate.adapters.reporter writes it to the API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal

from spendgate.api import v1alpha1 as api
from spendgate.logic.spend import exact
from spendgate.logic.tracker import Charge, Totals
from spendgate.logic.windows import rfc3339


class ReportState:
    """A proxy's cumulative spend and the sequence of its last accepted report. Pure."""

    def __init__(self, proxy: str) -> None:
        self.proxy = proxy
        self.sequence = 0
        self.exists = False  # whether the SpendReport object exists in the API
        self._totals: dict[Charge, Totals] = {}
        self._dirty = False
        self._stopping = False
        self.reported: dict[Charge, Decimal] = {}  # what the SpendReport in the API says
        self.reported_at: datetime | None = None  # when the last accepted report was written

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
        self._dirty |= spec.stopped  # a previous life of this proxy said it stopped: say it runs again
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

    def stop(self) -> None:
        """The next report is the last: it says the proxy stopped, so its silence is expected."""
        self._stopping = self._dirty = True

    @property
    def changed(self) -> bool:
        return self._dirty

    def due(self, now: datetime, heartbeat: timedelta | None) -> bool:
        """Whether to write: something changed, or (with a heartbeat) the last report is that old."""
        if self._dirty:
            return True
        return heartbeat is not None and (self.reported_at is None or now - self.reported_at >= heartbeat)

    def next_report(self, now: datetime) -> api.SpendReportSpec:
        entries = [api.SpendEntry(budget=budget, window=window, spentUSD=exact(total.spent), requests=total.requests)
                   for (budget, window), total in sorted(self._totals.items())]
        return api.SpendReportSpec(proxy=self.proxy, entries=entries, sequence=self.sequence + 1,
                                   reportedAt=rfc3339(now), stopped=self._stopping)

    def accepted(self, report: api.SpendReportSpec) -> None:
        self.sequence, self.exists, self._dirty = report.sequence, True, False
        self.reported = reported_values(report)
        self.reported_at = datetime.fromisoformat(report.reportedAt) if report.reportedAt else None


def reported_values(report: api.SpendReportSpec) -> dict[Charge, Decimal]:
    return {(entry.budget, entry.window): Decimal(entry.spentUSD) for entry in report.entries}
