"""The spendgate.io/v1alpha1 API types: the one source of truth for the CRDs in crds/.

The pydantic models below validate manifests in Python (standalone mode, the CLI, the operator)
and generate the CRD OpenAPI schemas (`spendgate crds generate`), so the two can never drift.
Rules that span several fields are CEL expressions (`x-kubernetes-validations`) so the API server
refuses bad objects at admission; spendgate.api.validation evaluates the very same expressions in
Python where no API server is involved (standalone mode, `spendgate validate`).

Money is a decimal string everywhere (`"25.00"`), never a float.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

GROUP = "spendgate.io"
VERSION = "v1alpha1"
API_VERSION: Final = "spendgate.io/v1alpha1"

# A non-negative amount of US dollars. Up to 12 decimal places, because one cached token of a
# small model costs $0.00000001 and reported spend must stay exact.
USD_PATTERN = r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,12})?$"
UsdAmount = Annotated[str, StringConstraints(pattern=USD_PATTERN, max_length=25)]
# Kubernetes object names (DNS-1123 subdomain).
DNS_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
ObjectName = Annotated[str, StringConstraints(pattern=DNS_NAME_PATTERN, max_length=253)]
ModelId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# IANA time zone names look like Area/Location (or UTC); the compiler checks the zone exists.
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$"


def _without_duplicates(values: list[str]) -> list[str]:
    duplicates = sorted({value for index, value in enumerate(values) if value in values[:index]})
    if duplicates:
        raise ValueError(f"must not contain duplicates: {', '.join(duplicates)}")
    return values


# A list of distinct strings. The API server checks it natively (a CEL rule would be quadratic in
# the list length and blow the CEL cost budget at a few thousand members); pydantic checks it here.
StringSet = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=200)]],
    AfterValidator(_without_duplicates),
    Field(json_schema_extra={"x-kubernetes-list-type": "set"}),
]


def rule(expression: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One CEL validation rule, with the message the user sees when it fails."""
    entry = {"rule": expression, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def _schema_with_cel_rules(schema: dict[str, Any], cls: type[Any]) -> None:
    """Put a type's CEL rules into its JSON schema, from where they reach the CRD."""
    schema.pop("additionalProperties", None)  # structural schemas allow properties or this, not both
    if getattr(cls, "cel_rules", None):
        schema["x-kubernetes-validations"] = list(cls.cel_rules)


class _Status(BaseModel):
    """Base of the status types: written by the operator, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_schema_with_cel_rules)


class _Spec(BaseModel):
    """Base of every spec and nested type: unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, frozen=True, json_schema_extra=_schema_with_cel_rules
    )
    # CEL rules for this object: enforced by the API server and by spendgate.api.validation.
    cel_rules: ClassVar[list[dict[str, str]]] = []


# ---------------------------------------------------------------------------------------------
# Shared status types (Kubernetes API conventions)
# ---------------------------------------------------------------------------------------------


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Status):
    """metav1.Condition."""

    type: str = Field(max_length=316, description="Condition type in CamelCase, e.g. Ready.")
    status: ConditionStatus
    reason: str = Field(max_length=1024, description="CamelCase machine-readable reason.")
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    observedGeneration: int = Field(default=0, ge=0)
    lastTransitionTime: str = Field(description="RFC 3339 time of the last status change.")


class ProvenanceChange(_Status):
    """One spec in the provenance history: which revision brought it, and when it was applied."""

    specDigest: str = Field(description="sha256 of the spec's canonical JSON.")
    generation: int = Field(ge=0)
    revision: str | None = Field(default=None, description="Git revision that introduced this spec.")
    firstApplied: str = Field(description="When the operator first saw this spec (RFC 3339).")
    lastApplied: str = Field(description="When a sync last re-applied it, e.g. from a later revision.")
    lastRevision: str | None = Field(default=None, description="The latest revision that re-applied it.")
    by: str | None = Field(default=None, description="The field manager that wrote the spec.")
    breakGlass: bool = Field(default=False, description="Written by a break-glass user, not by GitOps.")


class Provenance(_Status):
    """Where the spec in force came from, and its recent changes (not Budget's status.history of spend windows)."""

    trackingId: str | None = Field(default=None, description="Argo CD's argocd.argoproj.io/tracking-id.")
    application: str | None = Field(default=None, description="The Argo CD Application that syncs this object.")
    revision: str | None = Field(default=None, description="Git revision of the spec in force.")
    specDigest: str | None = None
    breakGlass: str | None = Field(default=None, description="The last spendgate.io/break-glass annotation seen.")
    changes: list[ProvenanceChange] = Field(default_factory=list, max_length=5, description="Newest first.")


