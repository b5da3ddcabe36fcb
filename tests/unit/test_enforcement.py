"""Enforcement as a pure function: which budgets apply, states, routing, pausing, dry runs."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from spendgate.adapters.policyfiles import load_text
from spendgate.api.v1alpha1 import BudgetState
from spendgate.logic.enforcement import (
    Action,
    BudgetIndex,
    Caller,
    cascade_position,
    decide,
    estimate_input_tokens,
    pause_message,
)
from spendgate.policy.compiler import compile_policies

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
OPUS, SONNET, HAIKU = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"
ALICE = Caller(developer="alice", cost_center="platform", key_name="alice-laptop", repository="acme/app")

POLICIES = """
apiVersion: spendgate.io/v1alpha1
kind: CostCenter
metadata: {name: engineering}
spec: {code: ENG, alertTargets: [{name: eng-leads, type: Slack, secretRef: {namespace: s, name: s}}]}
---
apiVersion: spendgate.io/v1alpha1
kind: CostCenter
metadata: {name: platform}
spec: {code: PLT, parent: engineering}
---
apiVersion: spendgate.io/v1alpha1
kind: CostCenter
metadata: {name: sales}
spec: {code: SLS}
---
apiVersion: spendgate.io/v1alpha1
kind: RoutingPolicy
metadata: {name: cascade, namespace: t}
spec:
  cascade: [claude-opus-5-5, claude-sonnet-5-5, claude-haiku-5-5]
  rules:
    - name: small-when-low
      when: {remainingUSDBelow: "20", inputTokensBelow: 10000}
      then: {useModel: claude-haiku-5-5}
---
"""


def budget(name: str, cost_center: str, scope: str, limit: str = "100", mode: str = "Enforce",
           policy: str = "cascade") -> str:
    return f"""apiVersion: spendgate.io/v1alpha1
kind: Budget
metadata: {{name: {name}, namespace: t}}
spec: {{costCenter: {cost_center}, scope: {scope}, limitUSD: "{limit}", window: {{period: Daily}},
        enforcement: {mode}, routingPolicyRef: {policy}}}
