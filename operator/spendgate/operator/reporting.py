"""Which proxies report spend, and the `Reporting` condition it gives each Budget. Pure.

A running proxy writes its SpendReport at least once per heartbeat (15 s, even when nothing
changed) and marks its last report `stopped` when it shuts down cleanly. So a report that has not
been written for `timeout` (the operator's --report-timeout, 60 s) and did not say `stopped`
belongs to a proxy that died, hangs, or cannot reach the API server; while it holds spend for a
budget's current window, what it served since its last report is missing from that budget's
status. And a cluster in which no report is fresh has Budgets that no reporting proxy enforces:
each proxy, if there is one, pauses on its own spend only (the misconfiguration that let three
proxies overshoot a budget by 184%).

Reasons of the `Reporting` condition:
- True `ProxiesReporting`: at least one proxy reports, and every proxy that counts in this window does.
- False `ReportsStopped`: a proxy that counts in this window went silent without stopping (named).
- False `NoReportingProxy`: no proxy has reported within the timeout.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from spendgate.api import v1alpha1 as api
from spendgate.logic.windows import rfc3339

REPORTING = "Reporting"
PROXIES_REPORTING = "ProxiesReporting"
REPORTS_STOPPED = "ReportsStopped"
NO_REPORTING_PROXY = "NoReportingProxy"


@dataclass(frozen=True)
class Silent:
    proxy: str
    reported_at: str


@dataclass(frozen=True)
class Reporters:
    """The proxies' reports as of one instant, by SpendReport key (namespace/name)."""

    fresh: frozenset[str]  # written within the timeout by a running proxy
    silent: Mapping[str, Silent]  # not written within the timeout, and the proxy did not stop
    timeout: timedelta
    changes_at: datetime | None  # when time alone turns the next fresh report silent

    @property
    def summary(self) -> tuple[frozenset[str], frozenset[str]]:
        """What the conditions depend on: a heartbeat that changes neither set changes no status."""
        return self.fresh, frozenset(self.silent)


def reporters(reports: Mapping[str, api.SpendReportSpec], now: datetime, timeout: timedelta) -> Reporters:
    fresh: set[str] = set()
    silent: dict[str, Silent] = {}
    expiries: list[datetime] = []
    for key, spec in reports.items():
        reported_at = _instant(spec.reportedAt)
        if spec.stopped or reported_at is None:
            continue
        if now - reported_at <= timeout:
            fresh.add(key)
            expiries.append(reported_at + timeout)
        else:
            silent[key] = Silent(spec.proxy, str(spec.reportedAt))
    return Reporters(frozenset(fresh), silent, timeout, min(expiries, default=None))


def reporting_condition(known: Reporters, counting: Collection[str], generation: int, now: datetime
                        ) -> api.Condition:
    """The condition of a budget whose current window the reports `counting` hold spend for."""
    seconds = int(known.timeout.total_seconds())
    silent = [known.silent[key] for key in sorted(counting) if key in known.silent]
    if silent:
        who = ", ".join(f"{s.proxy} (last report {s.reported_at})" for s in silent)
        return _condition(api.ConditionStatus.FALSE, REPORTS_STOPPED,
                          f"no report for over {seconds}s and no clean stop from {who}: the spend served since "
                          f"then is missing from this status until the proxy reports again", generation, now)
    if not known.fresh:
        return _condition(api.ConditionStatus.FALSE, NO_REPORTING_PROXY,
                          f"no proxy has reported spend in the last {seconds}s: this budget is enforced by no "
                          f"reporting proxy (each proxy, if any, pauses on its own spend only). Proxies report to "
                          f"the namespace named by the bundle ConfigMap's report-namespace key or --report-namespace",
                          generation, now)
    return _condition(api.ConditionStatus.TRUE, PROXIES_REPORTING, "the proxies' spend reports arrive", generation,
                      now)


def _condition(status: api.ConditionStatus, reason: str, message: str, generation: int, now: datetime
               ) -> api.Condition:
    return api.Condition(type=REPORTING, status=status, reason=reason, message=message,
                         observedGeneration=generation, lastTransitionTime=rfc3339(now))


def _instant(text: str | None) -> datetime | None:
    try:
        instant = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return instant if instant is not None and instant.tzinfo is not None else None
