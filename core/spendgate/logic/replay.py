"""Replaying traffic through a policy: the proxy's decisions, offline.

A PolicyRun is one policy bundle's view of a stream of requests in time order. It decides each
request with the proxy's own pure code (spendgate.logic.enforcement.decide over a BudgetIndex:
covering budgets, windows in their time zones, thresholds, cascades, routing rules, DryRun
budgets) and counts spend per (budget, window) the way a proxy does: settled spend only, charged
to every budget that covered the request, at the moment the request settled (its arrival plus its
latency), so a request that arrives while another is still running does not see that one's cost.

What it does not model: in-flight reservations (a proxy under concurrent load may step a request
down a little earlier than a replay says, never pause it earlier) and the delay with which proxies
in a fleet see each other's spend (about a second). Sequential traffic replays exactly; the tests
replay the real proxy's ledger and reproduce every decision it recorded.

The synthetic ledger (spendgate.logic.synth) drives a PolicyRun too, so its decisions are the
ones the proxy would have made.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from spendgate.api.v1alpha1 import BudgetState
from spendgate.logic.enforcement import BudgetIndex, Caller, Decision, decide
from spendgate.logic.pricing import REFUSAL_NOT_BILLED, PriceBook, Tokens
from spendgate.logic.spend import at_least
from spendgate.policy.bundle import Bundle

ZERO: Final = Decimal(0)
THRESHOLD_STATES: Final = (BudgetState.ALERT, BudgetState.DOWNGRADE, BudgetState.PAUSED)
Charge = tuple[str, str]  # (budget id, window id)


@dataclass
class WindowSpend:
    """One budget's spend in one window, as the policy run counted it."""

    spent: Decimal = ZERO
    requests: int = 0
    peak: BudgetState = BudgetState.OK
    by_day: dict[str, Decimal] = field(default_factory=dict)  # UTC date -> spend settled that day


class PolicyRun:
    """One bundle's decisions and spend over replayed traffic. Implements enforcement's SpendView."""

    def __init__(self, bundle: Bundle) -> None:
        self.index = BudgetIndex(bundle)
        self._thresholds = {budget.id: self.index.limits(budget)[1] for budget in bundle.budgets}
        self.windows: dict[Charge, WindowSpend] = {}
        self.first_crossed: dict[tuple[str, BudgetState], datetime] = {}  # (budget id, threshold) -> when
        # (settles at, sequence, charges, cost): a heap of plain tuples, compared in C
        self._pending: list[tuple[datetime, int, tuple[Charge, ...], Decimal]] = []
        self._sequence = 0

    # SpendView ---------------------------------------------------------------------------------

    def settled(self, budget_id: str, window_id: str) -> Decimal:
        found = self.windows.get((budget_id, window_id))
        return found.spent if found is not None else ZERO

    def in_flight(self, budget_id: str, window_id: str) -> Decimal:
        return ZERO

    # the replay --------------------------------------------------------------------------------

    def admit(self, caller: Caller, model: str, input_tokens: int, now: datetime) -> Decision:
        """What the proxy would decide for a request arriving at `now` (aware UTC)."""
        self.settle_until(now)
        return decide(self.index, caller, model, input_tokens, self, now)

    def charge(self, decision: Decision, cost: Decimal, settles_at: datetime) -> None:
        """An admitted request's cost, counted against every budget that covered it when it settles."""
        charges = tuple([(s.budget.id, s.window.id) for s in decision.standings])
        if charges:
            self._sequence += 1
            heapq.heappush(self._pending, (settles_at, self._sequence, charges, cost))

    def settle_until(self, now: datetime) -> None:
        pending = self._pending
        while pending and pending[0][0] <= now:
            self._settle(*heapq.heappop(pending))

    def finish(self) -> None:
        while self._pending:
            self._settle(*heapq.heappop(self._pending))

    def _settle(self, settles_at: datetime, sequence: int, charges: tuple[Charge, ...], cost: Decimal) -> None:
        day = settles_at.date().isoformat()
        for charge in charges:
            window = self.windows.get(charge)
            if window is None:
                window = self.windows[charge] = WindowSpend()
            window.spent = spent = window.spent + cost
            window.requests += 1
            window.by_day[day] = window.by_day.get(day, ZERO) + cost
            if cost:
                self._crossings(charge[0], spent, window, settles_at)

    def _crossings(self, budget_id: str, spent: Decimal, window: WindowSpend, when: datetime) -> None:
        state = self._thresholds[budget_id].state(spent)
        if at_least(window.peak, state):
            return
        window.peak = state
        for threshold in THRESHOLD_STATES:
            if at_least(state, threshold):
                self.first_crossed.setdefault((budget_id, threshold), when)


def settle_time(arrival: datetime, latency_ms: float | None) -> datetime:
    return arrival + timedelta(milliseconds=latency_ms or 0)


def repriced(tokens: Tokens, model: str, at: datetime, prices: PriceBook, flags: tuple[str, ...] = ()) -> Decimal:
    """What recorded usage costs when another model serves it (a refusal before output stays free)."""
    if REFUSAL_NOT_BILLED in flags:
        return ZERO
    return tokens.cost(prices.rates(model, at.date()))


def windows_of(run: PolicyRun, budget_id: str) -> Iterator[tuple[str, WindowSpend]]:
    """A budget's windows in order of their ids (ids sort chronologically)."""
    for (budget, window_id), spend in sorted(run.windows.items()):
        if budget == budget_id:
            yield window_id, spend