---
"""


def index(*budgets: str) -> BudgetIndex:
    loaded = load_text(POLICIES + "".join(budgets))
    assert loaded.errors == []
    result = compile_policies(loaded.objects)
    assert result.errors == []
    return BudgetIndex(result.bundle.bundle)


class Spend:
    def __init__(self, settled: dict[str, str] | None = None, in_flight: dict[str, str] | None = None) -> None:
        self._settled = defaultdict(Decimal, {f"t/{k}": Decimal(v) for k, v in (settled or {}).items()})
        self._in_flight = defaultdict(Decimal, {f"t/{k}": Decimal(v) for k, v in (in_flight or {}).items()})

    def settled(self, budget_id: str, window_id: str) -> Decimal:
        assert window_id == "2026-11-24"
        return self._settled[budget_id]

    def in_flight(self, budget_id: str, window_id: str) -> Decimal:
        return self._in_flight[budget_id]


def test_budgets_that_cover_a_caller() -> None:
    idx = index(
        budget("team", "platform", "{kind: CostCenter}"),
        budget("org", "engineering", "{kind: CostCenter}"),
        budget("other-team", "sales", "{kind: CostCenter}"),
        budget("alice", "platform", "{kind: Developer, name: alice}"),
        budget("alice-elsewhere", "sales", "{kind: Developer, name: alice}"),
        budget("bob", "platform", "{kind: Developer, name: bob}"),
        budget("repo", "engineering", "{kind: Repository, name: acme/app}"),
        budget("key", "platform", "{kind: VirtualKey, name: alice-laptop}"),
    )
    assert sorted(b.id for b in idx.budgets_for(ALICE)) == ["t/alice", "t/key", "t/org", "t/repo", "t/team"]
    untagged = Caller("alice", "platform", "alice-laptop")
    assert "t/repo" not in [b.id for b in idx.budgets_for(untagged)]


@pytest.mark.parametrize(("spent", "in_flight", "state", "action", "model"), [
    ("10", "0", BudgetState.OK, Action.FORWARD, OPUS),
    ("80", "0", BudgetState.ALERT, Action.FORWARD, OPUS),
    ("95", "0", BudgetState.DOWNGRADE, Action.REROUTE, SONNET),
    ("109.99", "0", BudgetState.DOWNGRADE, Action.REROUTE, SONNET),
    ("110", "0", BudgetState.PAUSED, Action.PAUSE, OPUS),
    # in-flight reservations push to Downgrade but never pause: no false pauses
    ("90", "6", BudgetState.DOWNGRADE, Action.REROUTE, SONNET),
    ("100", "50", BudgetState.DOWNGRADE, Action.REROUTE, SONNET),
])
def test_three_stages(spent: str, in_flight: str, state: BudgetState, action: Action, model: str) -> None:
    idx = index(budget("alice", "platform", "{kind: Developer, name: alice}", policy="cascade"))
    decision = decide(idx, ALICE, OPUS, 50_000, Spend({"alice": spent}, {"alice": in_flight}), NOW)
    assert (decision.standings[0].state, decision.action, decision.model) == (state, action, model)


def test_never_upgrades() -> None:
    idx = index(budget("alice", "platform", "{kind: Developer, name: alice}"))
    decision = decide(idx, ALICE, HAIKU, 50_000, Spend({"alice": "99"}), NOW)
    assert (decision.action, decision.model) == (Action.FORWARD, HAIKU)


def test_routing_rule_sends_small_turns_to_haiku_when_money_runs_low() -> None:
    idx = index(budget("alice", "platform", "{kind: Developer, name: alice}"))
    low = Spend({"alice": "85"})
    small = decide(idx, ALICE, OPUS, 9_999, low, NOW)
    assert (small.action, small.model, small.deciding and small.deciding.rule) == (
        Action.REROUTE, HAIKU, "small-when-low")
    assert decide(idx, ALICE, OPUS, 10_000, low, NOW).action is Action.FORWARD
    assert decide(idx, ALICE, OPUS, 9_999, Spend({"alice": "79"}), NOW).action is Action.FORWARD


def test_the_budget_that_steps_furthest_wins_and_pause_beats_everything() -> None:
    idx = index(budget("alice", "platform", "{kind: Developer, name: alice}"),
                budget("team", "platform", "{kind: CostCenter}", limit="1000"))
    rerouted = decide(idx, ALICE, OPUS, 5_000, Spend({"alice": "96", "team": "960"}), NOW)
    assert (rerouted.model, rerouted.deciding and rerouted.deciding.standing.budget.id) == (HAIKU, "t/alice")
    paused = decide(idx, ALICE, OPUS, 5_000, Spend({"alice": "10", "team": "1100"}), NOW)
    assert (paused.action, paused.deciding and paused.deciding.standing.budget.id) == (Action.PAUSE, "t/team")


def test_dry_run_budgets_record_but_never_act() -> None:
    idx = index(budget("alice", "platform", "{kind: Developer, name: alice}", mode="DryRun"))
    decision = decide(idx, ALICE, OPUS, 50_000, Spend({"alice": "200"}), NOW)
    assert (decision.action, decision.model) == (Action.FORWARD, OPUS)
    assert [p.action for p in decision.dry_run] == [Action.PAUSE]


def test_default_cascade_without_a_routing_policy() -> None:
    text = budget("alice", "platform", "{kind: Developer, name: alice}").replace(", routingPolicyRef: cascade", "")
    decision = decide(index(text), ALICE, OPUS, 50_000, Spend({"alice": "96"}), NOW)
    assert decision.model == SONNET


def test_cascade_position_by_family() -> None:
    cascade = [OPUS, SONNET, HAIKU]
    assert cascade_position(cascade, "claude-opus-4-8") == 0
    assert cascade_position(cascade, "claude-haiku-4-5-20251001") == 2
    assert cascade_position(cascade, "my-gateway-alias") is None


def test_an_unplaceable_model_is_forwarded_as_asked() -> None:
    idx = index(budget("alice", "platform", "{kind: Developer, name: alice}"))
    decision = decide(idx, ALICE, "my-gateway-alias", 50_000, Spend({"alice": "99"}), NOW)
    assert (decision.action, decision.model) == (Action.FORWARD, "my-gateway-alias")


def test_pause_message_reads_well_in_a_terminal() -> None:
    idx = index(budget("team", "platform", "{kind: CostCenter}", limit="40"))
    decision = decide(idx, ALICE, OPUS, 1, Spend({"team": "44.1"}), NOW)
    assert decision.deciding is not None
    message = pause_message(decision.deciding.standing, idx)
    assert message == (
        "spend limit reached (daily; resets 2026-11-25 00:00 UTC) · Budget t/team (cost center platform): "
        "$44.10 of $40.00 spent (110.3%). Alerted: nobody. Ask the owners of cost center platform to raise the limit."
    )


def test_pause_message_of_a_budget_under_a_cent_shows_the_amounts() -> None:
    idx = index(budget("tiny", "platform", "{kind: CostCenter}", limit="0.005"))
    decision = decide(idx, ALICE, OPUS, 1, Spend({"tiny": "0.0055123"}), NOW)
    assert decision.deciding is not None
    assert "Budget t/tiny (cost center platform): $0.0055 of $0.005 spent (110.2%)." in pause_message(
        decision.deciding.standing, idx)


def test_fullest_budget_is_reported() -> None:
    idx = index(budget("alice", "platform", "{kind: Developer, name: alice}"),
                budget("org", "engineering", "{kind: CostCenter}", limit="1000"))
    decision = decide(idx, ALICE, OPUS, 1, Spend({"alice": "50", "org": "900"}), NOW)
    assert decision.fullest is not None and decision.fullest.budget.id == "t/org"


def test_input_token_estimate() -> None:
    assert estimate_input_tokens(400_000) == 100_000
