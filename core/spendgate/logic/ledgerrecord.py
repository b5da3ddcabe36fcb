"""One ledger line as a typed record: what every offline tool (dry-run, chargeback, reconciliation)
reads. Schema: docs/ledger.md; the writer is spendgate.proxy.ledger.record.

`parse_record` checks every field a reader relies on and raises LedgerLineError naming the field
and what is wrong, so a bad line is reported, never half-read: money is a Decimal from its exact
string (a JSON number is refused, it would lose cents), times are aware UTC datetimes, tokens are
non-negative integers. `record_line` is the inverse, for writers of ledgers (the synthetic
ledger): parse then write gives back the same JSON object.

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
from typing import Any, Final, NamedTuple

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
# Tag and attribution fields: a string or null (errorType last: the record has it after the status).
OPTIONAL_TEXT: Final = ("endpoint", "keyName", "developer", "costCenter", "repo", "branch", "session",
                        "sessionSource", "requestClass", "agentId", "requestedModel", "servedModel", "pricedModel",
                        "priceSource", "errorType")
MILLISECONDS: Final = ("latencyMs", "upstreamMs", "addedMs")
# Every field of a line, by version: what the proxy writes (parse_record checks the set at once).
V1_FIELDS: Final = frozenset({"schemaVersion", "time", "requestId", "method", "path", *OPTIONAL_TEXT, "stream",
                              "tokens", "costUSD", "status", "outcome", *MILLISECONDS, "decision", "flags",
                              "bundleVersion"})
V2_FIELDS: Final = V1_FIELDS | {"requestBytes", "exchangeId"}
TOKEN_KEYS: Final = frozenset(key for key, _ in TOKEN_FIELDS)
DECISION_KEYS: Final = frozenset({"action", "reason", "model"})
TEXT_OR_NULL: Final = frozenset({str, type(None)})
NUMBER_OR_NULL: Final = frozenset({int, float, type(None)})


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
    def charged(self) -> bool:
        """Its cost counted against budgets: an admitted, budgeted request whose usage came back."""
        return self.budgeted and self.admitted and self.tokens is not None and self.outcome != "proxy_error"

    @property
    def forwarded_model(self) -> str | None:
        """The model admission sent upstream: the reroute's, else the requested one."""
        if not self.admitted:
            return None
        return self.decision.model if self.decision.action == "reroute" else self.requested_model


def parse_record(data: Any) -> LedgerRecord:
    """A decoded ledger line (a JSON object) as a record; LedgerLineError names what is wrong."""
    return _usual_record(data) or _checked_record(data)


def _usual_record(data: Any) -> LedgerRecord | None:
    """The record of a line as the proxy writes it, checked in one pass (the field set at once, then each
    value's exact type), or None when anything is unusual: the field-by-field reader then gives the same
    record, or the error that names the field. Most of a replay's reading time is spent here."""
    if type(data) is not dict:
        return None
    version: str = data.get("schemaVersion")  # type: ignore[assignment]  # one of the two, or no match below
    if data.keys() != (V2_FIELDS if version == LEDGER_V2 else V1_FIELDS if version == LEDGER_V1 else None):
        return None
    texts = [data[name] for name in OPTIONAL_TEXT]
    (endpoint, key_name, developer, cost_center, repo, branch, session, session_source, request_class, agent_id,
     requested_model, served_model, priced_model, price_source, error_type) = texts
    request_id, method, path, bundle_version = data["requestId"], data["method"], data["path"], data["bundleVersion"]
    status, outcome, cost, flags = data["status"], data["outcome"], data["costUSD"], data["flags"]
    latency, upstream, added = data["latencyMs"], data["upstreamMs"], data["addedMs"]
    request_bytes, exchange_id = data.get("requestBytes"), data.get("exchangeId")
    if ({type(text) for text in texts} - TEXT_OR_NULL
            or type(request_id) is not str or type(method) is not str or type(path) is not str
            or not (request_id and method and path) or type(bundle_version) is not str
            or type(data["stream"]) is not bool or type(status) is not int or status < 0
            or type(outcome) is not str or outcome not in OUTCOMES
            or type(cost) is not str or COST_PATTERN.fullmatch(cost) is None
            or type(flags) is not list or (flags and {type(flag) for flag in flags} != {str})
            or not (request_bytes is None or (type(request_bytes) is int and request_bytes >= 0))
            or not (exchange_id is None or type(exchange_id) is str)
            or {type(value) for value in (latency, upstream, added)} - NUMBER_OR_NULL
            or (latency or 0) < 0 or (upstream or 0) < 0 or (added or 0) < 0):
        return None
    usage = data["tokens"]
    tokens = _usual_tokens(usage) if usage is not None else None
    decision, time = _usual_decision(data["decision"]), _usual_time(data)
    if (tokens is None and usage is not None) or decision is None or time is None:
        return None
    return LedgerRecord(version, time, request_id, method, path, endpoint, key_name, developer, cost_center, repo,
                        branch, session, session_source, request_class, agent_id, requested_model, served_model,
                        priced_model, price_source, data["stream"], tokens, Decimal(cost), status, outcome, error_type,
                        latency, upstream, added, decision, tuple(flags), bundle_version, request_bytes, exchange_id)


def _usual_tokens(value: Any) -> Tokens | None:
    if type(value) is not dict or value.keys() != TOKEN_KEYS:
        return None
    counts = [value["input"], value["cacheWrite5m"], value["cacheWrite1h"], value["cacheRead"], value["output"],
              value["webSearches"]]
    if {type(count) for count in counts} != {int} or min(counts) < 0:
        return None
    return Tokens(*counts)


def _usual_decision(value: Any) -> LedgerDecision | None:
    if type(value) is not dict or value.keys() != DECISION_KEYS:
        return None
    action, reason, model = value["action"], value["reason"], value["model"]
    if action == "forward" and reason == "" and model is None:
        return PLAIN_FORWARD  # most lines
    if type(reason) is not str or type(action) is not str:
        return None
    if action == "reroute":
        return LedgerDecision(action, reason, model) if type(model) is str and model else None
    return LedgerDecision(action, reason, None) if model is None and action in ACTIONS else None


def _usual_time(data: dict[str, Any]) -> datetime | None:
    value = data["time"]
    if type(value) is not str:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


def _checked_record(data: Any) -> LedgerRecord:
    """Field by field, naming the first field that is wrong."""
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
