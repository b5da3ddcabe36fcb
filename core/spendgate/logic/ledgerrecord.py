"""One ledger line as a typed record: what every offline tool (dry-run, chargeback, reconciliation)
reads. Schema: docs/ledger.md; the writer is spendgate.proxy.ledger.record.

`parse_record` checks every field a reader relies on and raises LedgerLineError naming the field
and what is wrong, so a bad line is reported, never half-read: money is a Decimal from its exact
string (a JSON number is refused, it would lose cents), times are aware UTC datetimes, tokens are
non-negative integers. `parse_line` reads a line's bytes: a line as the writers write it in one
pass (msgspec), anything else through `parse_record`, with the same result either way.
`record_line` is the inverse, for writers of ledgers (the synthetic ledger): parse then write gives
back the same JSON object.

Versions read: spendgate.io/ledger/v1 and v2 (v2 adds `requestBytes`, the request body's size,
from which the enforcement step estimates input tokens, and `exchangeId`, the gateway's own id of
the request; on v1 lines both are None).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Final, NamedTuple

import msgspec
import orjson

from spendgate.logic.pricing import Tokens
from spendgate.logic.spend import exact

LEDGER_V1: Final = "spendgate.io/ledger/v1"
LEDGER_V2: Final = "spendgate.io/ledger/v2"
LEDGER_SCHEMA: Final = LEDGER_V2  # the version the proxy writes
READABLE_VERSIONS: Final = (LEDGER_V1, LEDGER_V2)

ACTIONS: Final = frozenset({"forward", "reroute", "reject"})
OUTCOMES: Final = frozenset({"ok", "upstream_error", "upstream_failed", "client_disconnected", "rejected",
                             "proxy_error", "interrupted"})
# Exactly what spend.exact() writes: digits, an optional fraction, no sign, no exponent.
COST_PATTERN: Final = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?")
TOKEN_FIELDS: Final = (("input", "input"), ("cacheWrite5m", "cache_write_5m"), ("cacheWrite1h", "cache_write_1h"),
                       ("cacheRead", "cache_read"), ("output", "output"), ("webSearches", "web_searches"))
# Tag and attribution fields: a string or null.
OPTIONAL_TEXT: Final = ("endpoint", "keyName", "developer", "costCenter", "repo", "branch", "session",
                        "sessionSource", "requestClass", "agentId", "requestedModel", "servedModel", "pricedModel",
                        "priceSource", "errorType")


class LedgerLineError(ValueError):
    """A ledger line that is not a valid record; the message names the field."""


@dataclass(frozen=True, slots=True)
class LedgerDecision:
    action: str  # forward, reroute, reject
    reason: str
    model: str | None  # the model a reroute sent upstream


PLAIN_FORWARD: Final = LedgerDecision("forward", "", None)  # what most lines record, shared by their records


class LedgerRecord(NamedTuple):
    """One ledger line, typed. A named tuple: immutable like a frozen dataclass, and built several times
    faster (a replay builds one per line, hundreds of thousands)."""

    schema_version: str
    time: datetime  # arrival, aware UTC
    request_id: str
    method: str
    path: str
    endpoint: str | None
    key_name: str | None
    developer: str | None
    cost_center: str | None
    repo: str | None
    branch: str | None
    session: str | None
    session_source: str | None
    request_class: str | None
    agent_id: str | None
    requested_model: str | None
    served_model: str | None
    priced_model: str | None
    price_source: str | None
    stream: bool
    tokens: Tokens | None  # None: no usage came back
    cost: Decimal
    status: int
    outcome: str
    error_type: str | None
    latency_ms: float | None
    upstream_ms: float | None
    added_ms: float | None
    decision: LedgerDecision
    flags: tuple[str, ...]
    bundle_version: str
    request_bytes: int | None = None  # v2; None on v1 lines and when the body was never read
    exchange_id: str | None = None  # v2: the gateway's own id, shared with its spend journal lines

    @property
    def budgeted(self) -> bool:
        """Admission decided on it: a /v1/messages request from a known key (the only budgeted kind)."""
        return self.endpoint == "messages" and self.developer is not None and self.requested_model is not None

    @property
    def admitted(self) -> bool:
        return self.decision.action != "reject"

    @property
    def rate_limited(self) -> bool:
        """Refused by a rate limit: not a budget's decision, and the client sends it again."""
        return not self.admitted and self.error_type == "rate_limit_error"

    @property
    def charged(self) -> bool:
        """Its cost counted against budgets: an admitted, budgeted request whose usage came back."""
        return self.budgeted and self.admitted and self.tokens is not None and self.outcome != "proxy_error"

    @property
    def forwarded_model(self) -> str | None:
        """The model admission sent upstream: the reroute's, else the requested one."""
        if not self.admitted:
            return None
        return self.decision.model if self.decision.action == "reroute" else self.requested_model


