"""Alert messages and their wire formats (Slack incoming webhook, generic JSON, PagerDuty Events v2).

Pure: the message says who (budget, scope, cost center), how much (spent of limit), which
threshold, what it does to traffic, and when the window resets. URLs and keys are not in here;
the delivery code adds them from the Secret at the last moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from spendgate.api import v1alpha1 as api
from spendgate.logic.spend import to_cents
from spendgate.operator.alerts import Claim

EFFECTS = {
    api.BudgetState.ALERT: "traffic is unchanged",
    api.BudgetState.DOWNGRADE: "requests now step down the model cascade",
    api.BudgetState.PAUSED: "requests are refused until the window resets",
}
PAGERDUTY_SEVERITY = {api.BudgetState.ALERT: "warning", api.BudgetState.DOWNGRADE: "error",
                      api.BudgetState.PAUSED: "critical"}


@dataclass(frozen=True)
class AlertMessage:
    budget: api.Budget
    cost_center: str
    cost_center_code: str
    claim: Claim
    status: api.BudgetStatus

    @property
    def threshold(self) -> api.BudgetState:
        return self.claim.highest

    @property
    def threshold_percent(self) -> int:
        thresholds = self.budget.spec.thresholds
        return {api.BudgetState.ALERT: thresholds.alertPercent, api.BudgetState.DOWNGRADE: thresholds.downgradePercent,
                api.BudgetState.PAUSED: thresholds.pausePercent}[self.threshold]

    @property
    def dedupe_key(self) -> str:
        return f"spendgate/{self.budget.ref()}/{self.claim.window}/{self.threshold.value}"

    def resets(self) -> str:
        """The reset time in the budget's own time zone, and in UTC."""
        end = self.status.windowEnd or ""
        local = datetime.fromisoformat(end).astimezone(ZoneInfo(self.budget.spec.window.timeZone))
        return f"{local:%Y-%m-%d %H:%M %Z} ({end})"

    def text(self) -> str:
        spec, status = self.budget.spec, self.status
        spent = to_cents(Decimal(status.spentUSD or 0))
        effect = EFFECTS[self.threshold]
        if spec.enforcement == api.Enforcement.DRY_RUN:
            effect = f"dry run: enforcement would mean {effect.replace('now ', '')}; traffic is unchanged"
        return (f"Budget {self.budget.ref()} ({status.scope}, cost center {self.cost_center} "
                f"{self.cost_center_code}) crossed its {self.threshold.value} threshold "
                f"({self.threshold_percent}%): ${spent} of ${spec.limitUSD} spent ({status.percentUsed}) in "
                f"window {self.claim.window}; {effect}. The window resets at {self.resets()}.")


def slack_payload(message: AlertMessage) -> dict[str, Any]:
    return {"text": f":rotating_light: {message.text()}"}


def webhook_payload(message: AlertMessage) -> dict[str, Any]:
    budget, status = message.budget, message.status
    return {
        "type": "spendgate.io/budget-threshold",
        "dedupeKey": message.dedupe_key,
        "budget": {"namespace": budget.metadata.namespace, "name": budget.metadata.name, "scope": status.scope,
                   "enforcement": budget.spec.enforcement.value},
        "costCenter": {"name": message.cost_center, "code": message.cost_center_code},
        "threshold": message.threshold.value,
        "thresholdPercent": message.threshold_percent,
        "thresholdsCrossed": [t.value for t in message.claim.thresholds],
        "spentUSD": status.spentUSD,
        "limitUSD": budget.spec.limitUSD,
        "percentUsed": status.percentUsed,
        "window": {"id": message.claim.window, "start": status.windowStart, "end": status.windowEnd},
        "resetsAt": status.windowEnd,
        "message": message.text(),
    }


def pagerduty_payload(message: AlertMessage, routing_key: str) -> dict[str, Any]:
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": message.dedupe_key,
        "payload": {
            "summary": message.text()[:1024],
            "source": "spendgate",
            "severity": PAGERDUTY_SEVERITY[message.threshold],
            "component": message.budget.ref(),
            "group": message.cost_center,
            "class": "budget-threshold",
            "custom_details": webhook_payload(message),
        },
    }
