"""A dry run: recorded traffic replayed through the base and the head policy, and what changed.

Each ledger record that admission decided on (a /v1/messages request from a known key) is replayed
in time order through a PolicyRun per side (spendgate.logic.replay: the proxy's own decide()).
Its cost on a side is the served model's: the recorded cost when that side forwards the model the
recording did, the recorded tokens re-priced (spendgate.logic.pricing) when it serves another; a
request the recording refused (paused) but a side admits has no recorded tokens, so it is
estimated from the same session's previous answered turn (else the developer's) and reported as
estimated. The base side is also checked against the decisions the ledger recorded: replaying the
policy that made a ledger reproduces its decisions (reason text included).

The report counts, per budget, developer and session: requests newly downgraded, no longer
downgraded, newly paused, no longer paused; the first time each budget crosses each threshold;
spend per window; and the dollar difference between the sides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final, NamedTuple, TypeVar

from spendgate.api.v1alpha1 import BudgetState, Period
from spendgate.logic.enforcement import (
    FORWARD,
    PAUSE,
    REROUTE,
    Action,
    Caller,
    Decision,
    describe_decision,
    estimate_input_tokens,
)
from spendgate.logic.ledgerrecord import LedgerRecord
from spendgate.logic.pricing import PriceBook, Tokens
from spendgate.logic.replay import (
    THRESHOLD_STATES,
    ZERO,
    PolicyRun,
    WindowSpend,
    repriced,
    settle_time,
    windows_of,
)
from spendgate.policy.bundle import BudgetEntry, Bundle

# A request whose size is unknown (a v1 line the gateway refused) is not small: no inputTokensBelow rule matches.
UNKNOWN_INPUT_TOKENS: Final = 2**62
RECORDED_ACTIONS: Final = {FORWARD: "forward", REROUTE: "reroute", PAUSE: "reject"}
SHOWN_MISMATCHES: Final = 5
K = TypeVar("K")


class Replayed(NamedTuple):
    """One request on one side (a named tuple: two are made per replayed request)."""

    action: Action
    model: str | None  # served; None when paused
    steps: int  # how far down its cascade the deciding budget sent it
    budget: str | None  # the budget that rerouted or paused it
    cost: Decimal | None  # None: nothing billable (paused, or no usage came back)
    estimated: bool = False


@dataclass
class Impact:
    """Counts of changed decisions and the cost on each side, for a budget, developer or session."""

    requests: int = 0
    newly_downgraded: int = 0
    no_longer_downgraded: int = 0
    newly_paused: int = 0
    no_longer_paused: int = 0
    base_cost: Decimal = ZERO
    head_cost: Decimal = ZERO

    @property
    def changed(self) -> int:
        return self.newly_downgraded + self.no_longer_downgraded + self.newly_paused + self.no_longer_paused

    def count(self, change: str | None, base_cost: Decimal, head_cost: Decimal) -> None:
        """One more request: its cost on each side, and the counter its change adds to (see _change)."""
        self.requests += 1
        self.base_cost += base_cost
        self.head_cost += head_cost
        if change is not None:
            setattr(self, change, getattr(self, change) + 1)

    @property
    def difference(self) -> Decimal:
        return self.head_cost - self.base_cost


@dataclass
class SideTotals:
    cost: Decimal = ZERO
    estimated_cost: Decimal = ZERO  # part of `cost` estimated for requests the recording refused
    estimated_requests: int = 0
    unpriced_requests: int = 0  # admitted here, refused in the recording, and nothing to estimate from
    downgraded: int = 0
    paused: int = 0
    paused_developers: set[str] = field(default_factory=set)
    by_budget: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    dry_run: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))


@dataclass(frozen=True)
class Mismatch:
    request_id: str
    time: datetime
    recorded: str
    replayed: str


@dataclass
class BudgetWindow:
    window: str
    base_spent: Decimal
    head_spent: Decimal
    base_peak: BudgetState
    head_peak: BudgetState
    base_by_day: dict[str, Decimal]
    head_by_day: dict[str, Decimal]


@dataclass
class BudgetReport:
    id: str
    base: BudgetEntry | None
    head: BudgetEntry | None
    base_spent: Decimal
    head_spent: Decimal
    base_actions: dict[str, int]  # what it decided: reroute / pause counts
    head_actions: dict[str, int]
    base_dry_run: dict[str, int]  # what it would have done in DryRun
    head_dry_run: dict[str, int]
    base_crossed: dict[BudgetState, datetime]
    head_crossed: dict[BudgetState, datetime]
    windows: list[BudgetWindow]

    @property
    def changed(self) -> bool:
        return (self.base != self.head or self.base_actions != self.head_actions
                or self.base_crossed != self.head_crossed or self.base_spent != self.head_spent)


@dataclass
class DryRunReport:
    first: datetime | None
    last: datetime | None
    ledger_requests: int
    replayed: int
    changes: Impact
    base: SideTotals
    head: SideTotals
    budgets: list[BudgetReport]
    developers: dict[str, Impact]
    sessions: dict[tuple[str, str], Impact]
    base_matches: int
    mismatches: int
    mismatch_examples: list[Mismatch]
    newly_paused_developers: set[str]

    def top_developers(self, count: int) -> list[tuple[str, Impact]]:
        return _top(self.developers, count)

    def top_sessions(self, count: int) -> list[tuple[tuple[str, str], Impact]]:
        return _top(self.sessions, count)


def _top(impacts: dict[K, Impact], count: int) -> list[tuple[K, Impact]]:
    changed = [(key, impact) for key, impact in impacts.items() if impact.changed or impact.difference]
    return sorted(changed, key=lambda item: (-item[1].changed, -abs(item[1].difference), str(item[0])))[:count]


class DryRun:
    def __init__(self, base: Bundle, head: Bundle) -> None:
        self._bundles = (base, head)
        self._runs = (PolicyRun(base), PolicyRun(head))
        self._prices = (PriceBook(base.pricing), PriceBook(head.pricing))
        self._totals = (SideTotals(), SideTotals())
        self._changes = Impact()
        self._developers: dict[str, Impact] = defaultdict(Impact)
        self._sessions: dict[tuple[str, str], Impact] = defaultdict(Impact)
        self._last_turn: dict[str, tuple[Tokens, float | None]] = {}  # by session, then developer
        self._first: datetime | None = None
        self._last: datetime | None = None
        self._seen = 0
        self._replayed = 0
        self._matches = 0
        self._mismatches: list[Mismatch] = []
        self._mismatch_count = 0
        self._newly_paused: set[str] = set()
        self._callers: dict[tuple[str, str, str, str | None], tuple[Caller, bool]] = {}

    def feed(self, records: Iterable[LedgerRecord]) -> None:
        """Records in time order (read_ledgers sorts them)."""
        for record in records:
            self._seen += 1
            if self._first is None:
                self._first = record.time
            self._last = record.time
            if record.budgeted and not record.rate_limited:  # its retry is in the ledger as its own request
                self._replay(record)

    def _replay(self, record: LedgerRecord) -> None:
        assert record.developer is not None and record.cost_center is not None and record.requested_model
        self._replayed += 1
        caller, covered = self._caller(record.developer, record.cost_center, record.key_name or "", record.repo)
        if covered:
            size, settles_at = _input_tokens(record), settle_time(record.time, record.latency_ms)
            base, base_decision = self._side(0, record, caller, size, settles_at)
            head, _ = self._side(1, record, caller, size, settles_at)
        else:  # no budget covers the caller on either side: nothing to decide, both forward what was asked
            base_decision = Decision(FORWARD, record.requested_model)
            base, _ = self._served(0, record, FORWARD, record.requested_model, 0, None)
            head, _ = self._served(1, record, FORWARD, record.requested_model, 0, None)
        self._check_recorded(record, base, base_decision)
        change, base_cost, head_cost = _change(base, head), base.cost or ZERO, head.cost or ZERO
        for impact in (self._changes, self._developers[record.developer],
                       self._sessions[(record.developer, record.session or "(no session)")]):
            impact.count(change, base_cost, head_cost)
        if base.action is not PAUSE and head.action is PAUSE:
            self._newly_paused.add(record.developer)
        if record.tokens is not None and record.admitted:
            turn = (record.tokens, record.latency_ms)
            self._last_turn[f"developer:{record.developer}"] = turn
            if record.session:
                self._last_turn[f"session:{record.session}"] = turn

    def _caller(self, developer: str, cost_center: str, key_name: str, repository: str | None
                ) -> tuple[Caller, bool]:
        """The caller, and whether a budget covers it on either side: one per identity and repository (there
        are few, and both answers depend only on the bundles)."""
        identity = (developer, cost_center, key_name, repository)
        found = self._callers.get(identity)
        if found is None:
            caller = Caller(*identity)
            found = self._callers[identity] = (caller, any(run.index.budgets_for(caller) for run in self._runs))
        return found

    def _side(self, side: int, record: LedgerRecord, caller: Caller, size: int, settles_at: datetime
              ) -> tuple[Replayed, Decision]:
        """`settles_at`: the recorded request's arrival plus its latency."""
        run, totals = self._runs[side], self._totals[side]
        assert record.requested_model is not None
        decision = run.admit(caller, record.requested_model, size, record.time)
        for proposal in decision.dry_run:
            totals.dry_run[proposal.standing.budget.id][proposal.action.value] += 1
        deciding = decision.deciding if decision.action is not FORWARD else None
        budget = deciding.standing.budget.id if deciding else None
        if budget:
            totals.by_budget[budget][decision.action.value] += 1
        if decision.action is PAUSE:
            totals.paused += 1
            totals.paused_developers.add(caller.developer)
            return Replayed(PAUSE, None, 0, budget, None), decision
        if decision.action is REROUTE:
            totals.downgraded += 1
        replayed, latency = self._served(side, record, decision.action, decision.model,
                                         deciding.steps if deciding else 0, budget)
        if replayed.cost is not None:
            run.charge(decision, replayed.cost, settle_time(record.time, latency) if replayed.estimated else settles_at)
        return replayed, decision

    def _served(self, side: int, record: LedgerRecord, action: Action, model: str, steps: int, budget: str | None
                ) -> tuple[Replayed, float | None]:
        """A request a side forwards to `model`: what it costs there (counted in the side's totals), and the
        latency it settles after."""
        totals = self._totals[side]
        cost, latency, estimated = self._cost(side, record, model)
        if cost is not None:
            totals.cost += cost
            if estimated:
                totals.estimated_cost += cost
                totals.estimated_requests += 1
        elif not record.admitted:
            totals.unpriced_requests += 1
        return Replayed(action, model, steps, budget, cost, estimated), latency

    def _cost(self, side: int, record: LedgerRecord, model: str) -> tuple[Decimal | None, float | None, bool]:
        """(cost, latency, estimated) of the request served by `model` on a side."""
        if record.admitted:
            if record.tokens is None:
                return None, record.latency_ms, False
            if model == record.forwarded_model:
                return record.cost, record.latency_ms, False
            cost = repriced(record.tokens, model, record.time, self._prices[side], record.flags)
            return cost, record.latency_ms, False
        earlier = self._last_turn.get(f"session:{record.session}") or self._last_turn.get(
            f"developer:{record.developer}")
        if earlier is None:
            return None, None, False
        tokens, latency = earlier
        return repriced(tokens, model, record.time, self._prices[side]), latency, True

    def _check_recorded(self, record: LedgerRecord, replayed: Replayed, decision: Decision) -> None:
        recorded = (record.decision.action, record.decision.model, record.decision.reason)
        model = replayed.model if replayed.action is REROUTE else None
        again = (RECORDED_ACTIONS[replayed.action], model, describe_decision(decision))
        if recorded == again:
            self._matches += 1
            return
        self._mismatch_count += 1
        if len(self._mismatches) < SHOWN_MISMATCHES:
            self._mismatches.append(Mismatch(record.request_id, record.time, _words(*recorded), _words(*again)))

    def report(self) -> DryRunReport:
        for run in self._runs:
            run.finish()
        return DryRunReport(
            first=self._first, last=self._last, ledger_requests=self._seen, replayed=self._replayed,
            changes=self._changes, base=self._totals[0], head=self._totals[1], budgets=self._budgets(),
            developers=dict(self._developers), sessions=dict(self._sessions), base_matches=self._matches,
            mismatches=self._mismatch_count, mismatch_examples=self._mismatches,
            newly_paused_developers=self._newly_paused)

    def _budgets(self) -> list[BudgetReport]:
        entries = [{b.id: b for b in bundle.budgets} for bundle in self._bundles]
        reports = []
        for budget_id in sorted(entries[0].keys() | entries[1].keys()):
            base_windows = dict(windows_of(self._runs[0], budget_id))
            head_windows = dict(windows_of(self._runs[1], budget_id))
            windows = [_window(window, base_windows.get(window), head_windows.get(window))
                       for window in sorted(base_windows.keys() | head_windows.keys())]
            reports.append(BudgetReport(
                id=budget_id, base=entries[0].get(budget_id), head=entries[1].get(budget_id),
                base_spent=sum((w.base_spent for w in windows), ZERO),
                head_spent=sum((w.head_spent for w in windows), ZERO),
                base_actions=dict(self._totals[0].by_budget.get(budget_id, {})),
                head_actions=dict(self._totals[1].by_budget.get(budget_id, {})),
                base_dry_run=dict(self._totals[0].dry_run.get(budget_id, {})),
                head_dry_run=dict(self._totals[1].dry_run.get(budget_id, {})),
                base_crossed=_crossed(self._runs[0], budget_id), head_crossed=_crossed(self._runs[1], budget_id),
                windows=windows))
        return reports


