"""Budget enforcement as a pure function: (bundle, caller, request, spend, now) -> Decision.

The proxy calls `decide` before forwarding; a policy dry run replays recorded requests through
the same function. Nothing here does I/O or reads a clock.

Rules, in the order they apply:
- Every Budget that covers the caller counts: the cost center's and its ancestors' CostCenter
  budgets, and the Developer / Repository / VirtualKey budgets of those cost centers that match.
- A budget's state comes from its *settled* spend (priced responses) for Paused, and from settled
  plus in-flight reservations for Downgrade. So concurrent requests can push a wallet to a cheaper
  model early, but only money already spent can pause anyone: no false pauses by construction.
- Paused (any Enforce budget): refuse. Otherwise each Enforce budget proposes a model (its
  RoutingPolicy's first matching rule, and at least one step down the cascade at Downgrade); the
  proposal that steps furthest down wins. A rule never upgrades a request.
- DryRun budgets run the same logic; what they would have done is recorded, never applied.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple, Protocol

from spendgate.api.v1alpha1 import BudgetState, Enforcement, Period, ScopeKind
from spendgate.logic.repository import normalize_repository
from spendgate.logic.spend import DOWNGRADE, PAUSED, Thresholds, at_least, format_money, format_percent, most_severe
from spendgate.logic.windows import Window, window_at, zone
from spendgate.policy.bundle import BudgetEntry, Bundle, CostCenterEntry, RoutingPolicyEntry, RuleEntry

# The built-in behaviour of the Downgrade state when a policy has no rule for it.
STEP_DOWN_AT_DOWNGRADE = RuleEntry(name="downgrade-state", stateAtLeast=BudgetState.DOWNGRADE, stepDown=1)
STEP_DOWN_RULES = (STEP_DOWN_AT_DOWNGRADE,)
MODEL_FAMILIES = ("fable", "mythos", "opus", "sonnet", "haiku")


class Action(StrEnum):
    FORWARD = "forward"
    REROUTE = "reroute"  # forward with a cheaper model
    PAUSE = "pause"  # refuse with a 429


# Members as plain names for per-request code (see spendgate.logic.spend: enum attributes are slow to read).
FORWARD, REROUTE, PAUSE = Action.FORWARD, Action.REROUTE, Action.PAUSE
ENFORCE = Enforcement.ENFORCE


class Caller(NamedTuple):
    """Who is asking: from the virtual key, never from client headers (the repository is a tag,
    in the normal form of spendgate.logic.repository)."""

    developer: str
    cost_center: str
    key_name: str
    repository: str | None = None


class SpendView(Protocol):
    """What a proxy knows of a budget's spend in one window."""

    def settled(self, budget_id: str, window_id: str) -> Decimal: ...

    def in_flight(self, budget_id: str, window_id: str) -> Decimal: ...


# Caller, Standing, Proposal and Decision are named tuples: immutable, and built several times faster than
# frozen dataclasses (each request builds a few; a dry run builds them twice for every recorded request).


class Standing(NamedTuple):
    """One budget's position for this request."""

    budget: BudgetEntry
    window: Window
    spent: Decimal  # settled
    in_flight: Decimal
    state: BudgetState
    limit: Decimal

    @property
    def remaining(self) -> Decimal:
        return self.limit - self.spent - self.in_flight

    @property
    def enforced(self) -> bool:
        return self.budget.enforcement is ENFORCE


class Proposal(NamedTuple):
    """What one budget would do with the request."""

    standing: Standing
    action: Action
    model: str
    steps: int = 0  # how far down its cascade; the proposal that goes furthest wins
    rule: str | None = None


class Decision(NamedTuple):
    action: Action
    model: str  # the model to forward (the requested one unless rerouted)
    standings: Sequence[Standing] = ()
    deciding: Proposal | None = None  # the enforced proposal that chose the action
    dry_run: Sequence[Proposal] = ()  # DryRun budgets that would have acted

    @property
    def fullest(self) -> Standing | None:
        """The standing closest to its pause threshold, for usage headers."""
        return max(self.standings, key=lambda s: s.spent / s.limit, default=None)