def parse_line(raw: bytes) -> LedgerRecord:
    """A ledger line as written (JSON) as a record. LedgerLineError names what is wrong; a line that is not
    JSON raises orjson.JSONDecodeError.

    A line as the proxy writes it is decoded and type-checked in one pass, straight into typed values
    (msgspec, against `_Line`: every field present, no unknown one, exact JSON types, counts in range);
    anything unusual is read again field by field by parse_record, which gives the same record or the
    error that names the field. Most of a replay's reading time is spent here."""
    try:
        record = _record_of(_LINE_DECODER.decode(raw))
    except msgspec.MsgspecError:
        record = None
    return record or parse_record(orjson.loads(raw))


def parse_record(data: Any) -> LedgerRecord:
    """A decoded ledger line (a JSON object) as a record, checked field by field; LedgerLineError names
    the first field that is wrong."""
    if not isinstance(data, dict):
        raise LedgerLineError(f"a ledger line must be a JSON object, got {_kind(data)}")
    version = data.get("schemaVersion")
    if version not in READABLE_VERSIONS:
        raise LedgerLineError(f"schemaVersion: {version!r} is not one this spendgate reads "
                              f"({', '.join(READABLE_VERSIONS)}); a newer spendgate may read it")
    texts = {name: _optional_text(data, name) for name in OPTIONAL_TEXT}
    return LedgerRecord(
        schema_version=version,
        time=_time(data),
        request_id=_text(data, "requestId"),
        method=_text(data, "method"),
        path=_text(data, "path"),
        endpoint=texts["endpoint"],
        key_name=texts["keyName"],
        developer=texts["developer"],
        cost_center=texts["costCenter"],
        repo=texts["repo"],
        branch=texts["branch"],
        session=texts["session"],
        session_source=texts["sessionSource"],
        request_class=texts["requestClass"],
        agent_id=texts["agentId"],
        requested_model=texts["requestedModel"],
        served_model=texts["servedModel"],
        priced_model=texts["pricedModel"],
        price_source=texts["priceSource"],
        stream=_bool(data, "stream"),
        tokens=_tokens(data),
        cost=_cost(data),
        status=_int(data, "status"),
        outcome=_choice(data, "outcome", OUTCOMES),
        error_type=texts["errorType"],
        latency_ms=_milliseconds(data, "latencyMs"),
        upstream_ms=_milliseconds(data, "upstreamMs"),
        added_ms=_milliseconds(data, "addedMs"),
        decision=_decision(data),
        flags=_flags(data),
        bundle_version=_text(data, "bundleVersion", empty_ok=True),
        request_bytes=_request_bytes(data, version),
        exchange_id=_optional_text(data, "exchangeId") if version != LEDGER_V1 else None,
    )


def record_line(record: LedgerRecord) -> dict[str, Any]:
    """The JSON object of a record, field for field as the proxy writes it (time stays a datetime:
    serialise with orjson's OPT_UTC_Z, as the proxy does)."""
    tokens = record.tokens
    line: dict[str, Any] = {
        "schemaVersion": record.schema_version, "time": record.time, "requestId": record.request_id,
        "method": record.method, "path": record.path, "endpoint": record.endpoint, "keyName": record.key_name,
        "developer": record.developer, "costCenter": record.cost_center, "repo": record.repo,
        "branch": record.branch, "session": record.session, "sessionSource": record.session_source,
        "requestClass": record.request_class, "agentId": record.agent_id,
        "requestedModel": record.requested_model, "servedModel": record.served_model,
        "pricedModel": record.priced_model, "priceSource": record.price_source, "stream": record.stream,
        "tokens": {key: getattr(tokens, attribute) for key, attribute in TOKEN_FIELDS} if tokens else None,
        "costUSD": exact(record.cost), "status": record.status, "outcome": record.outcome,
        "errorType": record.error_type, "latencyMs": record.latency_ms, "upstreamMs": record.upstream_ms,
        "addedMs": record.added_ms,
        "decision": {"action": record.decision.action, "reason": record.decision.reason,
                     "model": record.decision.model},
        "flags": list(record.flags), "bundleVersion": record.bundle_version,
    }
    if record.schema_version != LEDGER_V1:
        line["requestBytes"] = record.request_bytes
        line["exchangeId"] = record.exchange_id
    return line