def _input_tokens(record: LedgerRecord) -> int:
    """Admission's estimate: from the body size (v2), else the billed input (v1), else unknown."""
    if record.request_bytes is not None:
        return estimate_input_tokens(record.request_bytes)
    if record.tokens is not None:
        return record.tokens.total_input
    return UNKNOWN_INPUT_TOKENS


def _change(base: Replayed, head: Replayed) -> str | None:
    """Which Impact counter a request's two sides add to, if any."""
    base_paused, head_paused = base.action is PAUSE, head.action is PAUSE
    if head_paused and not base_paused:
        return "newly_paused"
    if base_paused and not head_paused:
        return "no_longer_paused"
    if not head_paused and head.model != base.model:
        if head.steps > base.steps or (head.action is REROUTE and base.action is FORWARD):
            return "newly_downgraded"
        return "no_longer_downgraded"
    return None


def _words(action: str, model: str | None, reason: str) -> str:
    return f"{action}{' to ' + model if model else ''}" + (f" ({reason})" if reason else "")


def _window(window: str, base: WindowSpend | None, head: WindowSpend | None) -> BudgetWindow:
    b, h = base or WindowSpend(), head or WindowSpend()
    return BudgetWindow(window, b.spent, h.spent, b.peak, h.peak, dict(b.by_day), dict(h.by_day))


def _crossed(run: PolicyRun, budget_id: str) -> dict[BudgetState, datetime]:
    return {state: run.first_crossed[(budget_id, state)] for state in THRESHOLD_STATES
            if (budget_id, state) in run.first_crossed}


def window_to_date(budget: BudgetReport, days: list[str], side: int) -> list[Decimal]:
    """Per UTC day of `days`: what the budget's latest window to have spent anything had spent by that day's end."""
    values, current, total = [], None, ZERO
    for day in days:
        for window in budget.windows:
            spent = (window.base_by_day if side == 0 else window.head_by_day).get(day)
            if spent is None:
                continue
            if window.window != current:
                current, total = window.window, ZERO
            total += spent
        values.append(total)
    return values


def days_between(first: datetime, last: datetime) -> list[str]:
    count = (last.date() - first.date()).days + 1
    return [(first.date() + timedelta(days=offset)).isoformat() for offset in range(count)]


def is_daily(report: BudgetReport) -> bool:
    entry = report.head or report.base
    return entry is not None and entry.window.period is Period.DAILY
