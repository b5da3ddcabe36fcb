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
from functools import lru_cache
from typing import Final, NamedTuple

from spendgate.api.v1alpha1 import BudgetState
from spendgate.logic.budgetview import BudgetViews, budget_views
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
from spendgate.logic.ratelimit import Admitted
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
from spendgate.proxy.ratelimits import RateLimits
from spendgate.proxy.settle import Spend, Start

# Until a developer has this many settled requests, reserve this many output tokens per request.
DEFAULT_OUTPUT_TOKENS: Final = 1_000
MIN_SAMPLES: Final = 20
SAMPLES: Final = 200


class RecentTokens:
    """A developer's typical count of one kind of token: the 90th percentile of their recent responses.

    Claude Code sends max_tokens 128000 on every turn, so reserving max_tokens would pause people
    who are far under budget; the recent p90 bounds the overshoot without false pauses. Likewise a
    request body counts its cached context, which input-token rate limits do not.
    """

    def __init__(self) -> None:
        self._recent: dict[str, deque[int]] = defaultdict(lambda: deque(maxlen=SAMPLES))

    def tokens(self, developer: str, default: int) -> int:
        recent = self._recent.get(developer)
        if recent is None or len(recent) < MIN_SAMPLES:
            return default
        ordered = sorted(recent)
        return ordered[int(len(ordered) * 0.9) - 1]

    def observe(self, developer: str, tokens: int) -> None:
        self._recent[developer].append(tokens)


class Hold(NamedTuple):
    """What an admitted request holds until it settles: its spend reservation, and what it counted
    against rate limits (None when none binds the caller)."""

    reservation: Reservation
    rate: Admitted | None = None


