"""The policy bundle: what the compiler produces and every proxy loads.

One JSON document, versioned by `schemaVersion`, identified by the SHA-256 of its canonical
bytes. It holds no secrets: virtual keys appear only as SHA-256 hashes of the key. Money is a
decimal string. docs/bundle.md documents every field; `Bundle.model_json_schema()` is the
machine-readable schema (`spendgate bundle schema`).

Deterministic by construction: collections are sorted by their keys before serialisation, and
`canonical_json` sorts object keys, so the same policies always give the same bytes and hash.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from spendgate.api.v1alpha1 import (
    BudgetState,
    Enforcement,
    Period,
    ScopeKind,
    UsdAmount,
)

SCHEMA_VERSION: Final = "spendgate.io/bundle/v1"
RFC3339_UTC: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"

# Used when a Budget has no RoutingPolicy: one step down this list at the Downgrade state.
DEFAULT_CASCADE = ("claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitEntry(_Frozen):
    """Per minute; None: not limited."""

    requestsPerMinute: int | None = None
    inputTokensPerMinute: int | None = None
    outputTokensPerMinute: int | None = None


class RateLimitsEntry(_Frozen):
    perVirtualKey: RateLimitEntry | None = None
    perDeveloper: RateLimitEntry | None = None
    total: RateLimitEntry | None = None


class CostCenterEntry(_Frozen):
    name: str
    code: str
    displayName: str = ""
    parent: str | None = None
    ancestors: list[str] = Field(default_factory=list, description="Parent first, root last.")
    members: list[str] = Field(default_factory=list)
    alertTargets: list[str] = Field(default_factory=list, description="Names only, for messages; URLs stay in Secrets.")
    requireRepositoryTag: bool = Field(default=False, description="Requests must carry the repository tag.")
    rateLimits: RateLimitsEntry | None = Field(default=None, description="Per minute, for this cost center and below.")

    @model_serializer(mode="wrap")
    def _without_no_rate_limits(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Written only when set, so bundles without rate limits keep their bytes and content hash (and
        proxies that predate the field read them)."""
        data: dict[str, Any] = handler(self)
        if data.get("rateLimits") is None:
            data.pop("rateLimits", None)
        return data


class WindowEntry(_Frozen):
    period: Period
    timeZone: str


class ThresholdEntry(_Frozen):
    alertPercent: int
    downgradePercent: int
    pausePercent: int


class ScopeEntry(_Frozen):
    kind: ScopeKind
    name: str | None = None


class BudgetEntry(_Frozen):
    id: str = Field(description="namespace/name of the Budget object.")
    costCenter: str
    scope: ScopeEntry
    limitUSD: UsdAmount
    window: WindowEntry
    thresholds: ThresholdEntry
    enforcement: Enforcement
    routingPolicy: str | None = Field(default=None, description="namespace/name, or the default cascade.")
    generation: int | None = None


class RuleEntry(_Frozen):
    name: str
    stateAtLeast: BudgetState | None = None
    remainingUSDBelow: UsdAmount | None = None
    inputTokensBelow: int | None = None
    stepDown: int | None = None
    useModel: str | None = None


class RoutingPolicyEntry(_Frozen):
    id: str
    cascade: list[str]
    rules: list[RuleEntry] = Field(default_factory=list)


class KeyEntry(_Frozen):
    """A virtual key, by the SHA-256 hex digest of its plaintext."""

    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    name: str
    developer: str
    costCenter: str
    revoked: bool = False
    expiresAt: str | None = Field(
        default=None, pattern=RFC3339_UTC,
        description="A rotated-out key is accepted until this instant (RFC 3339, UTC), then refused.")

    @model_serializer(mode="wrap")
    def _without_no_expiry(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A key that never expires is written as before `expiresAt` existed, so bundles without
        rotated keys keep their bytes (and content hash), and proxies that predate the field read them."""
        data: dict[str, Any] = handler(self)
        if data.get("expiresAt") is None:
            data.pop("expiresAt", None)
        return data

    def expiry(self) -> datetime | None:
        return datetime.fromisoformat(self.expiresAt) if self.expiresAt else None

    def expired(self, now: datetime) -> bool:
        expiry = self.expiry()
        return expiry is not None and now >= expiry


class ModelPrice(_Frozen):
    """USD per million tokens, as decimal strings. Overrides genai-prices for one model id."""

    inputMTok: UsdAmount
    outputMTok: UsdAmount
    cacheReadMTok: UsdAmount | None = Field(default=None, description="Default: 0.1 x input.")
    cacheWrite5mMTok: UsdAmount | None = Field(default=None, description="Default: 1.25 x input.")
    cacheWrite1hMTok: UsdAmount | None = Field(default=None, description="Default: 2 x input.")


# Anthropic's own gateway prices an unknown model id at $5/$25 so it is never free; so do we.
DEFAULT_FALLBACK_PRICE = ModelPrice(inputMTok="5", outputMTok="25")


class PricingEntry(_Frozen):
    overrides: dict[str, ModelPrice] = Field(default_factory=dict, description="Negotiated prices by model.")
    fallback: ModelPrice = DEFAULT_FALLBACK_PRICE


class Bundle(_Frozen):
    schemaVersion: Literal["spendgate.io/bundle/v1"] = SCHEMA_VERSION
    costCenters: list[CostCenterEntry] = Field(default_factory=list)
    budgets: list[BudgetEntry] = Field(default_factory=list)
    routingPolicies: list[RoutingPolicyEntry] = Field(default_factory=list)
    keys: list[KeyEntry] = Field(default_factory=list)
    pricing: PricingEntry = Field(default_factory=PricingEntry)
    defaultCascade: list[str] = Field(default_factory=lambda: list(DEFAULT_CASCADE))


class SignedBundle(_Frozen):
    """The bundle as written to a ConfigMap or file: its content hash alongside it."""

    contentHash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    bundle: Bundle

    @property
    def version(self) -> str:
        """Short, human-facing id of the bundle (shown in metrics, logs, readiness)."""
        return self.contentHash.removeprefix("sha256:")[:12]


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(bundle: Bundle) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(bundle.model_dump(mode="json"))).hexdigest()


def sign(bundle: Bundle) -> SignedBundle:
    return SignedBundle(contentHash=content_hash(bundle), bundle=bundle)


def dumps(signed: SignedBundle) -> bytes:
    """The bytes written to disk or a ConfigMap: canonical, so equal bundles are equal bytes."""
    return canonical_json(signed.model_dump(mode="json"))


class BundleError(ValueError):
    """A bundle document that must not replace the one in use; the message says why."""


def loads(data: bytes | str) -> SignedBundle:
    """Parse and verify a bundle document. Raises BundleError naming what is wrong."""
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"bundle is not valid JSON: {error}") from error
    except RecursionError:
        raise BundleError("bundle is not a bundle: JSON nested too deeply to read") from None
    if not isinstance(raw, dict):
        raise BundleError("bundle must be a JSON object with contentHash and bundle")
    version = raw.get("bundle", {}).get("schemaVersion") if isinstance(raw.get("bundle"), dict) else None
    if version != SCHEMA_VERSION:
        raise BundleError(f"bundle.schemaVersion is {version!r}; this proxy reads {SCHEMA_VERSION!r}")
    try:
        signed = SignedBundle.model_validate(raw)
    except ValueError as error:
        raise BundleError(f"bundle does not match the schema: {error}") from error
    actual = content_hash(signed.bundle)
    if actual != signed.contentHash:
        raise BundleError(f"bundle contentHash {signed.contentHash} does not match its content ({actual})")
    return signed
