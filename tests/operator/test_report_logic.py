"""The spend index (operator side) and the report state (proxy side) of the report protocol."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.api.v1alpha1 import Budget, SpendEntry, SpendReportSpec
from spendgate.logic.reportstate import ReportState
from spendgate.logic.spend import fold_reports
from spendgate.operator.housekeeping import deletable_reports
from spendgate.operator.spendindex import SpendIndex

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def report(proxy: str, sequence: int, *entries: tuple[str, str, str], at: str | None = None) -> SpendReportSpec:
    return SpendReportSpec(proxy=proxy, sequence=sequence, reportedAt=at,
                           entries=[SpendEntry(budget=b, window=w, spentUSD=s) for b, w, s in entries])


def test_put_reports_which_budgets_changed() -> None:
    index = SpendIndex()

    assert index.put("ns/a", report("a", 1, ("t/x", "w1", "1"), ("t/y", "w1", "2"))) == {"t/x", "t/y"}
    assert index.put("ns/a", report("a", 2, ("t/x", "w1", "1"), ("t/y", "w1", "3"))) == {"t/y"}
    assert index.put("ns/a", report("a", 3, ("t/x", "w1", "1"))) == {"t/y"}
    assert index.remove("ns/a") == {"t/x"}
    assert index.fold("t/x", "w1").spent == 0


def test_fold_sums_proxies_per_window_and_knows_the_last_report() -> None:
    index = SpendIndex()
    index.put("ns/a", report("a", 1, ("t/x", "w1", "1.5"), ("t/x", "w0", "7"), at="2026-11-24T10:00:00Z"))
    index.put("ns/b", report("b", 4, ("t/x", "w1", "0.25"), at="2026-11-24T11:00:00Z"))

    folded = index.fold("t/x", "w1")

    assert (folded.spent, folded.proxies) == (Decimal("1.75"), 2)
    assert index.windows("t/x") == {"w0", "w1"}
    assert index.last_report("t/x", "w1") == "2026-11-24T11:00:00Z"
    assert index.last_report("t/x", "w9") is None


def test_a_superseded_copy_of_a_proxys_report_stops_counting() -> None:
    index = SpendIndex()
    index.put("old-ns/a", report("a", 5, ("t/x", "w1", "3")))

    changed = index.put("new-ns/a", report("a", 6, ("t/y", "w1", "1")))

    assert changed == {"t/x", "t/y"}
    assert (index.fold("t/x", "w1").spent, index.fold("t/y", "w1").spent) == (0, 1)


def test_report_state_accumulates_and_numbers_its_reports() -> None:
    state = ReportState("proxy-a")
    state.add("t/x", "w1", Decimal("0.1"))
    state.add("t/x", "w1", Decimal("0.2"), requests=2)

    first = state.next_report(NOW)
    state.accepted(first)

    assert [(e.spentUSD, e.requests) for e in first.entries] == [("0.3", 3)]
    assert (first.sequence, first.reportedAt, state.changed) == (1, "2026-11-24T12:00:00Z", False)


def test_resuming_keeps_the_larger_total_per_entry_and_the_stored_sequence() -> None:
    state = ReportState("proxy-a")
    state.add("t/x", "w1", Decimal("4"))  # replayed from the journal, not reported yet
    state.add("t/y", "w1", Decimal("1"))

    state.resume(report("proxy-a", 7, ("t/x", "w1", "2.5"), ("t/y", "w1", "3")))

    assert [(e.budget, e.spentUSD) for e in state.next_report(NOW).entries] == [("t/x", "4"), ("t/y", "3")]
    assert (state.sequence, state.exists, state.changed) == (7, True, True)


def test_forgetting_ended_windows_shrinks_the_report() -> None:
    state = ReportState("proxy-a")
    state.add("t/x", "w0", Decimal(1))
    state.add("t/x", "w1", Decimal(1))
    state.accepted(state.next_report(NOW))

    state.forget(lambda charge: charge[1] == "w0")

    assert [e.window for e in state.next_report(NOW).entries] == ["w1"]
    assert state.changed


def test_only_silent_reports_with_nothing_in_a_current_window_are_deletable() -> None:
    budget = Budget.model_validate({"metadata": {"name": "x", "namespace": "t"},
                                    "spec": {"costCenter": "c", "scope": {"kind": "CostCenter"}, "limitUSD": "1",
                                             "window": {"period": "Monthly", "timeZone": "UTC"}}})
    reports = {
        "ns/closed": report("a", 1, ("t/x", "2026-10", "5"), at="2026-11-01T00:00:00Z"),
        "ns/current": report("b", 1, ("t/x", "2026-11", "5"), at="2026-11-01T00:00:00Z"),
        "ns/recent": report("c", 1, ("t/x", "2026-10", "5"), at="2026-11-24T11:00:00Z"),
        "ns/deleted-budget": report("d", 1, ("t/gone", "2026-11", "5"), at="2026-11-01T00:00:00Z"),
        "ns/never-reported": report("e", 1, ("t/x", "2026-10", "5")),
    }

    assert deletable_reports(reports, {"t/x": budget}, NOW, timedelta(days=1)) == ["ns/closed", "ns/deleted-budget"]


def test_a_report_is_due_when_something_changed_or_the_heartbeat_is() -> None:
    state = ReportState("proxy-a")
    heartbeat = timedelta(seconds=15)
    assert state.due(NOW, heartbeat)  # nothing reported yet: say we are here
    assert not state.due(NOW, None)  # without a heartbeat, only changes are reported

    state.accepted(state.next_report(NOW))
    assert not state.due(NOW + timedelta(seconds=14), heartbeat)
    assert state.due(NOW + timedelta(seconds=15), heartbeat)
    state.add("t/x", "w1", Decimal("0.01"))
    assert state.due(NOW + timedelta(seconds=1), heartbeat)


def test_the_last_report_says_stopped_and_a_restart_says_running_again() -> None:
    state = ReportState("proxy-a")
    state.accepted(state.next_report(NOW))
    state.stop()

    last = state.next_report(NOW)
    assert state.changed and last.stopped

    restarted = ReportState("proxy-a")
    restarted.resume(last)
    assert restarted.changed and not restarted.next_report(NOW).stopped


PROXIES, KEYS = ("a", "b", "c"), ("ns1/a", "ns2/a", "ns1/b", "ns1/c", "ns2/c")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(PROXIES), st.integers(0, 5),
                          st.integers(0, 50), st.booleans()), max_size=30))
def test_the_index_folds_what_folding_every_report_from_scratch_gives(
        steps: list[tuple[str, str, int, int, bool]]) -> None:
    """Whatever order copies of reports are stored and removed in, the index (which rechooses each proxy's
    counting copy incrementally) folds exactly what spend.fold_reports gives over the reports it holds,
    and says every budget whose total moved. (Two copies of one proxy's report with the same sequence are
    a tie either may win: left out.)"""
    index, held = SpendIndex(), {}
    for key, proxy, sequence, cents, removed in steps:
        if any(other != key and (r.proxy, r.sequence) == (proxy, sequence) for other, r in held.items()):
            continue
        before = {budget: index.fold(budget, "w1").spent for budget in ("t/x", "t/y")}
        if removed:
            held.pop(key, None)
            changed = index.remove(key)
        else:
            held[key] = report(proxy, sequence, ("t/x", "w1", str(cents)), ("t/y", "w1", str(sequence)))
            changed = index.put(key, held[key])
        for budget in ("t/x", "t/y"):
            expected = fold_reports(list(held.values()), budget, "w1").spent
            assert index.fold(budget, "w1").spent == expected
            assert expected == before[budget] or budget in changed
