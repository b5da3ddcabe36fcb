"""Settle: the step after a request's usage is known. Price it, count it, write its ledger line, and
tell the spend sink. And its prologue, `begin`: before an admitted request goes upstream, the sink
journals that it started, so a proxy killed mid-request still accounts for it (spendgate.proxy.recovery).

`settle` runs exactly once per request, on every path (answered, refused, failed, abandoned, a bug),
after the client's response has started and before it completes, so a sink that journals
synchronously has recorded the spend before the client has seen the end of the answer.

It cannot fail. Each step that could raise (pricing, metrics, the ledger line, the ledger write, the
sink) is caught, logged with its traceback, counted (`spendgate_settle_errors_total{step}`) and,
where the ledger line is still to be written, flagged on it; the request still gets exactly one
ledger line and releases its reservation. Money is never silently zero: a success whose usage
cannot be read is billed at admission's estimate and flagged.

The order is what makes a SIGKILL harmless: start line (journal) -> forward -> ledger line ->
settle line (journal). A kill before the ledger line leaves a start line without a settle line:
the restart finds no ledger line and settles it at its estimate. A kill between the two finds the
ledger line and settles the journal from it. So the two never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from spendgate.logic.pricing import Charge, PriceBook, PriceSource, Tokens
from spendgate.proxy.admission import Decision, Endpoint, Estimate, Forward, Reject, Reroute
from spendgate.proxy.attribution import Attribution
from spendgate.proxy.errors import new_request_id
from spendgate.proxy.exchange import (
    ESTIMATED,
    INTERNAL_ERROR,
    INTERRUPTED,
    JOURNAL_FAILED,
    METRICS_FAILED,
    PRICING_FAILED,
    USAGE_MISSING,
    Exchange,
    Outcome,
)
from spendgate.proxy.ledger import LedgerWriter, minimal_record, record
from spendgate.proxy.metrics import NO_MODEL_LABEL, UNKNOWN_MODEL_LABEL, ProxyMetrics

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only by a proxy that exports
    from spendgate.proxy.telemetry import Telemetry

logger = logging.getLogger("spendgate.proxy")


@dataclass(frozen=True, slots=True)
class Start:
    """An admitted request about to go upstream."""

    exchange_id: str
    decision: Forward | Reroute  # with its `hold`
    interrupted_line: dict[str, Any]  # the ledger line it gets if the proxy dies before it settles
    ledger_position: tuple[int, int] | None  # where the ledger file stood (recovery looks from there)


@dataclass(frozen=True, slots=True)
class Spend:
    """How an admitted request ended: what it cost (if anything could be priced), and whom to charge."""

    request_id: str
    exchange_id: str
    at: datetime  # when the request arrived; aware, UTC (budget windows are computed from it)
    attribution: Attribution  # cost center and developer from the key; repo and session tags
    decision: Forward | Reroute  # what admission decided, with its `hold` (e.g. a reservation to settle)
    cost: Decimal | None  # None: nothing billable came back (an error, a failure before any usage)
    model: str | None  # the model it was priced as
    output_tokens: int | None  # billed output tokens (all iterations), None with cost None
    input_tokens: int | None  # billed uncached input: input and cache writes, not cache reads (as rate limits count)
    estimated: bool  # the cost is an estimate (a stream cut short, or usage missing)
    journal: bool  # its ledger line is written: the journal may record it (never ahead of the ledger)


class SpendSink(Protocol):
    def begin(self, start: Start) -> None:
        """Called once for every admitted request, before it is forwarded (a journal append is fine)."""

    def record(self, spend: Spend) -> None:
        """Called once for every admitted request, on the event loop, before its response completes.

        Must not block for long: it is on the request path (a journal append is fine).
        """


def estimated_charge(estimate: Estimate) -> Charge:
    return Charge(estimate.cost, Tokens(input=estimate.input_tokens, output=estimate.output_tokens), estimate.model,
                  estimate.source, frozenset({ESTIMATED}))


class Settler:
    def __init__(self, ledger: LedgerWriter, metrics: ProxyMetrics, sink: SpendSink | None,
                 telemetry: Telemetry | None = None, servers: Mapping[str, tuple[str, int]] | None = None) -> None:
        """Without a sink the ledger and metrics are the only records. `telemetry` (OpenTelemetry export,
        when on) hears of every settled request; `servers` are the upstreams' addresses by provider."""
        self._ledger = ledger
        self._metrics = metrics
        self._sink = sink
        self._telemetry = telemetry
        self._servers = servers or {}

    def begin(self, exchange: Exchange) -> None:
        """Journal an admitted request as started, before it is forwarded. A journal that cannot be
        written does not stop the request: it is flagged (`journal_failed`), logged and counted."""
        decision = exchange.decision
        if self._sink is None or isinstance(decision, Reject):
            return
        try:
            self._sink.begin(Start(exchange.id, decision, self._interrupted_line(exchange), self._ledger.position()))
        except Exception:
            self._failed(exchange, JOURNAL_FAILED, "journal")

    def _interrupted_line(self, exchange: Exchange) -> dict[str, Any]:
        estimate = exchange.decision.estimate if not isinstance(exchange.decision, Reject) else None
        line = record(exchange, estimated_charge(estimate) if estimate else None)
        return {**line, "requestId": new_request_id(), "status": 0, "outcome": Outcome.INTERRUPTED,
                "flags": sorted({*line["flags"], ESTIMATED, INTERRUPTED})}

    def settle(self, exchange: Exchange, prices: PriceBook) -> Charge | None:
        if exchange.settled:
            return None
        exchange.settled = True
        exchange.finished = perf_counter()
        charge = self._charge(exchange, prices)
        try:
            self._count(exchange, charge, prices)
        except Exception:
            self._failed(exchange, METRICS_FAILED, "metrics")
        journaled = self._sink is not None and exchange.admitted and exchange.attribution is not None
        # A journaled request's line is written at once (not batched) and before its settle line,
        # so a SIGKILL never leaves journaled spend missing from the ledger.
        written = self._write_line(exchange, charge, now=journaled)
        if journaled:
            self._record_spend(exchange, charge, journal=written)
        if self._telemetry is not None:
            self._export(exchange, charge)
        return charge

    def _export(self, exchange: Exchange, charge: Charge | None) -> None:
        """Hand the request to OpenTelemetry export (a queue append); its failure is counted, never felt."""
        assert self._telemetry is not None
        try:
            self._telemetry.finished(exchange, charge, self._servers.get(exchange.provider, ("", 0)))
        except Exception:
            self._metrics.settle_errors.labels("telemetry").inc()
            logger.exception("telemetry failed on %s %s (%s)", exchange.method, exchange.path, exchange.id)

    def _charge(self, exchange: Exchange, prices: PriceBook) -> Charge | None:
        try:
            charge = self._price(exchange, prices)
        except Exception:
            self._failed(exchange, PRICING_FAILED, "pricing")
            charge = None
        if charge is not None or not self._owes_usage(exchange):
            return charge
        estimate = exchange.decision.estimate if not isinstance(exchange.decision, Reject) else None
        if PRICING_FAILED not in exchange.flags:
            exchange.flags.add(USAGE_MISSING)
        return estimated_charge(estimate) if estimate is not None else None

    @staticmethod
    def _owes_usage(exchange: Exchange) -> bool:
        """A Message the upstream says it served (2xx, completed), whose cost must therefore be known."""
        return (exchange.endpoint is Endpoint.MESSAGES and 200 <= exchange.status < 300
                and exchange.outcome is Outcome.OK)

    @staticmethod
    def _price(exchange: Exchange, prices: PriceBook) -> Charge | None:
        model = exchange.model
        if exchange.usage is None or model is None:
            return None
        return prices.charge(model, exchange.usage, exchange.received_at.date(), exchange.refused_before_output)

    def _write_line(self, exchange: Exchange, charge: Charge | None, now: bool) -> bool:
        """Exactly one line per request: the full one, or (a bug in building it) the minimal one."""
        try:
            return self._ledger.write(record(exchange, charge), now=now)
        except Exception:
            self._failed(exchange, INTERNAL_ERROR, "ledger line")
            return self._ledger.write(minimal_record(exchange, charge), now=now)

    def _count(self, exchange: Exchange, charge: Charge | None, prices: PriceBook) -> None:
        identity = exchange.identity
        spender = (identity.cost_center if identity else "", identity.developer if identity else "",
                   _model_label(exchange, charge, prices))
        self._metrics.request(spender, exchange.status, charge)
        decision = _decision_label(exchange.decision, exchange.status)
        if decision:
            self._metrics.decided(spender[0], spender[1], decision)
        if exchange.flags:
            self._metrics.flagged(exchange.flags)
        self._metrics.observe_latency(exchange.endpoint or "unrouted", exchange.upstream_seconds,
                                      exchange.added_seconds)

    def _record_spend(self, exchange: Exchange, charge: Charge | None, journal: bool) -> None:
        decision, attribution = exchange.decision, exchange.attribution
        assert self._sink is not None and attribution is not None and not isinstance(decision, Reject)
        spend = Spend(request_id=exchange.request_id, exchange_id=exchange.id, at=exchange.received_at,
                      attribution=attribution, decision=decision, cost=charge.cost if charge else None,
                      model=charge.model if charge else None,
                      output_tokens=charge.tokens.output if charge else None,
                      input_tokens=uncached_input(charge.tokens) if charge else None,
                      estimated=ESTIMATED in exchange.flags or (charge is not None and ESTIMATED in charge.flags),
                      journal=journal)
        try:
            self._sink.record(spend)
        except Exception:  # a failing sink must not fail the client's answer; it is counted and logged
            self._metrics.spend_sink_errors.inc()
            self._metrics.settle_errors.labels("journal").inc()
            logger.exception("spend sink failed on request %s (%s); a restart settles it from the ledger",
                             exchange.request_id, exchange.id)

    def _failed(self, exchange: Exchange, flag: str, step: str) -> None:
        exchange.flags.add(flag)
        self._metrics.settle_errors.labels(step).inc()
        logger.exception("settling %s %s (%s) failed at the %s step; flagged %s", exchange.method, exchange.path,
                         exchange.id, step, flag)


def _model_label(exchange: Exchange, charge: Charge | None, prices: PriceBook) -> str:
    model = exchange.model
    if charge is None:
        if model is None:
            return NO_MODEL_LABEL
        rates = prices.rates(model, exchange.received_at.date())
        return UNKNOWN_MODEL_LABEL if rates.source is PriceSource.FALLBACK else rates.model
    return UNKNOWN_MODEL_LABEL if charge.source is PriceSource.FALLBACK else charge.model


def _decision_label(decision: Decision, status: int) -> str | None:
    """How enforcement changed a request, for the decisions metric; None when it was forwarded as is."""
    if isinstance(decision, Reroute):
        return "downgrade"
    if isinstance(decision, Reject):
        if decision.error_type == "rate_limit_error":
            return "rate_limit"
        return "pause" if status == 429 else "refuse"
    return None


def uncached_input(tokens: Tokens) -> int:
    """Input as Anthropic's input-token rate limits count it: cache reads apart."""
    return tokens.input + tokens.cache_write_5m + tokens.cache_write_1h
