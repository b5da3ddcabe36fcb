"""Budget enforcement in the proxy: the Admission and the SpendSink around spendgate.logic.enforcement.

Admission (before forwarding): find the caller's budgets, decide from this proxy's view of spend
(spendgate.logic.tracker), and either forward, reroute to a cheaper model, or answer with the 429 that
Claude Code shows at once. An admitted request holds a reservation (an estimate of its cost) until
it settles, so concurrent requests see each other; reservations can only push a budget to
Downgrade, never pause it.

Settle (after the usage is known): the SpendSink journals the real cost, counts it against every
budget the request was charged to, and releases the reservation.

Only POST /v1/messages is budgeted. count_tokens is free (as at Anthropic's own gateway) and
/v1/models costs nothing; other /v1/ routes (batches, files) are forwarded and not budgeted: a
batch's cost is known only when its results are read (docs/proxy.md).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Final

from spendgate.api.v1alpha1 import BudgetState
from spendgate.logic.enforcement import (
    Action,
    BudgetIndex,
    Caller,
    Decision,
    Standing,
    decide,
    describe_decision,
    estimate_input_tokens,
    pause_message,
    repository_required_message,
)
from spendgate.logic.pricing import MILLION, PriceBook
from spendgate.logic.spend import at_least, format_percent
from spendgate.logic.tracker import Charge, Reservation, SpendTracker
from spendgate.logic.windows import utc_now, window_at
from spendgate.policy.bundle import Bundle, SignedBundle
from spendgate.proxy.admission import (
    FORWARD,
    AdmissionRequest,
    Endpoint,
    Estimate,
    Forward,
    Headers,
    Reject,
    Reroute,
)
from spendgate.proxy.live import LiveSpend
from spendgate.proxy.settle import Spend, Start

# Until a developer has this many settled requests, reserve this many output tokens per request.
DEFAULT_OUTPUT_TOKENS: Final = 1_000
MIN_SAMPLES: Final = 20
SAMPLES: Final = 200


class OutputEstimate:
    """A developer's typical output: the 90th percentile of their recent responses.

    Claude Code sends max_tokens 128000 on every turn, so reserving max_tokens would pause people
    who are far under budget; the recent p90 bounds the overshoot without false pauses.
    """

    def __init__(self) -> None:
        self._recent: dict[str, deque[int]] = defaultdict(lambda: deque(maxlen=SAMPLES))

    def tokens(self, developer: str) -> int:
        recent = self._recent.get(developer)
        if recent is None or len(recent) < MIN_SAMPLES:
            return DEFAULT_OUTPUT_TOKENS
        ordered = sorted(recent)
        return ordered[int(len(ordered) * 0.9) - 1]

    def observe(self, developer: str, output_tokens: int) -> None:
        self._recent[developer].append(output_tokens)


class BudgetAdmission:
    """Admission and SpendSink in one: the reservation made at admission is settled here too."""

    def __init__(self, tracker: SpendTracker) -> None:
        self._tracker = tracker
        self._outputs = OutputEstimate()
        self._indexed: tuple[str, BudgetIndex] | None = None

    # Admission -----------------------------------------------------------------------------

    def admit(self, request: AdmissionRequest) -> Forward | Reroute | Reject:
        if request.endpoint is not Endpoint.MESSAGES or request.model is None:
            return FORWARD
        index = self._index(request.bundle)
        identity = request.attribution.identity
        caller = Caller(identity.developer, identity.cost_center, identity.key_name, request.attribution.repo)
        if caller.repository is None:
            requiring = index.requiring_repository(identity.cost_center)
            if requiring is not None:
                return Reject(400, "invalid_request_error", repository_required_message(requiring),
                              f"cost center {requiring} requires the repository tag")
        input_tokens = estimate_input_tokens(request.body_bytes)
        decision = decide(index, caller, request.model, input_tokens, self._tracker, request.now)
        if decision.action is Action.PAUSE:
            return self._reject(decision, index, request)
        estimate = self._estimate(request.prices, decision.model, input_tokens, identity.developer, request)
        hold = self._tracker.reserve([(s.budget.id, s.window.id) for s in decision.standings], estimate.cost)
        headers = usage_headers(decision.fullest)
        if decision.action is Action.REROUTE:
            headers += (("x-spendgate-downgraded-from", request.model),)
            return Reroute(decision.model, describe_decision(decision), headers, hold, estimate)
        return Forward(describe_decision(decision), headers, hold, estimate)

    def _index(self, signed: SignedBundle) -> BudgetIndex:
        """Built once per bundle: the hot path only does dictionary lookups."""
        if self._indexed is None or self._indexed[0] != signed.contentHash:
            self._indexed = (signed.contentHash, BudgetIndex(signed.bundle))
        return self._indexed[1]

    def _estimate(self, prices: PriceBook, model: str, input_tokens: int, developer: str,
                  request: AdmissionRequest) -> Estimate:
        rates = prices.rates(model, request.now.date())
        output_tokens = self._outputs.tokens(developer)
        cost = (input_tokens * rates.input.base + output_tokens * rates.output.base) / MILLION
        return Estimate(cost, input_tokens, output_tokens, rates.model, rates.source)

    def _reject(self, decision: Decision, index: BudgetIndex, request: AdmissionRequest) -> Reject:
        assert decision.deciding is not None  # a pause always has the budget that paused
        standing = decision.deciding.standing
        retry_after = standing.window.seconds_left(request.now)
        headers: Headers = (
            ("x-should-retry", "false"),
            ("retry-after", str(retry_after)),
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", str(int(standing.window.end.timestamp()))),
            ("x-spendgate-budget", standing.budget.id),
        )
        return Reject(429, "billing_error", pause_message(standing, index), describe_decision(decision), headers)

    # SpendSink -----------------------------------------------------------------------------

    def begin(self, start: Start) -> None:
        hold = start.decision.hold
        if isinstance(hold, Reservation):
            self._tracker.begin(hold, start.exchange_id, start.interrupted_line, start.ledger_position)

    def record(self, spend: Spend) -> None:
        hold = spend.decision.hold
        if not isinstance(hold, Reservation):
            return
        if spend.output_tokens is not None and not spend.estimated:
            self._outputs.observe(spend.attribution.identity.developer, spend.output_tokens)
        journal_id = spend.exchange_id if spend.journal else None
        if spend.cost is None:
            self._tracker.release(hold, spend.request_id, journal_id)
        else:
            self._tracker.settle(hold, spend.request_id, spend.cost, journal_id, journal=spend.journal)


def ended_charges(charges: Iterable[Charge], bundle: Bundle, now: datetime) -> set[Charge]:
    """(budget, window) pairs whose window is over, or whose budget is gone from the bundle."""
    budgets = {budget.id: budget for budget in bundle.budgets}
    ended = set()
    for budget_id, window_id in charges:
        budget = budgets.get(budget_id)
        if budget is None or window_at(budget.window.period, budget.window.timeZone, now).id != window_id:
            ended.add((budget_id, window_id))
    return ended


PRUNE_INTERVAL: Final = 600.0


async def prune_forever(tracker: SpendTracker, bundle: Callable[[], Bundle], live: LiveSpend | None) -> None:
    """Keep the journal to the windows that matter: ended ones go once (in a cluster) their final
    value has been reported. Runs at start, then every ten minutes."""
    while True:
        ended = ended_charges(tracker.local_totals(), bundle(), utc_now())
        if live is not None:
            live.prune(ended)
        elif ended:
            tracker.forget(set(tracker.local_totals()) - ended)
        await asyncio.sleep(PRUNE_INTERVAL)


def usage_headers(fullest: Standing | None) -> Headers:
    """How full the caller's fullest budget is, on every answer: Claude Code warns from the
    `anthropic-ratelimit-unified-*` family (as with Anthropic's own gateway); the `x-spendgate-*`
    headers say the same for people and scripts."""
    if fullest is None:
        return ()
    warning = at_least(fullest.state, BudgetState.ALERT)
    utilization = (fullest.spent / fullest.limit).quantize(Decimal("0.0001"))
    return (
        ("anthropic-ratelimit-unified-status", "allowed_warning" if warning else "allowed"),
        ("anthropic-ratelimit-unified-reset", str(int(fullest.window.end.timestamp()))),
        ("anthropic-ratelimit-unified-utilization", str(utilization)),
        ("x-spendgate-budget", fullest.budget.id),
        ("x-spendgate-budget-used", format_percent(fullest.spent, fullest.limit)),
        ("x-spendgate-budget-state", fullest.state.value),
    )
