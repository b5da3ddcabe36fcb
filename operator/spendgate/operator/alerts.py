"""Alert bookkeeping, pure: which thresholds to claim, and how the claims end.

The record of truth is `Budget.status.alerts`, one AlertRecord per (window, threshold). The
operator claims a threshold by writing a "Sending" record with the Budget's resourceVersion as a
precondition, and sends only if that write succeeded; so two replicas, or a restarted operator,
can never both send. The price is at-most-once delivery: if the operator dies between the claim
and the send, the record turns "Unknown" after a timeout and is not resent (the PrometheusRule on
the operator's metrics is the backstop).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from spendgate.api.v1alpha1 import AlertRecord, BudgetState
from spendgate.logic.spend import SEVERITY
from spendgate.logic.windows import rfc3339

SENDING = "Sending"
DELIVERED = "Delivered"
UNKNOWN = "Unknown: the operator stopped while sending; not resent, so it is never sent twice"
NO_TARGETS = "Skipped: the CostCenter has no alert targets"
THRESHOLDS = (BudgetState.ALERT, BudgetState.DOWNGRADE, BudgetState.PAUSED)


@dataclass(frozen=True)
class Claim:
    """Thresholds this operator claimed in one window, to be notified in one message."""

    window: str
    thresholds: tuple[BudgetState, ...]

    @property
    def highest(self) -> BudgetState:
        return max(self.thresholds, key=SEVERITY.__getitem__)


def crossed(state: BudgetState) -> tuple[BudgetState, ...]:
    """Every threshold at or below `state`: jumping from Ok to Paused crosses all three."""
    return tuple(t for t in THRESHOLDS if SEVERITY[t] <= SEVERITY[state])


def new_claim(records: Sequence[AlertRecord], state: BudgetState, window: str) -> Claim | None:
    """The thresholds crossed in `window` that no record mentions yet."""
    recorded = {r.threshold for r in records if r.window == window}
    fresh = tuple(t for t in crossed(state) if t not in recorded)
    return Claim(window, fresh) if fresh else None


def claimed(before: Sequence[AlertRecord], after: Sequence[AlertRecord]) -> Claim | None:
    """The claim a status change made: Sending records that were not there before."""
    known = {(r.window, r.threshold) for r in before}
    fresh = [r for r in after if r.outcome == SENDING and (r.window, r.threshold) not in known]
    thresholds = sorted((r.threshold for r in fresh), key=SEVERITY.__getitem__)
    return Claim(fresh[0].window, tuple(thresholds)) if fresh else None


def claim_records(claim: Claim, now: datetime) -> list[AlertRecord]:
    return [AlertRecord(window=claim.window, threshold=t, sentAt=rfc3339(now), outcome=SENDING)
            for t in claim.thresholds]


def with_outcome(records: Sequence[AlertRecord], claim: Claim, outcome: str) -> list[AlertRecord]:
    """The records of `claim` that are still Sending get their outcome; the rest are untouched."""
    return [r.model_copy(update={"outcome": outcome})
            if r.window == claim.window and r.threshold in claim.thresholds and r.outcome == SENDING else r
            for r in records]


def expire_stale(records: Sequence[AlertRecord], now: datetime, timeout: timedelta) -> list[AlertRecord]:
    """Sending records older than any delivery can take belong to a sender that died."""
    deadline = rfc3339(now - timeout)
    return [r.model_copy(update={"outcome": UNKNOWN}) if r.outcome == SENDING and r.sentAt < deadline else r
            for r in records]


def keep_recent(records: Iterable[AlertRecord], windows: set[str], limit: int) -> list[AlertRecord]:
    """Records of the windows still shown in status, newest first, at most `limit`."""
    kept = [r for r in records if r.window in windows]
    kept.sort(key=lambda r: (r.window, SEVERITY[r.threshold]), reverse=True)
    return kept[:limit]


@dataclass(frozen=True)
class Delivery:
    """One target's result. `detail` never contains the target's URL or key."""

    target: str
    delivered: bool
    detail: str


def outcome_text(deliveries: Sequence[Delivery]) -> str:
    """"Delivered" when every target got it, else "Failed: ..." naming each failed target."""
    if not deliveries:
        return NO_TARGETS
    failed = [d for d in deliveries if not d.delivered]
    if not failed:
        return DELIVERED
    text = "Failed: " + "; ".join(f"{d.target}: {d.detail}" for d in failed)
    delivered = [d.target for d in deliveries if d.delivered]
    return text + (f"; delivered to {', '.join(delivered)}" if delivered else "")