class BudgetIndex:
    """A bundle arranged for lookups on the hot path (built once per bundle): the budgets covering
    each caller, each budget's limit and threshold amounts, and its current window (recomputed
    only when the window ends)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.cost_centers: dict[str, CostCenterEntry] = {c.name: c for c in bundle.costCenters}
        self.policies: dict[str, RoutingPolicyEntry] = {p.id: p for p in bundle.routingPolicies}
        self._by_scope: dict[tuple[ScopeKind, str | None], list[BudgetEntry]] = defaultdict(list)
        self._limits: dict[str, tuple[Decimal, Thresholds]] = {}
        self._windows: dict[tuple[Period, str], Window] = {}
        # By (developer, cost center, key): from the bundle's keys, so bounded. The repository is a
        # client's tag, so repository budgets are looked up per request, never cached per tag.
        self._covering: dict[tuple[str, str, str], list[BudgetEntry]] = {}
        self._routing: dict[str, tuple[list[str], list[RuleEntry]]] = {}
        for budget in bundle.budgets:
            self._by_scope[(budget.scope.kind, _scope_key(budget))].append(budget)
            limit = Decimal(budget.limitUSD)
            self._limits[budget.id] = (limit, Thresholds.of(limit, budget.thresholds))
            self._routing[budget.id] = self._cascade_of(budget)

    def chain(self, cost_center: str) -> tuple[str, ...]:
        """The cost center and its ancestors; a request is charged to all of them."""
        entry = self.cost_centers.get(cost_center)
        return (cost_center, *entry.ancestors) if entry else (cost_center,)

    def budgets_for(self, caller: Caller) -> list[BudgetEntry]:
        identity = (caller.developer, caller.cost_center, caller.key_name)
        found = self._covering.get(identity)
        if found is None:
            found = self._covering[identity] = self._find_budgets(caller)
        if caller.repository is None:
            return found
        by_repository = self._by_scope.get((ScopeKind.REPOSITORY, caller.repository))
        if not by_repository:
            return found
        chain = self.chain(caller.cost_center)
        return found + [b for b in by_repository if b.costCenter in chain]

    def _find_budgets(self, caller: Caller) -> list[BudgetEntry]:
        """The budgets that cover the caller whatever repository it works in."""
        chain = self.chain(caller.cost_center)
        found = [b for cc in chain for b in self._by_scope.get((ScopeKind.COST_CENTER, cc), [])]
        for kind, name in ((ScopeKind.DEVELOPER, caller.developer), (ScopeKind.VIRTUAL_KEY, caller.key_name)):
            found.extend(b for b in self._by_scope.get((kind, name), []) if b.costCenter in chain)
        return found

    def requiring_repository(self, cost_center: str) -> str | None:
        """The cost center (this one or an ancestor) that requires the repository tag, if any."""
        return next((name for name in self.chain(cost_center)
                     if (entry := self.cost_centers.get(name)) is not None and entry.requireRepositoryTag), None)

    def cascade_for(self, budget: BudgetEntry) -> tuple[list[str], list[RuleEntry]]:
        return self._routing.get(budget.id) or self._cascade_of(budget)

    def _cascade_of(self, budget: BudgetEntry) -> tuple[list[str], list[RuleEntry]]:
        policy = self.policies.get(budget.routingPolicy) if budget.routingPolicy else None
        if policy is None:
            return list(self.bundle.defaultCascade), []
        return policy.cascade, policy.rules

    def limits(self, budget: BudgetEntry) -> tuple[Decimal, Thresholds]:
        return self._limits[budget.id]

    def window(self, budget: BudgetEntry, now: datetime) -> Window:
        key = (budget.window.period, budget.window.timeZone)
        window = self._windows.get(key)
        if window is None or not window.start <= now < window.end:
            window = self._windows[key] = window_at(budget.window.period, budget.window.timeZone, now)
        return window


def _scope_key(budget: BudgetEntry) -> str | None:
    if budget.scope.kind is ScopeKind.COST_CENTER:
        return budget.costCenter
    if budget.scope.kind is ScopeKind.REPOSITORY and budget.scope.name is not None:
        return normalize_repository(budget.scope.name)
    return budget.scope.name


def standing(index: BudgetIndex, budget: BudgetEntry, spend: SpendView, now: datetime) -> Standing:
    window = index.window(budget, now)
    settled = spend.settled(budget.id, window.id)
    in_flight = spend.in_flight(budget.id, window.id)
    limit, thresholds = index.limits(budget)
    state = thresholds.state(settled)
    if in_flight and state is not PAUSED:  # reservations may push towards Downgrade, never Paused
        projected = thresholds.state(settled + in_flight)
        state = most_severe([state, DOWNGRADE if projected is PAUSED else projected])
    return Standing(budget, window, settled, in_flight, state, limit)


def decide(
    index: BudgetIndex, caller: Caller, requested_model: str, input_tokens: int, spend: SpendView, now: datetime
) -> Decision:
    budgets = index.budgets_for(caller)
    if not budgets:  # nothing covers the caller: nothing to decide
        return Decision(FORWARD, requested_model)
    standings = [standing(index, budget, spend, now) for budget in budgets]
    enforced: list[Proposal] = []
    dry_run: list[Proposal] = []
    for position in standings:
        proposal = propose(index, position, requested_model, input_tokens)
        if position.enforced:
            enforced.append(proposal)
        elif proposal.action is not FORWARD:
            dry_run.append(proposal)
    deciding = _strongest(enforced)
    if deciding is None or deciding.action is FORWARD:
        return Decision(FORWARD, requested_model, standings, deciding, dry_run)
    return Decision(deciding.action, deciding.model, standings, deciding, dry_run)


def _strongest(proposals: Sequence[Proposal]) -> Proposal | None:
    if len(proposals) < 2:  # the usual case: one enforced budget, or none
        return proposals[0] if proposals else None
    paused = [p for p in proposals if p.action is PAUSE]
    if paused:
        return max(paused, key=lambda p: p.standing.spent / p.standing.limit)
    return max(proposals, key=lambda p: p.steps, default=None)


def propose(index: BudgetIndex, standing: Standing, requested_model: str, input_tokens: int) -> Proposal:
    if standing.state is PAUSED:
        return Proposal(standing, PAUSE, requested_model)
    cascade, rules = index.cascade_for(standing.budget)
    if not rules and not at_least(standing.state, DOWNGRADE):
        return Proposal(standing, FORWARD, requested_model)  # nothing can route it: the common case
    position = cascade_position(cascade, requested_model)
    if position is None:  # a model the cascade cannot place is forwarded as asked
        return Proposal(standing, FORWARD, requested_model)
    best = Proposal(standing, FORWARD, requested_model)
    for rule in (_first_match(rules, standing, input_tokens), _first_match(STEP_DOWN_RULES, standing, 0)):
        target = _target(rule, cascade, position) if rule else position
        if rule and target - position > best.steps:
            best = Proposal(standing, REROUTE, cascade[target], target - position, rule.name)
    return best


def _first_match(rules: Sequence[RuleEntry], standing: Standing, input_tokens: int) -> RuleEntry | None:
    for rule in rules:
        if _matches(rule, standing, input_tokens):
            return rule
    return None


def _matches(rule: RuleEntry, standing: Standing, input_tokens: int) -> bool:
    if rule.stateAtLeast is not None and not at_least(standing.state, rule.stateAtLeast):
        return False
    if rule.remainingUSDBelow is not None and not standing.remaining < dollars(rule.remainingUSDBelow):
        return False
    return rule.inputTokensBelow is None or input_tokens < rule.inputTokensBelow


@lru_cache(maxsize=256)
def dollars(amount: str) -> Decimal:
    """A policy's dollar amount as a Decimal, parsed once (rules are checked on every request)."""
    return Decimal(amount)


