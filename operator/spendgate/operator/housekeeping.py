"""Which SpendReports belong to proxies that are gone and can be deleted without losing spend. Pure.

A report may go when its proxy has not reported for `stale_after` and none of its entries is for
its budget's current window: closed windows are kept in Budget.status.history (which never goes
down), so deleting the report loses nothing. A report that still counts in a current window stays,
however old, because later reports of other proxies are added to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from spendgate.api import v1alpha1 as api
from spendgate.logic.windows import window_at


def deletable_reports(reports: Mapping[str, api.SpendReportSpec], budgets: Mapping[str, api.Budget],
                      now: datetime, stale_after: timedelta) -> list[str]:
    return sorted(key for key, spec in reports.items()
                  if _silent_since(spec, now - stale_after) and not counts_now(spec, budgets, now))


def _silent_since(spec: api.SpendReportSpec, cutoff: datetime) -> bool:
    try:
        return spec.reportedAt is not None and datetime.fromisoformat(spec.reportedAt) < cutoff
    except ValueError:
        return False  # unreadable: keep it


def counts_now(spec: api.SpendReportSpec, budgets: Mapping[str, api.Budget], now: datetime) -> bool:
    """Whether the report holds spend for some budget's current window."""
    for entry in spec.entries:
        budget = budgets.get(entry.budget)
        if budget is None:
            continue  # a deleted budget's spend counts nowhere
        try:
            current = window_at(budget.spec.window.period, budget.spec.window.timeZone, now).id
        except ValueError:
            return True  # cannot tell: keep it
        if entry.window >= current:
            return True
    return False
