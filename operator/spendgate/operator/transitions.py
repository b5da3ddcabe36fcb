"""Which Kubernetes Events a status change deserves: one per change of state, never per write."""

from __future__ import annotations

from dataclasses import dataclass

from spendgate.api import v1alpha1 as api
from spendgate.operator import alerts
from spendgate.operator.conditions import READY, find


@dataclass(frozen=True)
class EventNote:
    type: str  # Normal or Warning
    reason: str
    message: str


def ready_events(old: list[api.Condition], new: list[api.Condition]) -> list[EventNote]:
    before, after = find(old, READY), find(new, READY)
    if after is None or (before is not None and (before.status, before.reason) == (after.status, after.reason)):
        return []
    if after.status == api.ConditionStatus.TRUE:
        return [EventNote("Normal", "Ready", f"compiled into the policy bundle ({after.message})")]
    return [EventNote("Warning", after.reason, after.message)]


def budget_events(old: api.BudgetStatus, new: api.BudgetStatus) -> list[EventNote]:
    notes = ready_events(old.conditions, new.conditions)
    if old.window and new.window and old.window != new.window:
        notes.append(EventNote("Normal", "WindowReset",
                               f"window {old.window} closed at ${old.spentUSD or 0}; window {new.window} "
                               f"runs until {new.windowEnd}"))
    if new.state is not None and old.state is not None and new.state != old.state:
        notes.append(EventNote("Warning" if new.state != api.BudgetState.OK else "Normal", "StateChanged",
                               f"{old.state.value} -> {new.state.value}: ${new.spentUSD} spent, "
                               f"{new.percentUsed} of the limit"))
    notes.extend(_alert_events(old.alerts, new.alerts))
    return notes


def _alert_events(old: list[api.AlertRecord], new: list[api.AlertRecord]) -> list[EventNote]:
    """One Event per finished claim (the thresholds of one message share their outcome)."""
    before = {(r.window, r.threshold): r.outcome for r in old}
    finished: dict[tuple[str, str], list[str]] = {}
    for record in new:
        if record.outcome != alerts.SENDING and before.get((record.window, record.threshold)) != record.outcome:
            finished.setdefault((record.window, record.outcome), []).append(record.threshold.value)
    notes = []
    for (window, outcome), thresholds in finished.items():
        delivered = outcome in (alerts.DELIVERED, alerts.NO_TARGETS)
        notes.append(EventNote("Normal" if delivered else "Warning", "AlertSent" if delivered else "AlertFailed",
                               f"{', '.join(thresholds)} alert for window {window}: {outcome}"))
    return notes