def _target(rule: RuleEntry, cascade: list[str], position: int) -> int:
    if rule.useModel is not None:
        return cascade.index(rule.useModel) if rule.useModel in cascade else position
    return min(position + (rule.stepDown or 0), len(cascade) - 1)


def cascade_position(cascade: list[str], model: str) -> int | None:
    """Where a model stands in a cascade: exactly, or by family (claude-opus-4-8 ranks as Opus)."""
    if model in cascade:
        return cascade.index(model)
    family = next((f for f in MODEL_FAMILIES if f in model), None)
    if family is None:
        return None
    return next((i for i, m in enumerate(cascade) if family in m), None)


def describe_decision(decision: Decision) -> str:
    """The ledger's account of a decision (its `decision.reason`): which budget decided, and what dry
    runs would have done. A dry run compares replayed decisions to recorded ones by this text."""
    parts = []
    if decision.deciding is not None and decision.action is not FORWARD:
        parts.append(_describe(decision.deciding))
    parts.extend(f"dry-run {_describe(proposal)}" for proposal in decision.dry_run)
    return "; ".join(parts)


def _describe(proposal: Proposal) -> str:
    standing = proposal.standing
    what = {PAUSE: "pause", REROUTE: f"reroute to {proposal.model}", FORWARD: "forward"}
    rule = f" by rule {proposal.rule}" if proposal.rule else ""
    return (f"{what[proposal.action]}{rule}: {standing.budget.id} {standing.state.value} "
            f"{format_percent(standing.spent, standing.limit)} of ${standing.budget.limitUSD}")


