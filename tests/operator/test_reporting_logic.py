"""Which proxies report, and each Budget's Reporting condition, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spendgate.api.v1alpha1 import ConditionStatus, SpendReportSpec
from spendgate.operator.reporting import reporters, reporting_condition

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(seconds=60)


def report(proxy: str, at: str | None, stopped: bool = False) -> SpendReportSpec:
    return SpendReportSpec(proxy=proxy, sequence=1, reportedAt=at, stopped=stopped)


def test_fresh_silent_and_stopped_reports() -> None:
    known = reporters({
        "sg/a": report("a", "2026-11-24T11:59:30Z"),
        "sg/b": report("b", "2026-11-24T11:58:00Z"),  # two minutes: silent
        "sg/c": report("c", "2026-11-24T11:00:00Z", stopped=True),  # said goodbye: expected silence
        "sg/d": report("d", None),  # never wrote a report: nothing to say about it
        "sg/e": report("e", "yesterday"),  # unreadable
    }, NOW, TIMEOUT)

    assert known.fresh == {"sg/a"}
    assert {key: (s.proxy, s.reported_at) for key, s in known.silent.items()} == {
        "sg/b": ("b", "2026-11-24T11:58:00Z")}
    assert known.changes_at == datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC)  # when a turns silent


def test_the_reporting_condition_names_what_is_wrong() -> None:
    known = reporters({"sg/a": report("a", "2026-11-24T11:59:30Z"), "sg/b": report("b", "2026-11-24T11:58:00Z")},
                      NOW, TIMEOUT)
    nobody = reporters({"sg/c": report("c", "2026-11-24T11:00:00Z", stopped=True)}, NOW, TIMEOUT)

    fine = reporting_condition(known, {"sg/a"}, 3, NOW)
    stopped = reporting_condition(known, {"sg/a", "sg/b"}, 3, NOW)
    unreported = reporting_condition(nobody, set(), 3, NOW)

    assert (fine.status, fine.reason) == (ConditionStatus.TRUE, "ProxiesReporting")
    assert (stopped.status, stopped.reason) == (ConditionStatus.FALSE, "ReportsStopped")
    assert "b (last report 2026-11-24T11:58:00Z)" in stopped.message and "over 60s" in stopped.message
    assert (unreported.status, unreported.reason) == (ConditionStatus.FALSE, "NoReportingProxy")
    assert "--report-namespace" in unreported.message
    assert fine.observedGeneration == 3