# the one-pass reading ----------------------------------------------------------------------------

# Counts up to 2^63 - 1 (msgspec's bound; orjson reads integers past 2^64 - 1 as floats, which parse_record
# refuses): a larger one goes to the careful reader, which takes what orjson gives it.
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Milliseconds = Count | Annotated[float, msgspec.Meta(ge=0)] | None


class _TokensLine(msgspec.Struct, forbid_unknown_fields=True, rename={name: key for key, name in TOKEN_FIELDS}):
    input: Count
    cache_write_5m: Count
    cache_write_1h: Count
    cache_read: Count
    output: Count
    web_searches: Count


class _DecisionLine(msgspec.Struct, forbid_unknown_fields=True):
    action: str
    reason: str
    model: str | None


class _Line(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """A line as the writers write it (record_line); the types msgspec checks while decoding."""

    schema_version: str
    time: str
    request_id: Annotated[str, msgspec.Meta(min_length=1)]
    method: Annotated[str, msgspec.Meta(min_length=1)]
    path: Annotated[str, msgspec.Meta(min_length=1)]
    endpoint: str | None
    key_name: str | None
    developer: str | None
    cost_center: str | None
    repo: str | None
    branch: str | None
    session: str | None
    session_source: str | None
    request_class: str | None
    agent_id: str | None
    requested_model: str | None
    served_model: str | None
    priced_model: str | None
    price_source: str | None
    stream: bool
    tokens: _TokensLine | None
    cost_usd: str = msgspec.field(name="costUSD")  # no default: required, like every field but the last two
    status: Count
    outcome: str
    error_type: str | None
    latency_ms: Milliseconds
    upstream_ms: Milliseconds
    added_ms: Milliseconds
    decision: _DecisionLine
    flags: list[str]
    bundle_version: str
    request_bytes: Count | msgspec.UnsetType | None = msgspec.UNSET  # v2 only, like exchangeId
    exchange_id: str | msgspec.UnsetType | None = msgspec.UNSET


_LINE_DECODER: Final = msgspec.json.Decoder(_Line)


def _record_of(line: _Line) -> LedgerRecord | None:
    """The record of a decoded line, or None where the careful reader must look (what msgspec's types
    do not say: the version's fields, the time, the cost's form, the decision's rules)."""
    version, request_bytes, exchange_id = line.schema_version, line.request_bytes, line.exchange_id
    if version == LEDGER_V2:
        if request_bytes is msgspec.UNSET or exchange_id is msgspec.UNSET:
            return None
    elif version != LEDGER_V1 or request_bytes is not msgspec.UNSET or exchange_id is not msgspec.UNSET:
        return None
    time, decision, usage = _usual_time(line.time), _usual_decision(line.decision), line.tokens
    if time is None or decision is None or line.outcome not in OUTCOMES:
        return None
    if COST_PATTERN.fullmatch(line.cost_usd) is None:
        return None
    tokens = None if usage is None else Tokens(usage.input, usage.cache_write_5m, usage.cache_write_1h,
                                                usage.cache_read, usage.output, usage.web_searches)
    return LedgerRecord(
        version, time, line.request_id, line.method, line.path, line.endpoint, line.key_name, line.developer,
        line.cost_center, line.repo, line.branch, line.session, line.session_source, line.request_class,
        line.agent_id, line.requested_model, line.served_model, line.priced_model, line.price_source, line.stream,
        tokens, Decimal(line.cost_usd), line.status, line.outcome, line.error_type, line.latency_ms, line.upstream_ms,
        line.added_ms, decision, tuple(line.flags), line.bundle_version,
        None if request_bytes is msgspec.UNSET else request_bytes,
        None if exchange_id is msgspec.UNSET else exchange_id)


def _usual_decision(value: _DecisionLine) -> LedgerDecision | None:
    action, reason, model = value.action, value.reason, value.model
    if action == "forward" and not reason and model is None:
        return PLAIN_FORWARD  # most lines
    if action == "reroute":
        return LedgerDecision(action, reason, model) if model else None
    return LedgerDecision(action, reason, None) if model is None and action in ACTIONS else None


def _usual_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


# field readers ---------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "a list" if isinstance(value, list) else "an object"


def _field(data: Mapping[str, Any], name: str) -> Any:
    try:
        return data[name]
    except KeyError:
        raise LedgerLineError(f"{name}: missing (every field is present on every line, null when it does not apply)"
                              ) from None


def _text(data: Mapping[str, Any], name: str, empty_ok: bool = False) -> str:
    value = _field(data, name)
    if not isinstance(value, str) or not (value or empty_ok):
        raise LedgerLineError(f"{name}: must be a non-empty string, got {_kind(value)}")
    return value


def _optional_text(data: Mapping[str, Any], name: str) -> str | None:
    value = _field(data, name)
    if value is not None and not isinstance(value, str):
        raise LedgerLineError(f"{name}: must be a string or null, got {_kind(value)}")
    return value


def _choice(data: Mapping[str, Any], name: str, allowed: frozenset[str], label: str | None = None) -> str:
    value = _field(data, name)
    if not isinstance(value, str) or value not in allowed:
        raise LedgerLineError(f"{label or name}: must be one of {', '.join(sorted(allowed))}, got {_kind(value)}")
    return str(value)


def _bool(data: Mapping[str, Any], name: str) -> bool:
    value = _field(data, name)
    if not isinstance(value, bool):
        raise LedgerLineError(f"{name}: must be true or false, got {_kind(value)}")
    return value


def _count(value: Any, name: str) -> int:
    if type(value) is not int or value < 0:
        raise LedgerLineError(f"{name}: must be a non-negative integer, got {_kind(value)}")
    return value


def _int(data: Mapping[str, Any], name: str) -> int:
    return _count(_field(data, name), name)


def _time(data: Mapping[str, Any]) -> datetime:
    value = _field(data, "time")
    if not isinstance(value, str):
        raise LedgerLineError(f"time: must be an RFC 3339 string, got {_kind(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise LedgerLineError(f"time: {value[:40]!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise LedgerLineError(f"time: {value!r} has no UTC offset (the proxy writes UTC with a Z)")
    return parsed.astimezone(UTC)


def _cost(data: Mapping[str, Any]) -> Decimal:
    value = _field(data, "costUSD")
    if not isinstance(value, str):
        raise LedgerLineError(f"costUSD: must be a decimal string such as \"0.0125\", got {_kind(value)}"
                              + (" (a JSON number would lose cents)" if isinstance(value, float | int) else ""))
    if COST_PATTERN.fullmatch(value) is None:
        raise LedgerLineError(f"costUSD: {value[:40]!r} is not a non-negative decimal such as \"0.0125\"")
    return Decimal(value)


def _milliseconds(data: Mapping[str, Any], name: str) -> float | None:
    value = _field(data, name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise LedgerLineError(f"{name}: must be a non-negative number of milliseconds or null, got {_kind(value)}")
    return value


def _tokens(data: Mapping[str, Any]) -> Tokens | None:
    value = _field(data, "tokens")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise LedgerLineError(f"tokens: must be an object or null, got {_kind(value)}")
    counts = {}
    for key, attribute in TOKEN_FIELDS:
        if key not in value:
            raise LedgerLineError(f"tokens.{key}: missing")
        counts[attribute] = _count(value[key], f"tokens.{key}")
    return Tokens(**counts)


def _decision(data: Mapping[str, Any]) -> LedgerDecision:
    value = _field(data, "decision")
    if not isinstance(value, dict):
        raise LedgerLineError(f"decision: must be an object, got {_kind(value)}")
    action = _choice(value, "action", ACTIONS, "decision.action") if "action" in value else None
    if action is None:
        raise LedgerLineError("decision.action: missing")
    reason = value.get("reason")
    if not isinstance(reason, str):
        raise LedgerLineError(f"decision.reason: must be a string, got {_kind(reason)}")
    model = value.get("model")
    if action == "reroute" and not (isinstance(model, str) and model):
        raise LedgerLineError(f"decision.model: a reroute must name its model, got {_kind(model)}")
    if action != "reroute" and model is not None:
        raise LedgerLineError(f"decision.model: only a reroute has a model, got {_kind(model)}")
    return LedgerDecision(action, reason, model)


def _flags(data: Mapping[str, Any]) -> tuple[str, ...]:
    value = _field(data, "flags")
    if not isinstance(value, list) or not all(isinstance(flag, str) for flag in value):
        raise LedgerLineError(f"flags: must be a list of strings, got {_kind(value)}")
    return tuple(value)


def _request_bytes(data: Mapping[str, Any], version: str) -> int | None:
    if version == LEDGER_V1:
        return None
    value = _field(data, "requestBytes")
    return None if value is None else _count(value, "requestBytes")