PERIOD_WORDS = {"Daily": "daily", "Weekly": "weekly", "Monthly": "monthly"}


def pause_message(standing: Standing, index: BudgetIndex) -> str:
    """What a developer reads in Claude Code's terminal; the prefix is Anthropic's gateway wording."""
    budget = standing.budget
    tz = zone(budget.window.timeZone)
    resets = standing.window.end.astimezone(tz).strftime("%Y-%m-%d %H:%M ") + budget.window.timeZone
    cost_center = index.cost_centers.get(budget.costCenter)
    alerted = ", ".join(cost_center.alertTargets) if cost_center and cost_center.alertTargets else "nobody"
    return (
        f"spend limit reached ({PERIOD_WORDS[budget.window.period]}; resets {resets}) · "
        f"Budget {budget.id} ({_scope_words(budget)}): {format_money(standing.spent)} of "
        f"{format_money(standing.limit)} spent ({format_percent(standing.spent, standing.limit)}). "
        f"Alerted: {alerted}. Ask the owners of cost center {budget.costCenter} to raise the limit."
    )


def _scope_words(budget: BudgetEntry) -> str:
    if budget.scope.kind is ScopeKind.COST_CENTER:
        return f"cost center {budget.costCenter}"
    return f"{budget.scope.kind.value.lower().replace('virtualkey', 'key')} {budget.scope.name}"


def repository_required_message(cost_center: str) -> str:
    """What a developer reads when their cost center requires the repository tag and it is missing."""
    return (f"cost center {cost_center} requires the repository tag on every request: add "
            "\"ANTHROPIC_CUSTOM_HEADERS\": \"x-spendgate-repo: <owner>/<repository>\" to \"env\" in the "
            "project's .claude/settings.json (or export ANTHROPIC_CUSTOM_HEADERS in the shell)")


def estimate_input_tokens(body_size: int) -> int:
    """Cheap estimate from the request body's size: about 4 bytes of JSON per token.

    JSON keys, escapes and tool schemas inflate the bytes a little, so this errs low for prose and
    high for code; routing thresholds (e.g. 10K tokens) only need the order of magnitude.
    """
    return body_size // 4
