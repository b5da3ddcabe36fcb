"""Admission: the one step where a request is let through, rerouted to another model, or refused.

It runs for every authenticated request on every route, after the body is read and attributed and
before anything goes upstream. Budget enforcement and budget-aware routing implement `Admission`;
until then `ForwardAll` lets everything through. Exemptions (count_tokens is free, /v1/models
costs nothing) are the implementation's decision, made on `request.endpoint`, never an accident
of routing.

`admit` is synchronous on purpose: it runs on the hot path of every request, so it decides from
state already in memory (the bundle, local spend counters) and never waits on I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, Protocol

import orjson

from spendgate.logic.pricing import PriceBook, PriceSource
from spendgate.policy.bundle import SignedBundle
from spendgate.proxy.attribution import Attribution

Headers = tuple[tuple[str, str], ...]


class Endpoint(StrEnum):
    MESSAGES = "messages"  # POST /v1/messages: priced
    COUNT_TOKENS = "count_tokens"  # POST /v1/messages/count_tokens: free
    MODELS = "models"  # GET /v1/models[/id]
    PASSTHROUGH = "passthrough"  # anything else under /v1/, forwarded as is


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    endpoint: Endpoint
    attribution: Attribution
    model: str | None  # as the client asked; None outside messages and count_tokens
    stream: bool
    body_bytes: int  # size of the request body; a cheap proxy for input tokens (~4 bytes per token)
    bundle: SignedBundle  # the bundle in force for this request (budgets, routing policies)
    prices: PriceBook  # that bundle's prices (shared with settle, so each model is looked up once)
    now: datetime  # aware, UTC


@dataclass(frozen=True, slots=True)
class Estimate:
    """What admission expects a request to cost. It is what the request is settled at when no real
    usage can be had: the upstream answered without readable usage, or the proxy was killed mid-request."""

    cost: Decimal
    input_tokens: int
    output_tokens: int
    model: str  # the id the estimate was priced under
    source: PriceSource


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request upstream unchanged."""

    reason: str = ""  # for the ledger, e.g. what a dry-run budget would have done
    headers: Headers = ()  # added to the client's response, e.g. a budget warning
    hold: object = None  # opaque to the proxy, handed back at settle (e.g. a spend reservation)
    estimate: Estimate | None = None
    action: ClassVar[str] = "forward"


@dataclass(frozen=True, slots=True)
class Reroute:
    """Send the request upstream with `model` in place of the requested one (a downgrade)."""

    model: str
    reason: str
    headers: Headers = ()
    hold: object = None
    estimate: Estimate | None = None
    action: ClassVar[str] = "reroute"


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer at once with an Anthropic-shaped error; nothing goes upstream.

    For a paused budget: status 429, error_type "billing_error", headers x-should-retry: false and
    an integer retry-after (anthropic-contract.md section 2.5), so Claude Code shows it at once.
    """

    status: int
    error_type: str
    message: str
    reason: str
    headers: Headers = ()
    action: ClassVar[str] = "reject"


Decision = Forward | Reroute | Reject
FORWARD = Forward()


class Admission(Protocol):
    def admit(self, request: AdmissionRequest) -> Decision: ...


class ForwardAll:
    """The admission in force until enforcement exists: every request goes through unchanged."""

    def admit(self, request: AdmissionRequest) -> Decision:
        return FORWARD


def with_model(body: Mapping[str, Any], model: str) -> bytes:
    """The request body re-serialised with another model: the only time the proxy rewrites a body.

    Key order and every other field are kept; only the bytes' formatting may differ, which the
    API (and prompt caching, which works on tokens) does not see.
    """
    return orjson.dumps({**body, "model": model})
