"""Every proxy's latest SpendReport, indexed by (budget, window) so one budget folds in O(proxies).

Reports are cumulative, so the index only ever holds each report object's current content; the
fold takes, per proxy, its report with the highest sequence (as spend.latest_reports does) and sums
the entries. A duplicated, retried or reordered report therefore changes nothing. A report costs
O(its entries) to store, whatever the number of proxies: hundreds of proxies report every second.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from spendgate.api.v1alpha1 import SpendEntry, SpendReportSpec
from spendgate.logic.spend import FoldedSpend, fold_entries

ReportKey = str  # namespace/name of the SpendReport object


@dataclass(frozen=True)
class _Report:
    spec: SpendReportSpec
    entries: dict[tuple[str, str], SpendEntry]  # (budget, window) -> entry


class SpendIndex:
    def __init__(self) -> None:
        self._reports: dict[ReportKey, _Report] = {}
        self._by_budget: dict[str, dict[str, set[ReportKey]]] = defaultdict(lambda: defaultdict(set))
        self._by_proxy: dict[str, set[ReportKey]] = defaultdict(set)  # copies of one proxy's report
        self._winners: set[ReportKey] = set()
        self.newest: datetime | None = None  # the newest reportedAt ever stored

    def put(self, key: ReportKey, spec: SpendReportSpec) -> set[str]:
        """Store a report's current content; returns the budgets whose spend may have changed."""
        old = self._reports.get(key)
        new = _Report(spec, {(e.budget, e.window): e for e in spec.entries})
        self._unlink(key, old)
        self._reports[key] = new
        for budget, window in new.entries:
            self._by_budget[budget][window].add(key)
        self._by_proxy[spec.proxy].add(key)
        self._note_time(spec.reportedAt)
        changed = {budget for budget, _ in _differences(old, new)}
        proxies = {spec.proxy} | ({old.spec.proxy} if old else set())
        return changed | self._rechoose_winners(proxies, latest=key)

    def remove(self, key: ReportKey) -> set[str]:
        old = self._reports.pop(key, None)
        self._unlink(key, old)
        self._winners.discard(key)
        changed = {budget for budget, _ in (old.entries if old else {})}
        return changed | (self._rechoose_winners({old.spec.proxy}) if old else set())

    def get(self, key: ReportKey) -> SpendReportSpec | None:
        report = self._reports.get(key)
        return report.spec if report else None

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
        if old is None:
            return
        for budget, window in old.entries:
            self._by_budget[budget][window].discard(key)
        copies = self._by_proxy[old.spec.proxy]
        copies.discard(key)
        if not copies:
            del self._by_proxy[old.spec.proxy]

    def _note_time(self, reported_at: str | None) -> None:
        try:
            instant = datetime.fromisoformat(reported_at) if reported_at else None
        except ValueError:
            return  # the report counts; its time says nothing
        if instant is not None and instant.tzinfo is not None and (self.newest is None or instant > self.newest):
            self.newest = instant

    def _rechoose_winners(self, proxies: set[str], latest: ReportKey | None = None) -> set[str]:
        """Budgets of the reports that started or stopped counting: of each of these proxies, the copy
        with the highest sequence counts (on a tie, the one stored last)."""
        flipped: set[ReportKey] = set()
        for proxy in proxies:
            copies = self._by_proxy.get(proxy, set())
            before = copies & self._winners
            ranked = sorted(copies, key=lambda key: (self._reports[key].spec.sequence, key == latest))
            after = {ranked[-1]} if ranked else set()
            flipped |= before ^ after
            self._winners -= before
            self._winners |= after
        return {budget for key in flipped if key in self._reports for budget, _ in self._reports[key].entries}


def _differences(old: _Report | None, new: _Report) -> set[tuple[str, str]]:
    before = old.entries if old else {}
    return {pair for pair in before.keys() | new.entries.keys() if before.get(pair) != new.entries.get(pair)}
