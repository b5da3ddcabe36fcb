"""What a policy change does, in policy terms: two compiled bundles in, a list of changes out.

"alice-daily: limit $40.00 -> $60.00", "platform-monthly: downgrade 95% -> 90%", "routing
opus-sonnet-haiku: cascade claude-sonnet-5-5 removed", budgets added or removed, cost centers moved
in the hierarchy, enforcement DryRun -> Enforce, rule changes; virtual keys as counts only (who
holds a key is not a reviewer's business, and key names can hint at secrets' owners).

Compiled bundles, not YAML: a reordered file, a comment or a default spelled out is no change, and
both sides are read exactly as the proxy will read them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, TypeVar

from spendgate.api.v1alpha1 import ScopeKind
from spendgate.logic.spend import format_usd
from spendgate.policy.bundle import BudgetEntry, Bundle, CostCenterEntry, RateLimitsEntry, RoutingPolicyEntry, RuleEntry

SECTIONS: Final = ("Budget", "RoutingPolicy", "CostCenter", "VirtualKeys")
T = TypeVar("T")


@dataclass(frozen=True, order=True)
class PolicyChange:
    kind: str  # Budget, RoutingPolicy, CostCenter, VirtualKeys
    subject: str  # the object's short name
    text: str  # "limit $40.00 -> $60.00"

    def __str__(self) -> str:
        return f"{self.subject}: {self.text}"


def diff_bundles(base: Bundle, head: Bundle) -> list[PolicyChange]:
    names = short_names([b.id for b in (*base.budgets, *head.budgets)]
                        + [p.id for p in (*base.routingPolicies, *head.routingPolicies)])
    changes = [
        *_compare("Budget", {b.id: b for b in base.budgets}, {b.id: b for b in head.budgets}, names,
                  _describe_budget, _budget_changes),
        *_compare("RoutingPolicy", {p.id: p for p in base.routingPolicies}, {p.id: p for p in head.routingPolicies},
                  names, _describe_policy, _policy_changes),
        *_compare("CostCenter", {c.name: c for c in base.costCenters}, {c.name: c for c in head.costCenters},
                  {}, _describe_cost_center, _cost_center_changes),
        *_key_changes(base, head),
    ]
    return sorted(changes, key=lambda c: (SECTIONS.index(c.kind), c.subject))


def short_names(ids: Iterable[str]) -> dict[str, str]:
    """namespace/name -> name where the name alone is unambiguous."""
    unique = set(ids)
    counts: dict[str, int] = {}
    for item in unique:
        name = item.rsplit("/", 1)[-1]
        counts[name] = counts.get(name, 0) + 1
    return {item: item.rsplit("/", 1)[-1] if counts[item.rsplit("/", 1)[-1]] == 1 else item for item in unique}


def _compare(kind: str, base: dict[str, T], head: dict[str, T], names: dict[str, str],
             describe: Callable[[T], str], changed: Callable[[T, T], list[str]]) -> list[PolicyChange]:
    found = []
    for key in sorted(base.keys() | head.keys()):
        subject = names.get(key, key)
        if key not in head:
            found.append(PolicyChange(kind, subject, f"removed ({describe(base[key])})"))
        elif key not in base:
            found.append(PolicyChange(kind, subject, f"added ({describe(head[key])})"))
        else:
            found.extend(PolicyChange(kind, subject, text) for text in changed(base[key], head[key]))
    return found


# Budgets ----------------------------------------------------------------------------------------


def scope_words(budget: BudgetEntry) -> str:
    if budget.scope.kind is ScopeKind.COST_CENTER:
        return f"cost center {budget.costCenter}"
    return f"{budget.scope.kind.value} {budget.scope.name} in {budget.costCenter}"


def _describe_budget(budget: BudgetEntry) -> str:
    return (f"{scope_words(budget)}, {format_usd(Decimal(budget.limitUSD))} {budget.window.period.value.lower()} "
            f"({budget.window.timeZone}), {budget.enforcement.value}")


def _budget_changes(old: BudgetEntry, new: BudgetEntry) -> list[str]:
    found = []
    if Decimal(old.limitUSD) != Decimal(new.limitUSD):
        found.append(f"limit {format_usd(Decimal(old.limitUSD))} -> {format_usd(Decimal(new.limitUSD))}")
    for word in ("alert", "downgrade", "pause"):
        before, after = getattr(old.thresholds, f"{word}Percent"), getattr(new.thresholds, f"{word}Percent")
        if before != after:
            found.append(f"{word} {before}% -> {after}%")
    if old.window.period != new.window.period:
        found.append(f"window {old.window.period.value} -> {new.window.period.value}")
    if old.window.timeZone != new.window.timeZone:
        found.append(f"time zone {old.window.timeZone} -> {new.window.timeZone}")
    if old.enforcement != new.enforcement:
        found.append(f"enforcement {old.enforcement.value} -> {new.enforcement.value}")
    if (old.scope, old.costCenter) != (new.scope, new.costCenter):
        found.append(f"scope {scope_words(old)} -> {scope_words(new)}")
    if old.routingPolicy != new.routingPolicy:
        found.append(f"routing {_routing(old)} -> {_routing(new)}")
    return found


def _routing(budget: BudgetEntry) -> str:
    return budget.routingPolicy.rsplit("/", 1)[-1] if budget.routingPolicy else "the default cascade"


# Routing policies --------------------------------------------------------------------------------


def _describe_policy(policy: RoutingPolicyEntry) -> str:
    return f"cascade {' -> '.join(policy.cascade)}, {len(policy.rules)} rules"


def _policy_changes(old: RoutingPolicyEntry, new: RoutingPolicyEntry) -> list[str]:
    found = [f"cascade {model} removed" for model in old.cascade if model not in new.cascade]
    found += [f"cascade {model} added" for model in new.cascade if model not in old.cascade]
    kept_old = [m for m in old.cascade if m in new.cascade]
    if not found and kept_old != [m for m in new.cascade if m in old.cascade]:
        found.append(f"cascade reordered: {' -> '.join(old.cascade)} becomes {' -> '.join(new.cascade)}")
    old_rules, new_rules = {r.name: r for r in old.rules}, {r.name: r for r in new.rules}
    for name in [r.name for r in old.rules if r.name not in new_rules]:
        found.append(f"rule {name} removed ({_describe_rule(old_rules[name])})")
    for rule in new.rules:
        if rule.name not in old_rules:
            found.append(f"rule {rule.name} added ({_describe_rule(rule)})")
        elif rule != old_rules[rule.name]:
            (old_when, old_then), (new_when, new_then) = _rule_parts(old_rules[rule.name]), _rule_parts(rule)
            what = [f"{old_when} -> {new_when}" if old_when != new_when else "",
                    f"{old_then} -> {new_then}" if old_then != new_then else ""]
            found.append(f"rule {rule.name}: {'; '.join(part for part in what if part)}")
    if not found and [r.name for r in old.rules] != [r.name for r in new.rules]:
        found.append(f"rules reordered (the first match wins): {', '.join(r.name for r in new.rules)}")
    return found


def _describe_rule(rule: RuleEntry) -> str:
    when, then = _rule_parts(rule)
    return f"{when} {then}"


def _rule_parts(rule: RuleEntry) -> tuple[str, str]:
    when = [f"state >= {rule.stateAtLeast.value}" if rule.stateAtLeast else "",
            f"remaining < {format_usd(Decimal(rule.remainingUSDBelow))}" if rule.remainingUSDBelow else "",
            f"input < {rule.inputTokensBelow:,} tokens" if rule.inputTokensBelow else ""]
    then = f"use {rule.useModel}" if rule.useModel else f"step down {rule.stepDown}"
    return f"when {' and '.join(part for part in when if part)}", f"then {then}"


# Cost centers ------------------------------------------------------------------------------------


def _describe_cost_center(center: CostCenterEntry) -> str:
    parent = f", under {center.parent}" if center.parent else ", top level"
    return f"code {center.code}{parent}, {len(center.members)} members"


def _cost_center_changes(old: CostCenterEntry, new: CostCenterEntry) -> list[str]:
    found = []
    if old.parent != new.parent:
        found.append(f"moved: parent {old.parent or '(top level)'} -> {new.parent or '(top level)'}")
    if old.code != new.code:
        found.append(f"code {old.code} -> {new.code}")
    joined = sorted(set(new.members) - set(old.members))
    left = sorted(set(old.members) - set(new.members))
    if joined:
        found.append(f"members added: {', '.join(joined)}")
    if left:
        found.append(f"members removed: {', '.join(left)}")
    if old.alertTargets != new.alertTargets:
        before, after = ", ".join(old.alertTargets) or "none", ", ".join(new.alertTargets) or "none"
        found.append(f"alert targets {before} -> {after}")
    if old.rateLimits != new.rateLimits:
        found.extend(_rate_limit_changes(old.rateLimits, new.rateLimits))
    return found


RATE_LIMIT_SCOPES: Final = ("perVirtualKey", "perDeveloper", "total")
RATE_LIMIT_UNITS: Final = (("requestsPerMinute", "requests"), ("inputTokensPerMinute", "input tokens"),
                           ("outputTokensPerMinute", "output tokens"))


def _rate_limit_changes(old: RateLimitsEntry | None, new: RateLimitsEntry | None) -> list[str]:
    """"rate limit perDeveloper requests 60/min -> 120/min", one line per number that changed."""
    found = []
    for scope in RATE_LIMIT_SCOPES:
        before, after = getattr(old, scope, None), getattr(new, scope, None)
        for field, unit in RATE_LIMIT_UNITS:
            was, now = getattr(before, field, None), getattr(after, field, None)
            if was != now:
                found.append(f"rate limit {scope} {unit} {_per_minute(was)} -> {_per_minute(now)}")
    return found


def _per_minute(value: int | None) -> str:
    return "none" if value is None else f"{value:,}/min"


# Virtual keys: counts only -----------------------------------------------------------------------


def _key_changes(base: Bundle, head: Bundle) -> list[PolicyChange]:
    old, new = {k.hash: k for k in base.keys}, {k.hash: k for k in head.keys}
    counts = {
        "added": len(new.keys() - old.keys()),
        "removed": len(old.keys() - new.keys()),
        "revoked": sum(1 for h in old.keys() & new.keys() if new[h].revoked and not old[h].revoked),
        "reinstated": sum(1 for h in old.keys() & new.keys() if old[h].revoked and not new[h].revoked),
        "moved to another cost center": sum(1 for h in old.keys() & new.keys()
                                            if old[h].costCenter != new[h].costCenter),
    }
    text = ", ".join(f"{count} {what}" for what, count in counts.items() if count)
    return [PolicyChange("VirtualKeys", "virtual keys", text)] if text else []
