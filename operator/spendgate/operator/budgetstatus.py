"""Budget.status as a pure function of (budget, compile errors, reports, previous status, now).

Spend in the current window never goes down: the operator takes the larger of what the status
already says and what the reports add up to, so a restarted operator, a deleted report or a
proxy's pruned entries lose nothing. A window that ends moves into `history` (newest first), and
late reports for a closed window still raise its recorded total.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from spendgate.api import v1alpha1 as api
from spendgate.logic.spend import exact, format_percent, state_for, to_cents
from spendgate.logic.windows import UnknownTimeZone, Window, rfc3339, window_at, window_by_id
from spendgate.operator import alerts
from spendgate.operator.conditions import ready_condition, set_condition, without_condition
from spendgate.operator.reporting import REPORTING, Reporters, reporting_condition
from spendgate.operator.spendindex import SpendIndex
from spendgate.policy.bundle import ThresholdEntry
from spendgate.policy.errors import PolicyError

HISTORY_LENGTH = 12  # the CRD's maxItems for status.history
ALERT_RECORDS = 50  # the CRD's maxItems for status.alerts


def _nothing_published(_: str) -> Decimal:
    return Decimal(0)


@dataclass(frozen=True)
class BudgetInputs:
    budget: api.Budget
    errors: Sequence[PolicyError]
    previous: api.BudgetStatus
    now: datetime
    alert_timeout: timedelta
    reporters: Reporters
    published: Callable[[str], Decimal] = _nothing_published  # window id -> the budget's FleetSpend figure


def budget_status(inputs: BudgetInputs, spend: SpendIndex) -> api.BudgetStatus:
    budget, previous = inputs.budget, inputs.previous
    generation = budget.metadata.generation or 0
    ready = ready_condition(inputs.errors, generation, "Compiled", "in the policy bundle", inputs.now)
    conditions = set_condition(previous.conditions, ready)
    if inputs.errors:  # left out of the bundle, so enforced by nobody: Ready=False says so, Reporting would mislead
        conditions = without_condition(conditions, REPORTING)
    status = api.BudgetStatus(
        observedGeneration=generation,
        conditions=conditions,
        scope=scope_text(budget.spec.scope),
        history=previous.history,
        alerts=previous.alerts,
    )
    try:
        window = window_at(budget.spec.window.period, budget.spec.window.timeZone, inputs.now)
    except UnknownTimeZone:
        return status  # Ready=False says why; there is no window to count in
    return _with_spend(status, inputs, window, spend)


def _with_spend(status: api.BudgetStatus, inputs: BudgetInputs, window: Window, spend: SpendIndex) -> api.BudgetStatus:
    budget, previous, ref = inputs.budget, inputs.previous, inputs.budget.ref()
    folded = spend.fold(ref, window.id)
    spent = max(folded.spent, _carried(previous, window), inputs.published(window.id))
    limit = Decimal(budget.spec.limitUSD)
    thresholds = ThresholdEntry(**budget.spec.thresholds.model_dump())
    state = state_for(spent, limit, thresholds)
    history = _history(budget, previous, window, spend, thresholds)
    records = alerts.expire_stale(previous.alerts, inputs.now, inputs.alert_timeout)
    # A budget that is not in the bundle is not enforced, so it does not page anyone either.
    claim = None if inputs.errors else alerts.new_claim(records, state, window.id)
    if claim is not None:
        records = [*records, *alerts.claim_records(claim, inputs.now)]
    shown = {window.id, *(h.window for h in history if h.window)}
    conditions = status.conditions if inputs.errors else set_condition(status.conditions, reporting_condition(
        inputs.reporters, spend.reporters(ref, window.id), status.observedGeneration, inputs.now))
    return status.model_copy(update={
        "conditions": conditions,
        "spentUSD": exact(spent),
        "spentUSDRounded": to_cents(spent),
        "remainingUSD": exact(limit - spent),
        "percentUsed": format_percent(spent, limit),
        "state": state,
        "window": window.id,
        "windowStart": rfc3339(window.start),
        "windowEnd": rfc3339(window.end),
        "lastReportTime": spend.last_report(ref, window.id),
        "reportingProxies": folded.proxies,
        "history": history,
        "alerts": alerts.keep_recent(records, shown, ALERT_RECORDS),
    })


def scope_text(scope: api.BudgetScope) -> str:
    return scope.kind.value if scope.name is None else f"{scope.kind.value}/{scope.name}"


def _carried(previous: api.BudgetStatus, window: Window) -> Decimal:
    """What the status already counted in this very window (zero after a reset or a new spec)."""
    if previous.window == window.id and previous.windowStart == rfc3339(window.start) and previous.spentUSD:
        return Decimal(previous.spentUSD)
    return Decimal(0)


def _history(budget: api.Budget, previous: api.BudgetStatus, current: Window, spend: SpendIndex,
             thresholds: ThresholdEntry) -> list[api.ClosedWindow]:
    """Closed windows, newest first: the previous status's window once it ended, plus any closed
    window that reports still mention (late reports raise a closed window's total, never lower it)."""
    closed = {h.window or h.windowStart: h for h in previous.history}
    if previous.window and previous.window != current.id and previous.windowStart and previous.windowEnd:
        closed[previous.window] = _closed(previous.window, previous.windowStart, previous.windowEnd,
                                          Decimal(previous.spentUSD or 0), budget, closed.get(previous.window),
                                          thresholds)
    for window_id in spend.windows(budget.ref()):
        window = _window_by_id(budget, window_id)
        if window is None or window.start >= current.start:
            continue  # another period's id, the current window, or a proxy whose clock runs ahead
        reported = spend.fold(budget.ref(), window_id).spent
        closed[window_id] = _closed(window_id, rfc3339(window.start), rfc3339(window.end), reported, budget,
                                    closed.get(window_id), thresholds)
    newest_first = sorted(closed.values(), key=lambda h: h.windowStart, reverse=True)
    return newest_first[:HISTORY_LENGTH]


def _closed(window_id: str, start: str, end: str, spent: Decimal, budget: api.Budget,
            known: api.ClosedWindow | None, thresholds: ThresholdEntry) -> api.ClosedWindow:
    total = max(spent, Decimal(known.spentUSD) if known else Decimal(0))
    peak = state_for(total, Decimal(budget.spec.limitUSD), thresholds)  # spend only grows within a window
    return api.ClosedWindow(window=window_id, windowStart=start, windowEnd=end, spentUSD=exact(total), peakState=peak)


def _window_by_id(budget: api.Budget, window_id: str) -> Window | None:
    try:
        return window_by_id(budget.spec.window.period, budget.spec.window.timeZone, window_id)
    except ValueError:
        return None


def next_change(status: api.BudgetStatus, alert_timeout: timedelta) -> datetime | None:
    """When time alone changes this status: the window's end, or a stale Sending alert record."""
    times = [datetime.fromisoformat(status.windowEnd)] if status.windowEnd else []
    times += [datetime.fromisoformat(r.sentAt) + alert_timeout + timedelta(seconds=1)
              for r in status.alerts if r.outcome == alerts.SENDING]
    return min(times, default=None)
