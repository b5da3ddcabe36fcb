"""Every proxy's latest SpendReport, indexed by (budget, window) so one budget folds in O(proxies).

Reports are cumulative, so the index only ever holds each report object's current content; the
fold takes, per proxy, its report with the highest sequence (spend.latest_reports) and sums the
entries. A duplicated, retried or reordered report therefore changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from spendgate.api.v1alpha1 import SpendEntry, SpendReportSpec
from spendgate.logic.spend import FoldedSpend, fold_entries, latest_reports

ReportKey = str  # namespace/name of the SpendReport object


@dataclass(frozen=True)
class _Report:
    spec: SpendReportSpec
    entries: dict[tuple[str, str], SpendEntry]  # (budget, window) -> entry


class SpendIndex:
    def __init__(self) -> None:
        self._reports: dict[ReportKey, _Report] = {}
        self._by_budget: dict[str, dict[str, set[ReportKey]]] = defaultdict(lambda: defaultdict(set))
        self._winners: set[ReportKey] = set()

    def put(self, key: ReportKey, spec: SpendReportSpec) -> set[str]:
        """Store a report's current content; returns the budgets whose spend may have changed."""
        old = self._reports.get(key)
        new = _Report(spec, {(e.budget, e.window): e for e in spec.entries})
        self._unlink(key, old)
        self._reports[key] = new
        for budget, window in new.entries:
            self._by_budget[budget][window].add(key)
        changed = {budget for budget, _ in _differences(old, new)}
        return changed | self._rechoose_winners()

    def remove(self, key: ReportKey) -> set[str]:
        old = self._reports.pop(key, None)
        self._unlink(key, old)
        changed = {budget for budget, _ in (old.entries if old else {})}
        return changed | self._rechoose_winners()

    def fold(self, budget: str, window: str) -> FoldedSpend:
        keys = self.reporters(budget, window)
        return fold_entries(self._reports[key].entries[(budget, window)] for key in sorted(keys))

    def windows(self, budget: str) -> set[str]:
        """Window ids that some proxy reported spend under for this budget."""
        return {window for window, keys in self._by_budget.get(budget, {}).items() if keys}

    def reporters(self, budget: str, window: str) -> set[ReportKey]:
        """The reports that count for this budget and window."""
        return self._by_budget.get(budget, {}).get(window, set()) & self._winners

    def last_report(self, budget: str, window: str) -> str | None:
        """The newest reportedAt among the reports that count for this budget and window."""
        keys = self.reporters(budget, window)
        times = [t for t in (self._reports[key].spec.reportedAt for key in keys) if t]
        return max(times, default=None)

    def reports(self) -> dict[ReportKey, SpendReportSpec]:
        return {key: report.spec for key, report in self._reports.items()}

    def _unlink(self, key: ReportKey, old: _Report | None) -> None:
        for budget, window in old.entries if old else {}:
            self._by_budget[budget][window].discard(key)

    def _rechoose_winners(self) -> set[str]:
        """Budgets of the reports that started or stopped counting (a proxy's newer copy won)."""
        by_spec = {id(report.spec): key for key, report in self._reports.items()}
        winners = {by_spec[id(spec)] for spec in latest_reports(r.spec for r in self._reports.values())}
        flipped, self._winners = winners ^ self._winners, winners
        return {budget for key in flipped if key in self._reports for budget, _ in self._reports[key].entries}


def _differences(old: _Report | None, new: _Report) -> set[tuple[str, str]]:
    before = old.entries if old else {}
    return {pair for pair in before.keys() | new.entries.keys() if before.get(pair) != new.entries.get(pair)}
