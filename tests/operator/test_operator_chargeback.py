"""The same numbers as the cluster showed: a 30-day synthetic ledger, reported to the real operator through the
spend report protocol by two proxies, gives ledger total = chargeback total = the sum of the root cost centers'
monthly budgets' final `status.spentUSD` = the sum of the root `CostCenter.status.spentUSD`, exactly; and a
budget in New York's month shows the spend the chargeback shows for its window.

The spend each ledger line is reported under is what a proxy charges: every budget covering its caller
(spendgate.logic.enforcement's BudgetIndex, as admission finds them), in the window of its arrival.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from operator_harness import Api, FakeProxy, ManualClock, OperatorThread

from cluster.controlplane import REPO_ROOT, ControlPlane
from cluster.polling import eventually
from spendgate.adapters.ledgerfiles import read_ledgers
from spendgate.adapters.policyfiles import compile_directory
from spendgate.logic.enforcement import BudgetIndex, Caller
from spendgate.logic.spend import exact
from spendgate.logic.usage import Month
from spendgate.logic.windows import window_at

pytestmark = pytest.mark.cluster

SPENDGATE = str(REPO_ROOT / ".venv" / "bin" / "spendgate")
NOVEMBER = Month(2026, 11)
MONTH_END = datetime(2026, 11, 30, 23, 30, tzinfo=UTC)  # the month's last half hour: its final status
ROOT_BUDGETS = ("engineering-monthly", "research-monthly")


def policies(run_id: str, namespace: str) -> str:
    """Two root cost centers (one with a child), a monthly UTC budget on each root, a monthly budget in New
    York's month on the child, and a developer's daily budget: the mix the chargeback must keep apart."""
    def cost_center(name: str, code: str, members: list[str], parent: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"code": code, "displayName": name.split("-")[0].title(), "members": members}
        if parent:
            spec["parent"] = parent
        return {"apiVersion": "spendgate.io/v1alpha1", "kind": "CostCenter",
                "metadata": {"name": name, "labels": {"spendgate-test": run_id}}, "spec": spec}

    def budget(name: str, cost_center_name: str, limit: str, period: str, zone: str,
               scope: dict[str, str] | None = None) -> dict[str, Any]:
        return {"apiVersion": "spendgate.io/v1alpha1", "kind": "Budget",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"costCenter": cost_center_name, "scope": scope or {"kind": "CostCenter"}, "limitUSD": limit,
                         "window": {"period": period, "timeZone": zone}}}

    engineering, platform, research = (f"engineering-{run_id}", f"platform-{run_id}", f"research-{run_id}")
    documents = [
        cost_center(engineering, f"ENG-{run_id}", []),
        cost_center(platform, f"ENG-{run_id}-PLT", ["alice", "bob", "carol"], parent=engineering),
        cost_center(research, f"RES-{run_id}", ["dana", "erin"]),
        budget("engineering-monthly", engineering, "90000.00", "Monthly", "UTC"),
        budget("research-monthly", research, "90000.00", "Monthly", "UTC"),
        budget("platform-monthly-ny", platform, "50000.00", "Monthly", "America/New_York"),
        budget("alice-daily", platform, "400.00", "Daily", "Europe/Berlin", {"kind": "Developer", "name": "alice"}),
    ]
    return "\n---\n".join(json.dumps(document) for document in documents)


def report_the_ledger(ledger: Path, policy_dir: Path, proxies: list[FakeProxy]) -> None:
    """Every charged line's cost under each budget that covers it, in the window of its arrival, split
    between the proxies line by line, then one report from each."""
    index = BudgetIndex(compile_directory(policy_dir).bundle.bundle)
    records = [record for record in read_ledgers([ledger]).records if record.charged]
    for number, record in enumerate(records):
        caller = Caller(record.developer or "", record.cost_center or "", record.key_name or "", record.repo)
        for budget in index.budgets_for(caller):
            window = window_at(budget.window.period, budget.window.timeZone, record.time)
            proxies[number % len(proxies)].spend(budget.id, window.id, exact(record.cost))
    for proxy in proxies:
        proxy.report(MONTH_END)


def test_ledger_chargeback_budgets_and_cost_centers_agree_to_the_cent(
        control_plane: ControlPlane, api: Api, clock: ManualClock, run_id: str, operator_namespace: str,
        policy_namespace: str, start_operator: type[OperatorThread], tmp_path: Path) -> None:
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    (policy_dir / "policies.yaml").write_text(policies(run_id, policy_namespace))
    ledger = tmp_path / "ledger.jsonl"
    subprocess.run([SPENDGATE, "ledger", "synth", "--policies", str(policy_dir), "--days", "30", "--start",
                    "2026-11-01", "--developers", "10", "--requests", "4000", "--seed", "5", "--out", str(ledger)],
                   check=True, capture_output=True)
    clock.set(MONTH_END)
    start_operator()
    control_plane.apply(policies(run_id, policy_namespace))
    report_the_ledger(ledger, policy_dir, [FakeProxy(control_plane, operator_namespace, name)
                                           for name in ("proxy-a", "proxy-b")])

    chargeback = json.loads(subprocess.run(
        [SPENDGATE, "chargeback", "--period", "2026-11", "--ledger", str(ledger), "--policies", str(policy_dir),
         "--output", "json"], check=True, capture_output=True, text=True).stdout)
    ledger_total = sum((r.cost for r in read_ledgers([ledger]).records if NOVEMBER.start <= r.time < NOVEMBER.end),
                       Decimal(0))
    chargeback_total = Decimal(chargeback["rows"][-1]["costUSDExact"])

    def budget_spent(name: str) -> Decimal | None:
        status = api.status("Budget", name, policy_namespace)
        return Decimal(status["spentUSD"]) if status.get("window") == "2026-11" and "spentUSD" in status else None

    def settled() -> list[Decimal] | None:
        spent = [budget_spent(name) for name in ROOT_BUDGETS]
        totals = [value for value in spent if value is not None]
        return totals if len(totals) == len(ROOT_BUDGETS) and sum(totals) == ledger_total else None

    budgets = eventually(settled, timeout=60, what=f"the root budgets' status adding up to the ledger's {ledger_total}")
    # The rollup follows the budgets' status writes by a write interval: wait for it to catch up with the
    # last of them, rather than read whichever rollup is there the moment the budgets settle.
    rollups = eventually(lambda: (found := [api.status("CostCenter", f"{root}-{run_id}").get("spentUSD")
                                            for root in ("engineering", "research")]) and all(found)
                         and sum(Decimal(value) for value in found) == ledger_total and found,
                         timeout=60, what=f"the cost centers' rollups adding up to the ledger's {ledger_total}")

    assert ledger_total > Decimal(10)
    assert chargeback_total == ledger_total
    assert sum(budgets) == ledger_total
    assert sum(Decimal(value) for value in rollups) == ledger_total
    assert Decimal(chargeback["rows"][-1]["costUSD"]) == ledger_total.quantize(Decimal("0.01"))
    # A budget in New York's month: its status and the chargeback's figure for its window agree, and say which.
    (platform,) = [row for row in chargeback["rows"] if row["costCenter"] == f"platform-{run_id}"
                   and row["kind"] == "cost-center"]
    new_york = eventually(lambda: budget_spent("platform-monthly-ny"), what="platform-monthly-ny's status")
    assert Decimal(platform["budget"]["spentUSD"]) == new_york
    assert platform["budget"]["window"] == ("monthly 2026-11 in America/New_York: 2026-11-01T04:00:00Z to "
                                            "2026-12-01T05:00:00Z")