# ---------------------------------------------------------------------------------------------
# CostCenter (cluster-scoped)
# ---------------------------------------------------------------------------------------------


class Owner(_Spec):
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")


class AlertTargetType(StrEnum):
    SLACK = "Slack"
    WEBHOOK = "Webhook"
    PAGERDUTY = "PagerDuty"


class SecretKeyRef(_Spec):
    namespace: ObjectName
    name: ObjectName
    key: str = Field(default="url", min_length=1, max_length=253)


class AlertTarget(_Spec):
    """Where threshold alerts go. The URL (or routing key) lives in a Secret, never in the spec."""

    name: str = Field(min_length=1, max_length=63)
    type: AlertTargetType
    secretRef: SecretKeyRef


class RateLimit(_Spec):
    """How much may be sent per minute (any 60 seconds); each count is optional, one at least."""

    # strict: a quoted number is refused here as the API server refuses it
    requestsPerMinute: int | None = Field(default=None, ge=1, le=10**7, strict=True, description="Messages requests.")
    inputTokensPerMinute: int | None = Field(
        default=None, ge=1, le=10**12, strict=True,
        description="Uncached input tokens (input plus cache writes; cache reads do not count, as at Anthropic).")
    outputTokensPerMinute: int | None = Field(default=None, ge=1, le=10**12, strict=True)

    cel_rules: ClassVar[list[dict[str, str]]] = [
        rule("has(self.requestsPerMinute) || has(self.inputTokensPerMinute) || has(self.outputTokensPerMinute)",
             "a rate limit must set at least one of requestsPerMinute, inputTokensPerMinute, outputTokensPerMinute"),
    ]


class RateLimits(_Spec):
    """Per-minute limits for the cost center's requests and those of the cost centers below it: each
    virtual key's, each developer's (all their keys together), and all of them together."""

    perVirtualKey: RateLimit | None = Field(default=None, description="Each virtual key's requests.")
    perDeveloper: RateLimit | None = Field(default=None, description="Each developer's requests, all their keys "
                                                                      "together.")
    total: RateLimit | None = Field(default=None, description="All requests of the cost center and those below it.")

    cel_rules: ClassVar[list[dict[str, str]]] = [
        rule("has(self.perVirtualKey) || has(self.perDeveloper) || has(self.total)",
             "rateLimits must set at least one of perVirtualKey, perDeveloper, total"),
    ]


class CostCenterSpec(_Spec):
    code: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
        description="The finance cost-center code used in chargeback exports.",
    )
    displayName: str = Field(default="", max_length=200)
    owners: list[Owner] = Field(default_factory=list, max_length=50)
    parent: ObjectName | None = Field(default=None, description="Parent CostCenter name (rollup).")
    # Lists read by CEL rules default to [] in the CRD too: CEL cannot read an absent list.
    alertTargets: list[AlertTarget] = Field(default_factory=list, max_length=20, json_schema_extra={"default": []})
    members: StringSet = Field(
        default_factory=list, max_length=5000, description="Developers who belong to this cost center."
    )
    requireRepositoryTag: bool = Field(
        default=False,
        description="Refuse requests without the x-spendgate-repo tag from keys of this cost center and the cost "
                    "centers below it, so nobody steps around a Repository budget by omitting the tag.",
    )

    rateLimits: RateLimits | None = Field(
        default=None,
        description="Requests and tokens per minute, per virtual key, per developer and in total; over a limit the "
                    "gateway answers 429 rate_limit_error with retry-after, which clients back off on and retry.",
    )

    cel_rules: ClassVar[list[dict[str, str]]] = [
        rule("self.alertTargets.all(t, self.alertTargets.exists_one(u, u.name == t.name))",
             "alertTargets names must be unique", ".alertTargets"),
    ]


class CostCenterStatus(_Status):
    observedGeneration: int = 0
    conditions: list[Condition] = Field(default_factory=list)
    spentUSD: UsdAmount | None = Field(default=None, description="This window's spend of all budgets below.")
    spentUSDRounded: UsdAmount | None = Field(default=None, description="spentUSD to the cent, for kubectl get.")
    budgets: int = Field(default=0, ge=0, description="Budgets of this cost center and its children.")
    children: list[str] = Field(default_factory=list)
    provenance: Provenance | None = None


