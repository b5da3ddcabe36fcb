"""A dry run of the policy that made a ledger reproduces every decision the real proxy recorded: alert,
downgrade (by state and by a routing rule), pause, and a DryRun budget's would-have decisions."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from proxy.proxy_harness import Keys, StartGateway, message_request
from spendgate.adapters.journal import SpendJournal
from spendgate.adapters.ledgerfiles import read_ledgers
from spendgate.adapters.policysource import open_policies
from spendgate.logic.dryrun import DryRun
from spendgate.logic.tracker import SpendTracker
from spendgate.proxy.enforce import BudgetAdmission
from spendgate.testing.upstream import MockUpstream, Reply, Scenario

PRICED = Scenario(content=({"type": "text", "text": "ok"},), usage={"input_tokens": 10_000, "output_tokens": 1_000})
POLICIES = """
apiVersion: spendgate.io/v1alpha1
kind: RoutingPolicy
metadata: {name: small-to-haiku, namespace: ai-budgets}
spec:
  cascade: [claude-opus-5-5, claude-sonnet-5-5, claude-haiku-5-5]
  rules:
    - name: small-turns-when-low
      when: {remainingUSDBelow: "0.50", inputTokensBelow: 200}
      then: {useModel: claude-haiku-5-5}
---
apiVersion: spendgate.io/v1alpha1
kind: Budget
metadata: {name: alice-dollar, namespace: ai-budgets}
spec:
  costCenter: platform
  scope: {kind: Developer, name: alice}
  limitUSD: "1.00"
  window: {period: Daily, timeZone: Europe/Berlin}
  routingPolicyRef: small-to-haiku
---
apiVersion: spendgate.io/v1alpha1
kind: Budget
metadata: {name: alice-shadow, namespace: ai-budgets}
spec:
  costCenter: platform
  scope: {kind: Developer, name: alice}
  limitUSD: "0.50"
  window: {period: Daily, timeZone: Asia/Tokyo}
  enforcement: DryRun
"""


async def test_the_recorded_policy_reproduces_every_decision(
        start_gateway: StartGateway, policies: Path, keys: Keys, upstream: MockUpstream, tmp_path: Path) -> None:
    (policies / "40-replay.yaml").write_text(POLICIES)
    upstream.default = Reply(scenario=PRICED)
    budgets = BudgetAdmission(SpendTracker(SpendJournal(tmp_path / "journal")))
    running = await start_gateway(admission=budgets, spend_sink=budgets)
    statuses = []
    async with running.client(keys.alice) as alice, running.client(keys.bob) as bob:
        for turn in range(40):  # sequential, as one Claude Code session sends them
            small = turn % 3 == 2  # a short body: the routing rule's inputTokensBelow matches
            body = message_request(stream=turn % 2 == 0, messages=[{"role": "user", "content": "hi" if small
                                                                    else "Run the tests. " * 60}])
            statuses.append((await alice.post("/v1/messages", json=body)).status_code)
            await bob.post("/v1/messages", json=message_request())  # no budget of his covers him
            if statuses[-3:] == [429, 429, 429]:
                break
    records = read_ledgers([running.ledger_path]).records
    actions = {record.decision.action for record in records}
    assert actions == {"forward", "reroute", "reject"} and 429 in statuses
    assert any("by rule small-turns-when-low" in r.decision.reason for r in records)
    assert any("dry-run pause: ai-budgets/alice-shadow" in r.decision.reason for r in records)

    bundle = open_policies(str(policies)).result.bundle.bundle
    replay = DryRun(bundle, bundle)
    replay.feed(records)
    report = replay.report()
    assert report.replayed == len(records) and report.mismatches == 0, report.mismatch_examples
    assert report.changes.changed == 0 and report.changes.difference == 0
    charged = sum((r.cost for r in records if r.developer == "alice"), Decimal(0))
    dollar = next(b for b in report.budgets if b.id == "ai-budgets/alice-dollar")
    assert dollar.base_spent == dollar.head_spent == charged  # what the budget counted, to the last digit
    assert set(dollar.base_crossed) == {"Alert", "Downgrade", "Paused"}

    raised = bundle.model_copy(update={"budgets": [
        b.model_copy(update={"limitUSD": "100.00"}) if b.id == "ai-budgets/alice-dollar" else b
        for b in bundle.budgets]})
    lifted = DryRun(bundle, raised)
    lifted.feed(records)
    change = lifted.report().changes
    assert change.no_longer_paused == statuses.count(429)
    assert change.no_longer_downgraded > 0 and change.newly_paused == 0
