"""The policy compiler: API objects + virtual-key records -> one signed policy bundle.

Pure and deterministic: no I/O, no clock, no randomness; the same inputs give the same bytes and
the same content hash. Every inconsistency becomes a PolicyError for the resource at fault, and
that resource is left out of the bundle, while everything else still compiles. The operator turns
the errors into Ready=False conditions; standalone mode and `spendgate validate` print them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from spendgate.api import v1alpha1 as api
from spendgate.logic.windows import UnknownTimeZone, zone
from spendgate.policy.bundle import (
    BudgetEntry,
    Bundle,
    CostCenterEntry,
    KeyEntry,
    PricingEntry,
    RateLimitsEntry,
    RoutingPolicyEntry,
    RuleEntry,
    ScopeEntry,
    SignedBundle,
    ThresholdEntry,
    WindowEntry,
    sign,
)
from spendgate.policy.errors import PolicyError


@dataclass(frozen=True)
class CompileResult:
    bundle: SignedBundle
    errors: list[PolicyError] = field(default_factory=list)

    def errors_for(self, kind: str, namespace: str | None, name: str) -> list[PolicyError]:
        return [e for e in self.errors if (e.kind, e.namespace, e.name) == (kind, namespace, name)]


def compile_policies(
    objects: Iterable[api.PolicyObject],
    keys: Iterable[KeyEntry] = (),
    pricing: PricingEntry | None = None,
) -> CompileResult:
    items = list(objects)
    cost_centers = {o.metadata.name: o for o in items if isinstance(o, api.CostCenter)}
    policies = {o.ref(): o for o in items if isinstance(o, api.RoutingPolicy)}
    budgets = [o for o in items if isinstance(o, api.Budget)]
    errors: list[PolicyError] = []

    cc_entries = _cost_centers(cost_centers, errors)
    valid_cost_centers = {entry.name for entry in cc_entries}
    bundle = Bundle(
        costCenters=cc_entries,
        budgets=_budgets(budgets, cost_centers, valid_cost_centers, policies, errors),
        routingPolicies=sorted((_policy(p) for p in policies.values()), key=lambda p: p.id),
        keys=_keys(keys, valid_cost_centers, errors),
        pricing=pricing or PricingEntry(),
    )
    return CompileResult(bundle=sign(bundle), errors=sorted(errors))


def _cost_centers(cost_centers: dict[str, api.CostCenter], errors: list[PolicyError]) -> list[CostCenterEntry]:
    entries = []
    codes: dict[str, str] = {}
    for name in sorted(cost_centers):
        spec = cost_centers[name].spec
        ancestors, problem = _ancestors(name, cost_centers)
        if problem:
            errors.append(problem)
            continue
        if spec.code in codes:
            errors.append(PolicyError("CostCenter", None, name, "DuplicateCode",
                                      f"spec.code {spec.code!r} is already used by CostCenter {codes[spec.code]}",
                                      "spec.code"))
            continue
        codes[spec.code] = name
        entries.append(CostCenterEntry(
            name=name, code=spec.code, displayName=spec.displayName, parent=spec.parent,
            ancestors=ancestors, members=sorted(set(spec.members)),
            alertTargets=sorted(target.name for target in spec.alertTargets),
            requireRepositoryTag=spec.requireRepositoryTag,
            rateLimits=RateLimitsEntry.model_validate(spec.rateLimits.model_dump()) if spec.rateLimits else None,
        ))
    return entries


def _ancestors(name: str, cost_centers: dict[str, api.CostCenter]) -> tuple[list[str], PolicyError | None]:
    """Parent first, root last; or the error that stops the walk (unknown parent, cycle)."""
    chain: list[str] = []
    current = cost_centers[name].spec.parent
    while current is not None:
        if current == name or current in chain:
            cycle = " -> ".join([name, *chain, current])
            return [], PolicyError("CostCenter", None, name, "HierarchyCycle",
                                   f"spec.parent forms a cycle: {cycle}", "spec.parent")
        if current not in cost_centers:
            where = "its spec.parent" if not chain else f"ancestor {chain[-1]}'s spec.parent"
            return [], PolicyError("CostCenter", None, name, "UnknownParent",
                                   f"{where} names CostCenter {current!r}, which does not exist", "spec.parent")
        chain.append(current)
        current = cost_centers[current].spec.parent
    return chain, None


def _budgets(
    budgets: list[api.Budget],
    cost_centers: dict[str, api.CostCenter],
    valid_cost_centers: set[str],
    policies: dict[str, api.RoutingPolicy],
    errors: list[PolicyError],
) -> list[BudgetEntry]:
    entries = []
    for budget in sorted(budgets, key=lambda b: b.ref()):
        problem = _budget_problem(budget, cost_centers, valid_cost_centers, policies)
        if problem:
            errors.append(problem)
            continue
        entries.append(_budget_entry(budget))
    return entries


def _budget_problem(
    budget: api.Budget,
    cost_centers: dict[str, api.CostCenter],
    valid_cost_centers: set[str],
    policies: dict[str, api.RoutingPolicy],
) -> PolicyError | None:
    spec, namespace, name = budget.spec, budget.metadata.namespace, budget.metadata.name

    def error(reason: str, message: str, field_path: str) -> PolicyError:
        return PolicyError("Budget", namespace, name, reason, message, field_path)

    if spec.costCenter not in cost_centers:
        return error("UnknownCostCenter", f"spec.costCenter {spec.costCenter!r} names no CostCenter",
                     "spec.costCenter")
    if spec.costCenter not in valid_cost_centers:
        return error("CostCenterNotReady",
                     f"CostCenter {spec.costCenter!r} has errors of its own; fix it first", "spec.costCenter")
    if spec.routingPolicyRef and f"{namespace}/{spec.routingPolicyRef}" not in policies:
        return error("MissingRoutingPolicy",
                     f"spec.routingPolicyRef {spec.routingPolicyRef!r} names no RoutingPolicy in namespace "
                     f"{namespace}", "spec.routingPolicyRef")
    try:
        zone(spec.window.timeZone)
    except UnknownTimeZone as problem:
        return error("BadTimeZone", f"spec.window.timeZone: {problem}", "spec.window.timeZone")
    return None


def _budget_entry(budget: api.Budget) -> BudgetEntry:
    spec = budget.spec
    return BudgetEntry(
        id=budget.ref(),
        costCenter=spec.costCenter,
        scope=ScopeEntry(kind=spec.scope.kind, name=spec.scope.name),
        limitUSD=spec.limitUSD,
        window=WindowEntry(period=spec.window.period, timeZone=spec.window.timeZone),
        thresholds=ThresholdEntry(**spec.thresholds.model_dump()),
        enforcement=spec.enforcement,
        routingPolicy=f"{budget.metadata.namespace}/{spec.routingPolicyRef}" if spec.routingPolicyRef else None,
        generation=budget.metadata.generation,
    )


def _policy(policy: api.RoutingPolicy) -> RoutingPolicyEntry:
    rules = [
        RuleEntry(
            name=rule.name,
            stateAtLeast=rule.when.stateAtLeast,
            remainingUSDBelow=rule.when.remainingUSDBelow,
            inputTokensBelow=rule.when.inputTokensBelow,
            stepDown=rule.then.stepDown,
            useModel=rule.then.useModel,
        )
        for rule in policy.spec.rules
    ]
    return RoutingPolicyEntry(id=policy.ref(), cascade=list(policy.spec.cascade), rules=rules)


def _keys(keys: Iterable[KeyEntry], valid_cost_centers: set[str], errors: list[PolicyError]) -> list[KeyEntry]:
    """Keys whose name or hash is not unique are all refused: an ambiguous identity fails closed.
    A rotated-out key (one with `expiresAt`) shares its name with its successor, and must agree with
    it on the owner."""
    items = list(keys)
    names = Counter(key.name for key in items if key.expiresAt is None)
    owners = {name: {(k.developer, k.costCenter) for k in items if k.name == name} for name in {k.name for k in items}}
    hashes = Counter(key.hash for key in items)
    entries = []
    for key in sorted(items, key=lambda k: (k.name, k.hash)):
        if key.costCenter not in valid_cost_centers:
            errors.append(PolicyError("VirtualKey", None, key.name, "UnknownCostCenter",
                                      f"costCenter {key.costCenter!r} names no valid CostCenter", "costCenter"))
        elif names[key.name] > 1 or hashes[key.hash] > 1 or len(owners[key.name]) > 1:
            errors.append(PolicyError("VirtualKey", None, key.name, "DuplicateKey",
                                      "another virtual key has the same name or the same key", "name"))
        else:
            entries.append(key)
    return sorted(entries, key=lambda k: k.hash)
