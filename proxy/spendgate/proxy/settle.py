"""Settle: the step after a request's usage is known. Price it, write its ledger line, count it, and
tell the spend sink.

It runs exactly once per request, on every path (answered, refused, failed, abandoned), after the
client's response has started and before it completes, so a sink that journals synchronously has
recorded the spend before the client has seen the end of the answer. The enforcement issue plugs
its spend tracker (journal, reservations, SpendReport) in as the `SpendSink`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from time import perf_counter
from typing import Protocol

from spendgate.logic.pricing import Charge, PriceBook, PriceSource
from spendgate.proxy.admission import Forward, Reject, Reroute
from spendgate.proxy.attribution import Attribution
from spendgate.proxy.exchange import ESTIMATED, Exchange
from spendgate.proxy.ledger import LedgerWriter, record
from spendgate.proxy.metrics import NO_MODEL_LABEL, UNKNOWN_MODEL_LABEL, ProxyMetrics

logger = logging.getLogger("spendgate.proxy")


@dataclass(frozen=True, slots=True)
class Spend:
    """How an admitted request ended: what it cost (if anything could be priced), and whom to charge."""

    request_id: str
    at: datetime  # when the request arrived; aware, UTC (budget windows are computed from it)
    attribution: Attribution  # cost center and developer from the key; repo and session tags
    decision: Forward | Reroute  # what admission decided, with its `hold` (e.g. a reservation to settle)
    cost: Decimal | None  # None: nothing billable came back (an error, a failure before any usage)
    model: str | None  # the model it was priced as
    output_tokens: int | None  # billed output tokens (all iterations), None with cost None
    estimated: bool  # the output is a floor estimate (the stream ended before its final usage)


class SpendSink(Protocol):
    def record(self, spend: Spend) -> None:
        """Called once for every admitted request, on the event loop, before its response completes.

        Must not block for long: it is on the request path (a journal append is fine).
        """


class Settler:
    def __init__(self, ledger: LedgerWriter, metrics: ProxyMetrics, sink: SpendSink | None) -> None:
        """Without a sink (until enforcement exists) the ledger and metrics are the only records."""
        self._ledger = ledger
        self._metrics = metrics
        self._sink = sink

    def settle(self, exchange: Exchange, prices: PriceBook) -> Charge | None:
        exchange.finished = perf_counter()
        charge = self._price(exchange, prices)
        decision, attribution = exchange.decision, exchange.attribution
        sink = (self._sink if exchange.admitted and attribution is not None and not isinstance(decision, Reject)
                else None)
        # Spend the sink records is journaled, SIGKILL-safe; its ledger line must be as safe (written
        # at once, not batched), or a killed proxy leaves spend its budgets count and its ledger lacks.
        self._ledger.write(record(exchange, charge), now=sink is not None and charge is not None)
        self._count(exchange, charge, prices)
        if sink is not None and attribution is not None and not isinstance(decision, Reject):
            self._record_spend(sink, exchange, attribution, decision, charge)
        return charge

    @staticmethod
    def _price(exchange: Exchange, prices: PriceBook) -> Charge | None:
        model = exchange.model
        if exchange.usage is None or model is None:
            return None
        return prices.charge(model, exchange.usage, exchange.received_at.date(), exchange.refused_before_output)

    def _count(self, exchange: Exchange, charge: Charge | None, prices: PriceBook) -> None:
        identity = exchange.identity
        spender = (identity.cost_center if identity else "", identity.developer if identity else "",
                   _model_label(exchange, charge, prices))
        self._metrics.request(spender, exchange.status, charge)
        if exchange.flags:
            self._metrics.flagged(exchange.flags)
        self._metrics.observe_latency(exchange.endpoint or "unrouted", exchange.upstream_seconds,
                                      exchange.added_seconds)

    def _record_spend(self, sink: SpendSink, exchange: Exchange, attribution: Attribution,
                      decision: Forward | Reroute, charge: Charge | None) -> None:
        spend = Spend(request_id=exchange.request_id, at=exchange.received_at, attribution=attribution,
                      decision=decision, cost=charge.cost if charge else None,
                      model=charge.model if charge else None,
                      output_tokens=charge.tokens.output if charge else None, estimated=ESTIMATED in exchange.flags)
        try:
            sink.record(spend)
        except Exception:  # a failing sink must not fail the client's answer; it is counted and logged
            self._metrics.spend_sink_errors.inc()
            logger.exception("spend sink failed on request %s", exchange.request_id)


def _model_label(exchange: Exchange, charge: Charge | None, prices: PriceBook) -> str:
    model = exchange.model
    if charge is None:
        if model is None:
            return NO_MODEL_LABEL
        rates = prices.rates(model, exchange.received_at.date())
        return UNKNOWN_MODEL_LABEL if rates.source is PriceSource.FALLBACK else rates.model
    return UNKNOWN_MODEL_LABEL if charge.source is PriceSource.FALLBACK else charge.model