# ---------------------------------------------------------------------------------------------
# Budget (namespaced)
# ---------------------------------------------------------------------------------------------


class ScopeKind(StrEnum):
    COST_CENTER = "CostCenter"
    DEVELOPER = "Developer"
    REPOSITORY = "Repository"
    VIRTUAL_KEY = "VirtualKey"


class BudgetScope(_Spec):
    """Exactly one thing the budget caps: the whole cost center, or one developer/repo/key in it."""

    kind: ScopeKind
    name: str | None = Field(
        default=None, min_length=1, max_length=253,
        description="Developer, repository (org/repo) or virtual-key name; empty for CostCenter.",
    )

    cel_rules: ClassVar[list[dict[str, str]]] = [
        rule("self.kind == 'CostCenter' ? !has(self.name) : has(self.name)",
             "scope.name is required for kind Developer, Repository and VirtualKey, "
             "and must be omitted for kind CostCenter", ".name"),
    ]


class Period(StrEnum):
    DAILY = "Daily"
    WEEKLY = "Weekly"
    MONTHLY = "Monthly"


class BudgetWindow(_Spec):
    period: Period
    timeZone: str = Field(default="UTC", max_length=64, pattern=TIME_ZONE_PATTERN,
                          description="IANA time zone the window boundaries follow.")


class Thresholds(_Spec):
    alertPercent: int = Field(default=80, ge=1, le=1000)
    downgradePercent: int = Field(default=95, ge=1, le=1000)
    pausePercent: int = Field(default=110, ge=1, le=1000)

    cel_rules: ClassVar[list[dict[str, str]]] = [
        rule("self.alertPercent < self.downgradePercent",
             "thresholds.alertPercent must be below thresholds.downgradePercent", ".alertPercent"),
        rule("self.downgradePercent < self.pausePercent",
             "thresholds.downgradePercent must be below thresholds.pausePercent", ".downgradePercent"),
    ]


class Enforcement(StrEnum):
    ENFORCE = "Enforce"
    DRY_RUN = "DryRun"


class BudgetSpec(_Spec):
    costCenter: ObjectName = Field(description="Name of the CostCenter this budget belongs to.")
    scope: BudgetScope
    limitUSD: UsdAmount = Field(description='Dollar limit per window as a decimal string, e.g. "250.00".')
    window: BudgetWindow
    thresholds: Thresholds = Field(
        default_factory=Thresholds,
        json_schema_extra={"default": {"alertPercent": 80, "downgradePercent": 95, "pausePercent": 110}},
    )
    enforcement: Enforcement = Enforcement.ENFORCE
    routingPolicyRef: ObjectName | None = Field(
        default=None, description="RoutingPolicy in the same namespace; the default cascade if empty."
    )

    cel_rules: ClassVar[list[dict[str, str]]] = [
        rule("self.limitUSD.matches('[1-9]')", "limitUSD must be greater than zero", ".limitUSD"),
    ]


class BudgetState(StrEnum):
    OK = "Ok"
    ALERT = "Alert"
    DOWNGRADE = "Downgrade"
    PAUSED = "Paused"


class ClosedWindow(_Status):
    window: str | None = Field(default=None, description="Window id, e.g. 2026-11-24, 2026-W48, 2026-11.")
    windowStart: str
    windowEnd: str
    spentUSD: UsdAmount
    peakState: BudgetState


class AlertRecord(_Status):
    window: str
    threshold: BudgetState
    sentAt: str
    outcome: str = Field(description="Delivered, or Failed with the reason.")


class BudgetStatus(_Status):
    observedGeneration: int = 0
    conditions: list[Condition] = Field(default_factory=list)
    scope: str | None = Field(default=None, description="The scope in one word, for kubectl get.")
    spentUSD: UsdAmount | None = Field(default=None, description="This window's spend, exact.")
    spentUSDRounded: UsdAmount | None = Field(default=None, description="spentUSD to the cent, for kubectl get.")
    remainingUSD: str | None = Field(default=None, description="May be negative once over the limit.")
    percentUsed: str | None = Field(default=None, description='e.g. "42.5%"')
    state: BudgetState | None = None
    window: str | None = Field(default=None, description="Id of the current window: the key proxies report under.")
    windowStart: str | None = None
    windowEnd: str | None = Field(default=None, description="When the window resets (RFC 3339).")
    lastReportTime: str | None = None
    reportingProxies: int = Field(default=0, ge=0)
    history: list[ClosedWindow] = Field(default_factory=list, max_length=12)
    alerts: list[AlertRecord] = Field(default_factory=list, max_length=50)
    provenance: Provenance | None = None