class BudgetAdmission:
    """Admission and SpendSink in one: the reservation made at admission is settled here too. With
    `rates`, the cost centers' rate limits are checked after the budgets (a paused budget is said so
    first: a rate limit would tell a client to retry what a pause refuses until the reset)."""

    def __init__(self, tracker: SpendTracker, rates: RateLimits | None = None) -> None:
        self._tracker = tracker
        self._rates = rates
        self._outputs = RecentTokens()
        self._inputs = RecentTokens()  # uncached input, as rate limits count it
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
        output_tokens = self._outputs.tokens(identity.developer, DEFAULT_OUTPUT_TOKENS)
        rate = self._rate_limit(request, input_tokens, output_tokens)
        if isinstance(rate, Reject):
            return rate
        estimate = self._estimate(request.prices, decision.model, input_tokens, output_tokens, request)
        hold = Hold(self._tracker.reserve([(s.budget.id, s.window.id) for s in decision.standings], estimate.cost),
                    rate)
        headers = usage_headers(decision.fullest)
        if decision.action is Action.REROUTE:
            headers += (("x-spendgate-downgraded-from", request.model),)
            return Reroute(decision.model, describe_decision(decision), headers, hold, estimate)
        return Forward(describe_decision(decision), headers, hold, estimate)

    def _rate_limit(self, request: AdmissionRequest, input_tokens: int, output_tokens: int) -> Admitted | Reject | None:
        """Count the request against the caller's rate limits: the body's tokens, but no more than the
        developer's recent p90 of uncached input (most of a Claude Code body is cached context)."""
        rates, identity = self._rates, request.attribution.identity
        limits = rates.limits_for(request.bundle, identity) if rates is not None else ()
        if rates is None or not limits:
            return None
        uncached = min(input_tokens, self._inputs.tokens(identity.developer, input_tokens))
        return rates.admit(limits, uncached, output_tokens, request.now)

    def _index(self, signed: SignedBundle) -> BudgetIndex:
        """Built once per bundle: the hot path only does dictionary lookups."""
        if self._indexed is None or self._indexed[0] != signed.contentHash:
            self._indexed = (signed.contentHash, BudgetIndex(signed.bundle))
        return self._indexed[1]

    @staticmethod
    def _estimate(prices: PriceBook, model: str, input_tokens: int, output_tokens: int,
                  request: AdmissionRequest) -> Estimate:
        rates = prices.rates(model, request.now.date())
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
            # With this (and no overage status), Claude Code in gateway mode shows our message as it is
            # instead of "not your usage limit" (docs/proxy.md, "What Claude Code shows").
            ("anthropic-ratelimit-unified-overage-disabled-reason", "org_spend_cap_reached"),
            ("x-spendgate-budget", standing.budget.id),
        )
        return Reject(429, "billing_error", pause_message(standing, index), describe_decision(decision), headers)

    # BudgetReader: the admin port's /budgets and a developer's own -----------------------------

    def all_budgets(self, signed: SignedBundle, now: datetime) -> BudgetViews:
        return budget_views(signed.bundle.budgets, self._tracker.settled, now)

    def budgets_of(self, signed: SignedBundle, caller: Caller, now: datetime) -> BudgetViews:
        return budget_views(self._index(signed).budgets_for(caller), self._tracker.settled, now)

    # SpendSink -----------------------------------------------------------------------------

    def begin(self, start: Start) -> None:
        hold = start.decision.hold
        if isinstance(hold, Hold):
            self._tracker.begin(hold.reservation, start.exchange_id, start.interrupted_line, start.ledger_position)

    def record(self, spend: Spend) -> None:
        hold = spend.decision.hold
        if not isinstance(hold, Hold):
            return
        developer = spend.attribution.identity.developer
        if spend.output_tokens is not None and spend.input_tokens is not None and not spend.estimated:
            self._outputs.observe(developer, spend.output_tokens)
            self._inputs.observe(developer, spend.input_tokens)
        if hold.rate is not None and self._rates is not None:  # nothing billable came back: nothing used
            self._rates.settle(hold.rate, spend.input_tokens or 0, spend.output_tokens or 0)
        journal_id = spend.exchange_id if spend.journal else None
        if spend.cost is None:
            self._tracker.release(hold.reservation, spend.request_id, journal_id)
        else:
            self._tracker.settle(hold.reservation, spend.request_id, spend.cost, journal_id, journal=spend.journal)


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
    """How full the caller's fullest budget is, on every answer, in the `anthropic-ratelimit-unified-*`
    headers of Anthropic's own gateway for a developer's spend cap: Claude Code in gateway mode
    (CLAUDE_CODE_USE_GATEWAY=1, the virtual key as ANTHROPIC_AUTH_TOKEN) shows "You've used 85% of your
    usage credits · resets ..." once a threshold is passed (the `-surpassed-threshold` header) and 70%
    is used; with an API key it reads none of them (docs/proxy.md, "What Claude Code shows"). The
    `x-spendgate-*` headers say the same for people and scripts."""
    if fullest is None:
        return ()
    status = "allowed_warning" if at_least(fullest.state, BudgetState.ALERT) else "allowed"
    reset = str(int(fullest.window.end.timestamp()))
    surpassed = surpassed_threshold(fullest)
    return (
        ("anthropic-ratelimit-unified-status", status),
        ("anthropic-ratelimit-unified-reset", reset),
        ("anthropic-ratelimit-unified-representative-claim", "overage"),
        ("anthropic-ratelimit-unified-overage-status", status),
        ("anthropic-ratelimit-unified-overage-utilization", str((fullest.spent / fullest.limit).quantize(FRACTION))),
        ("anthropic-ratelimit-unified-overage-reset", reset),
        *((("anthropic-ratelimit-unified-overage-surpassed-threshold", surpassed),) if surpassed else ()),
        ("x-spendgate-budget", fullest.budget.id),
        ("x-spendgate-budget-used", format_percent(fullest.spent, fullest.limit)),
        ("x-spendgate-budget-state", fullest.state.value),
    )


FRACTION: Final = Decimal("0.0001")


def surpassed_threshold(standing: Standing) -> str | None:
    """The highest threshold the budget's state has passed, as a fraction of the limit ("0.8")."""
    thresholds, state = standing.budget.thresholds, standing.state
    if state is BudgetState.OK:
        return None
    if state is BudgetState.ALERT:
        return percent_fraction(thresholds.alertPercent)
    if state is BudgetState.DOWNGRADE:
        return percent_fraction(thresholds.downgradePercent)
    return percent_fraction(thresholds.pausePercent)


@lru_cache(maxsize=64)
def percent_fraction(percent: int) -> str:
    return str(Decimal(percent) / 100)