# ---------------------------------------------------------------------------------------------
# RoutingPolicy (namespaced)
# ---------------------------------------------------------------------------------------------


class RuleCondition(_Spec):
    """All the conditions given must hold for the rule to apply."""

    stateAtLeast: BudgetState | None = None
    remainingUSDBelow: UsdAmount | None = None
    inputTokensBelow: int | None = Field(default=None, ge=1)

    cel_rules: ClassVar[list[dict[str, str]]] = [
        rule("has(self.stateAtLeast) || has(self.remainingUSDBelow) || has(self.inputTokensBelow)",
             "when must set at least one of stateAtLeast, remainingUSDBelow, inputTokensBelow"),
    ]


class RuleAction(_Spec):
    """Either step down the cascade or go to one model; a rule never upgrades a request."""

    stepDown: int | None = Field(default=None, ge=1, le=10)
    useModel: ModelId | None = None

    cel_rules: ClassVar[list[dict[str, str]]] = [
        rule("has(self.stepDown) != has(self.useModel)", "then must set exactly one of stepDown, useModel"),
    ]


class RoutingRule(_Spec):
    name: str = Field(min_length=1, max_length=63)
    when: RuleCondition
    then: RuleAction


class RoutingPolicySpec(_Spec):
    cascade: list[ModelId] = Field(
        min_length=1, max_length=20, description="Models from most to least capable, e.g. Opus, Sonnet, Haiku."
    )
    rules: list[RoutingRule] = Field(default_factory=list, max_length=50, json_schema_extra={"default": []})

    cel_rules: ClassVar[list[dict[str, str]]] = [
        rule("self.cascade.all(m, self.cascade.exists_one(n, n == m))",
             "cascade must not list a model twice", ".cascade"),
        rule("self.rules.all(r, !has(r.then.useModel) || r.then.useModel in self.cascade)",
             "rules[].then.useModel must be one of the cascade's models", ".rules"),
        rule("self.rules.all(r, self.rules.exists_one(s, s.name == r.name))",
             "rules names must be unique", ".rules"),
    ]


class RoutingPolicyStatus(_Status):
    observedGeneration: int = 0
    conditions: list[Condition] = Field(default_factory=list)
    provenance: Provenance | None = None


# ---------------------------------------------------------------------------------------------
# SpendReport (namespaced, internal): one per proxy, cumulative spend per (budget, window)
# ---------------------------------------------------------------------------------------------


class SpendEntry(_Spec):
    budget: str = Field(min_length=3, max_length=507, description="namespace/name of the Budget.")
    window: str = Field(min_length=1, max_length=64, description="Window id, e.g. 2026-11-24.")
    spentUSD: UsdAmount = Field(description="Cumulative spend of this proxy in this window.")
    requests: int = Field(default=0, ge=0)


class SpendReportSpec(_Spec):
    proxy: str = Field(min_length=1, max_length=253, description="The reporting proxy's identity.")
    entries: list[SpendEntry] = Field(default_factory=list, max_length=10000)
    sequence: int = Field(default=0, ge=0, description="Increases with every report the proxy sends.")
    reportedAt: str | None = None
    stopped: bool = Field(default=False, description="The proxy's last report before it shut down cleanly: "
                                                     "its silence from then on is expected.")


# ---------------------------------------------------------------------------------------------
# FleetSpend (namespaced, operator-owned): the fleet's spend of a shard of a cost center's budgets
# ---------------------------------------------------------------------------------------------


class FleetSpendEntry(_Spec):
    budget: ObjectName = Field(description="A Budget in this namespace.")
    window: str = Field(min_length=1, max_length=64, description="Window id, e.g. 2026-11-24.")
    spentUSD: UsdAmount = Field(description="The fleet's spend in this window: every proxy's latest report, summed.")


class FleetSpendSpec(_Spec):
    costCenter: ObjectName = Field(description="The CostCenter of these budgets.")
    asOf: str | None = Field(
        default=None, description="reportedAt of the newest SpendReport folded into these figures: the fleet's "
                                  "spend as of about this instant (RFC 3339).")
    reportIntervalSeconds: float | None = Field(
        default=None, ge=1, le=10, description="How often the proxies report (at most), so that the fleet's reports "
                                               "stay within the API server's write budget; 1 when absent.")
    budgets: list[FleetSpendEntry] = Field(
        default_factory=list, max_length=10000, json_schema_extra={"x-kubernetes-list-type": "atomic"})


# ---------------------------------------------------------------------------------------------
# AuditLog (namespaced, operator-owned): the checkpoints of the tamper-evident audit log
# ---------------------------------------------------------------------------------------------


class AuditLogSpec(_Spec):
    """The operator owns the log; there is nothing to configure."""


class AuditCheckpoint(_Status):
    records: int = Field(ge=0, description="How many records the log held.")
    head: str = Field(description="The hash of the last of them.")
    time: str


class AuditLogStatus(_Status):
    records: int = Field(default=0, ge=0)
    head: str | None = Field(default=None, description="Hash of the newest record.")
    lastAppend: str | None = None
    segments: int = Field(default=0, ge=0, description="ConfigMaps holding the records.")
    checkpoints: list[AuditCheckpoint] = Field(default_factory=list, max_length=10, description="Newest first.")


# ---------------------------------------------------------------------------------------------
# PolicyWriters (cluster-scoped): the parameters of the GitOps-only admission policy
# ---------------------------------------------------------------------------------------------


class PolicyWritersSpec(_Spec):
    """Who may write policy specs; read by the chart's ValidatingAdmissionPolicy (docs/gitops-admission.md)."""

    policyRepository: str = Field(min_length=1, max_length=500, description="Where policy changes go instead.")
    gitopsUsers: StringSet = Field(default_factory=list, max_length=50, json_schema_extra={"default": []},
                                   description="May create, update and delete: the GitOps sync identities.")
    gitopsGroups: StringSet = Field(default_factory=list, max_length=50, json_schema_extra={"default": []})
    controllerUsers: StringSet = Field(
        default_factory=list, max_length=50, json_schema_extra={"default": []},
        description="May change metadata, never a spec, and delete in a terminating namespace.")
    breakGlassGroups: StringSet = Field(
        default_factory=list, max_length=50, json_schema_extra={"default": []},
        description="May write anything, with a spendgate.io/break-glass annotation, audited.")


# ---------------------------------------------------------------------------------------------
# Whole objects
# ---------------------------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The part of metav1.ObjectMeta that the compiler reads."""

    model_config = ConfigDict(extra="allow")
    name: ObjectName
    namespace: str | None = None
    generation: int | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


class _Object(BaseModel):
    model_config = ConfigDict(extra="allow")
    apiVersion: Literal["spendgate.io/v1alpha1"] = API_VERSION
    metadata: ObjectMeta

    def ref(self) -> str:
        """namespace/name, or name for cluster-scoped objects."""
        if self.metadata.namespace:
            return f"{self.metadata.namespace}/{self.metadata.name}"
        return self.metadata.name


class CostCenter(_Object):
    """A finance cost center: its code, owners, parent, alert targets and member developers."""

    kind: Literal["CostCenter"] = "CostCenter"
    spec: CostCenterSpec
    status: CostCenterStatus | None = None


class Budget(_Object):
    """A dollar limit per window for a cost center, developer, repository or virtual key."""

    kind: Literal["Budget"] = "Budget"
    spec: BudgetSpec
    status: BudgetStatus | None = None


class RoutingPolicy(_Object):
    """The model cascade and the budget-aware routing rules a Budget applies."""

    kind: Literal["RoutingPolicy"] = "RoutingPolicy"
    spec: RoutingPolicySpec
    status: RoutingPolicyStatus | None = None


class SpendReport(_Object):
    """Internal: one proxy's cumulative spend per (budget, window), folded into Budget status."""

    kind: Literal["SpendReport"] = "SpendReport"
    spec: SpendReportSpec


class FleetSpend(_Object):
    """Internal: the fleet's spend of some of a cost center's budgets, which proxies enforce on."""

    kind: Literal["FleetSpend"] = "FleetSpend"
    spec: FleetSpendSpec


class AuditLog(_Object):
    """The operator's tamper-evident audit log: its records live in ConfigMaps, its checkpoints here."""

    kind: Literal["AuditLog"] = "AuditLog"
    spec: AuditLogSpec = Field(default_factory=AuditLogSpec)
    status: AuditLogStatus | None = None


class PolicyWriters(_Object):
    """Who may change spendgate policy: the parameters of the GitOps-only admission policy."""

    kind: Literal["PolicyWriters"] = "PolicyWriters"
    spec: PolicyWritersSpec


PolicyObject = CostCenter | Budget | RoutingPolicy


def as_json(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)
