"""OpenTelemetry export: a span and metrics per Messages request, in the GenAI semantic conventions.

Off unless a collector is named (`--otlp-endpoint`, or the SDK's own `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `_METRICS_ENDPOINT`); `OTEL_SDK_DISABLED=true` and
`OTEL_TRACES_EXPORTER=none` / `OTEL_METRICS_EXPORTER=none` turn it (or one signal) off. The SDK's
exporters send OTLP over HTTP (protobuf) and read their usual variables (headers, timeout,
compression, certificates); the resource comes from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`,
the sampling decision from `OTEL_TRACES_SAMPLER` (default: follow the parent, else keep everything).

What the request path pays is one append to a bounded queue, at settle time, when everything about
the request is known. Everything else happens on one background thread: the sampling decision,
building the span, folding the metrics, encoding and sending. A full queue drops the request's
telemetry (counted in `spendgate_telemetry_dropped_total`), never waits; a collector that is down
or slow only fills the queue. The metrics are folded here rather than recorded through the SDK's
instruments, which cost about 15 us per measurement (attribute checks and hashing) against about
1 us here; they are handed to the SDK's OTLP metric exporter as its own data points. The span is
built directly as the SDK's ReadableSpan (a started-and-ended SDK span costs about 40 us).

The span: kind CLIENT (the gateway's call to the model), named `chat {request model}`, child of
the client's `traceparent` when it sent one (the header itself is forwarded upstream unchanged), with
the GenAI attributes (`gen_ai.provider.name` is `anthropic`, `aws.bedrock` or `gcp.vertex_ai`; token
counts follow the Anthropic mapping: `gen_ai.usage.input_tokens` includes cache reads and writes)
and spendgate's own (`spendgate.cost.usd` as a decimal string, attribution, the enforcement
decision). Nothing secret is on it: no key, no prompt, no response text.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter

from spendgate.logic.pricing import Charge
from spendgate.proxy.admission import Endpoint
from spendgate.proxy.exchange import Exchange, Outcome

logger = logging.getLogger("spendgate.proxy")

SCOPE: Final = InstrumentationScope("spendgate.proxy", "0.1.0")
DEFAULT_SERVICE_NAME: Final = "spendgate-proxy"
OPERATION: Final = "chat"
# The bucket boundaries the GenAI metric conventions ask for.
TOKEN_BOUNDS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BOUNDS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
SUPPORTED_PROTOCOL: Final = "http/protobuf"
# The SDK's batch processor defaults (OTEL_BSP_*), read the same way.
DEFAULT_QUEUE: Final = 2048
DEFAULT_BATCH: Final = 512
DEFAULT_DELAY_MS: Final = 5000
DEFAULT_METRIC_INTERVAL_MS: Final = 60000
SHUTDOWN_SECONDS: Final = 5.0
_propagator = TraceContextTextMapPropagator()


class TelemetryConfigError(Exception):
    """A setting the exporter cannot honour; the message says which and what to do."""


@dataclass(frozen=True)
class TelemetryConfig:
    traces_endpoint: str | None  # None: that signal is off
    metrics_endpoint: str | None
    max_queue: int = DEFAULT_QUEUE
    max_batch: int = DEFAULT_BATCH
    delay_seconds: float = DEFAULT_DELAY_MS / 1000
    metric_interval_seconds: float = DEFAULT_METRIC_INTERVAL_MS / 1000

    @property
    def enabled(self) -> bool:
        return self.traces_endpoint is not None or self.metrics_endpoint is not None


def config_from(flag_endpoint: str | None, env: Mapping[str, str] = os.environ) -> TelemetryConfig:
    """Where to export, from the flag (a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT) or the SDK's variables."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TelemetryConfig(None, None)
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                 "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"):
        protocol = env.get(name, "").strip()
        if protocol and protocol != SUPPORTED_PROTOCOL:
            raise TelemetryConfigError(f"{name}={protocol}: the gateway exports OTLP over HTTP ({SUPPORTED_PROTOCOL}); "
                                       "point it at the collector's OTLP/HTTP receiver (port 4318) and unset the "
                                       "variable or set it to http/protobuf")
    base = (flag_endpoint or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")).strip()
    config = TelemetryConfig(
        traces_endpoint=_signal_endpoint(base, env, "TRACES", "v1/traces"),
        metrics_endpoint=_signal_endpoint(base, env, "METRICS", "v1/metrics"),
        max_queue=_positive_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_QUEUE),
        max_batch=_positive_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_BATCH),
        delay_seconds=_positive_int(env, "OTEL_BSP_SCHEDULE_DELAY", DEFAULT_DELAY_MS) / 1000,
        metric_interval_seconds=_positive_int(env, "OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_METRIC_INTERVAL_MS) / 1000,
    )
    for endpoint in (config.traces_endpoint, config.metrics_endpoint):
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise TelemetryConfigError(f"OTLP endpoint {endpoint!r} is not an http:// or https:// URL")
    return config


def _signal_endpoint(base: str, env: Mapping[str, str], signal: str, path: str) -> str | None:
    if env.get(f"OTEL_{signal}_EXPORTER", "").strip().lower() == "none":
        return None
    specific = env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip()
    if specific:
        return specific
    return f"{base.rstrip('/')}/{path}" if base else None


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise TelemetryConfigError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise TelemetryConfigError(f"{name}={raw!r} must be positive")
    return value


# What one request becomes --------------------------------------------------------------------------


def input_tokens(charge: Charge) -> int:
    """gen_ai.usage.input_tokens: Anthropic's input_tokens plus cache reads and writes."""
    return charge.tokens.total_input


def decision_of(exchange: Exchange) -> str:
    return exchange.decision.action


def error_type(exchange: Exchange) -> str | None:
    """error.type: the API's error type when there is one, else the HTTP status, else the outcome."""
    if exchange.outcome is Outcome.OK and exchange.status < 400:
        return None
    return exchange.error_type or (str(exchange.status) if exchange.status else exchange.outcome.value)


def span_attributes(exchange: Exchange, charge: Charge | None, server: tuple[str, int]) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.provider.name": exchange.provider,
        "server.address": server[0],
        "server.port": server[1],
        "http.response.status_code": exchange.status,
        "spendgate.exchange_id": exchange.id,
        "spendgate.decision": decision_of(exchange),
        "spendgate.outcome": exchange.outcome.value,
    }
    optional: dict[str, Any] = {
        "gen_ai.request.model": exchange.requested_model,
        "gen_ai.response.model": exchange.served_model,
        "gen_ai.request.stream": True if exchange.stream else None,
        "gen_ai.response.id": exchange.request_id or None,
        "gen_ai.conversation.id": exchange.attribution.session if exchange.attribution else None,
        "error.type": error_type(exchange),
        "spendgate.forwarded_model": exchange.forwarded_model,
        "spendgate.decision.reason": exchange.decision.reason or None,
        "spendgate.flags": sorted(exchange.flags | (charge.flags if charge else set())) or None,
    }
    if exchange.identity is not None:
        optional.update({"spendgate.cost_center": exchange.identity.cost_center,
                         "spendgate.developer": exchange.identity.developer,
                         "spendgate.key": exchange.identity.key_name})
    if exchange.attribution is not None:
        optional.update({"spendgate.repository": exchange.attribution.repo,
                         "spendgate.branch": exchange.attribution.branch,
                         "spendgate.session": exchange.attribution.session})
    if charge is not None:
        tokens = charge.tokens
        optional.update({
            "gen_ai.usage.input_tokens": tokens.total_input,
            "gen_ai.usage.output_tokens": tokens.output,
            "gen_ai.usage.cache_read.input_tokens": tokens.cache_read,
            "gen_ai.usage.cache_creation.input_tokens": tokens.cache_write_5m + tokens.cache_write_1h,
            "spendgate.cost.usd": str(charge.cost),
            "spendgate.priced_as": charge.model,
        })
    attributes.update((key, value) for key, value in optional.items() if value is not None)
    return attributes


def parent_context(traceparent: bytes | None, tracestate: bytes | None) -> Context | None:
    """The client's span, from its W3C trace context headers; None without a valid one."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent.decode("latin-1")}
    if tracestate:
        carrier["tracestate"] = tracestate.decode("latin-1")
    context = _propagator.extract(carrier)
    return context if get_current_span(context).get_span_context().is_valid else None


# Metrics, folded here ------------------------------------------------------------------------------


class Distribution:
    """One histogram series: bucket counts (the last is +Inf), sum, count, min, max."""

    __slots__ = ("bounds", "count", "counts", "maximum", "minimum", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0
        self.minimum = float("inf")
        self.maximum = float("-inf")

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)


Labels = tuple[tuple[str, str], ...]


class MetricFolder:
    """The GenAI metrics and spendgate's cost counter, cumulative since the proxy started."""

    def __init__(self) -> None:
        self.started_ns = time.time_ns()
        self.tokens: dict[Labels, Distribution] = {}
        self.durations: dict[Labels, Distribution] = {}
        self.cost: dict[Labels, Decimal] = {}

    def fold(self, exchange: Exchange, charge: Charge | None, seconds: float) -> None:
        base: Labels = (("gen_ai.operation.name", OPERATION), ("gen_ai.provider.name", exchange.provider),
                        ("gen_ai.request.model", exchange.requested_model or ""),
                        ("gen_ai.response.model", exchange.served_model or exchange.model or ""))
        failed = error_type(exchange)
        duration_labels = (*base, ("error.type", failed)) if failed else base
        _series(self.durations, duration_labels, DURATION_BOUNDS).observe(seconds)
        if charge is None:
            return
        who: Labels = ()
        if exchange.identity is not None:
            who = (("spendgate.cost_center", exchange.identity.cost_center),
                   ("spendgate.developer", exchange.identity.developer))
        _series(self.tokens, (*base, ("gen_ai.token.type", "input"), *who), TOKEN_BOUNDS).observe(
            charge.tokens.total_input)
        _series(self.tokens, (*base, ("gen_ai.token.type", "output"), *who), TOKEN_BOUNDS).observe(
            charge.tokens.output)
        key = (*base, *who)
        self.cost[key] = self.cost.get(key, Decimal(0)) + charge.cost

    def data(self, resource: Resource) -> MetricsData | None:
        """The series so far as the SDK's data points (cumulative); None before the first request."""
        now = time.time_ns()
        metrics = []
        if self.tokens:
            metrics.append(Metric("gen_ai.client.token.usage", "Number of input and output tokens used.", "{token}",
                                  HistogramData(self._points(self.tokens, now), AggregationTemporality.CUMULATIVE)))
        if self.durations:
            metrics.append(Metric("gen_ai.client.operation.duration", "GenAI operation duration.", "s",
                                  HistogramData(self._points(self.durations, now),
                                                AggregationTemporality.CUMULATIVE)))
        if self.cost:
            points = [NumberDataPoint(dict(labels), self.started_ns, now, float(total))
                      for labels, total in list(self.cost.items())]
            metrics.append(Metric("spendgate.cost", "Priced cost in US dollars (the ledger, not this sum, reconciles "
                                  "with an invoice).", "USD",
                                  Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True)))
        if not metrics:
            return None
        return MetricsData([ResourceMetrics(resource, [ScopeMetrics(SCOPE, metrics, "")], "")])

    def _points(self, series: dict[Labels, Distribution], now: int) -> list[HistogramDataPoint]:
        return [HistogramDataPoint(dict(labels), self.started_ns, now, d.count, d.total, list(d.counts),
                                   list(d.bounds), d.minimum, d.maximum)
                for labels, d in list(series.items())]


def _series(series: dict[Labels, Distribution], labels: Labels, bounds: Sequence[float]) -> Distribution:
    found = series.get(labels)
    if found is None:
        found = series[labels] = Distribution(bounds)
    return found


# The exporter --------------------------------------------------------------------------------------


Finished = tuple[Exchange, "Charge | None", tuple[str, int]]


class Telemetry:
    """The bounded queue the request path appends to, and the thread that empties it."""

    def __init__(self, config: TelemetryConfig, span_exporter: SpanExporter | None,
                 metric_exporter: MetricExporter | None, dropped: Counter, failures: Counter,
                 resource: Resource | None = None, sampler: Sampler | None = None) -> None:
        self.config = config
        self._spans = span_exporter
        self._metrics = metric_exporter
        self._dropped = dropped
        self._failures = failures
        self._resource = resource or service_resource()
        self._sampler = sampler or TracerProvider().sampler  # from OTEL_TRACES_SAMPLER, as the SDK reads it
        self._ids = RandomIdGenerator()
        self._queue: deque[Finished] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._folder = MetricFolder()
        self._next_metrics = time.monotonic() + config.metric_interval_seconds
        self._failing: dict[str, bool] = {}
        self._thread = threading.Thread(target=self._run, name="spendgate-otlp-export", daemon=True)

    # On the request path ---------------------------------------------------------------------------

    def finished(self, exchange: Exchange, charge: Charge | None, server: tuple[str, int]) -> None:
        """A settled request: queued for export, or dropped (and counted) when the queue is full."""
        if exchange.endpoint is not Endpoint.MESSAGES:
            return
        if len(self._queue) >= self.config.max_queue:
            self._dropped.inc()
            return
        self._queue.append((exchange, charge, server))
        if len(self._queue) >= self.config.max_batch and not self._wake.is_set():
            self._wake.set()

    # Off it ----------------------------------------------------------------------------------------

    def start(self) -> None:
        for name in ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                     "opentelemetry.exporter.otlp.proto.http.metric_exporter",
                     "opentelemetry.exporter.otlp.proto.http"):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # failures are logged once per outage, below
        self._thread.start()

    def stop(self, timeout: float = SHUTDOWN_SECONDS) -> None:
        """Export what is queued (within `timeout`), then stop; a collector that is away costs no more."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        for exporter in (self._spans, self._metrics):
            if exporter is not None:
                try:
                    exporter.shutdown()
                except Exception:
                    logger.exception("the OTLP exporter failed to shut down")

    def _run(self) -> None:
        while True:
            self._wake.wait(self.config.delay_seconds)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._drain()
                if stopping or time.monotonic() >= self._next_metrics:
                    self._next_metrics = time.monotonic() + self.config.metric_interval_seconds
                    self._export_metrics()
            except Exception:  # a bug here must not end export for the proxy's lifetime
                logger.exception("OpenTelemetry export failed")
            if stopping:
                return

    def _drain(self) -> None:
        while self._queue:
            batch: list[ReadableSpan] = []
            while self._queue and len(batch) < self.config.max_batch:
                exchange, charge, server = self._queue.popleft()
                seconds = exchange.total_seconds or 0.0
                self._folder.fold(exchange, charge, seconds)
                span = self._span(exchange, charge, server, seconds)
                if span is not None:
                    batch.append(span)
            if batch and self._spans is not None:
                self._export("traces", self._spans.export(batch) is SpanExportResult.SUCCESS, len(batch))

    def _span(self, exchange: Exchange, charge: Charge | None, server: tuple[str, int],
              seconds: float) -> ReadableSpan | None:
        if self._spans is None:
            return None
        parent = parent_context(exchange.traceparent, exchange.tracestate)
        parent_span = _span_context(parent)
        trace_id = parent_span.trace_id if parent_span is not None else self._ids.generate_trace_id()
        name = f"{OPERATION} {exchange.requested_model}" if exchange.requested_model else OPERATION
        attributes = span_attributes(exchange, charge, server)
        sampled = self._sampler.should_sample(parent, trace_id, name, SpanKind.CLIENT, attributes)
        if sampled.decision is not Decision.RECORD_AND_SAMPLE:
            return None
        start = int(exchange.received_at.timestamp() * 1e9)
        context = SpanContext(trace_id, self._ids.generate_span_id(), False, TraceFlags(TraceFlags.SAMPLED),
                              sampled.trace_state or (parent_span.trace_state if parent_span else TraceState()))
        failed = error_type(exchange)
        status = Status(StatusCode.ERROR, failed) if failed else Status(StatusCode.UNSET)
        return ReadableSpan(name, context=context, parent=parent_span, resource=self._resource,
                            attributes=attributes, kind=SpanKind.CLIENT, start_time=start,
                            end_time=start + int(seconds * 1e9), status=status, instrumentation_scope=SCOPE)

    def _export_metrics(self) -> None:
        if self._metrics is None:
            return
        data = self._folder.data(self._resource)
        if data is not None:
            self._export("metrics", self._metrics.export(data) is MetricExportResult.SUCCESS, 0)

    def _export(self, signal: str, ok: bool, count: int) -> None:
        """Count and log a failed export once per outage (and once when it ends)."""
        if not ok:
            self._failures.labels(signal).inc()
            if count:
                self._dropped.inc(count)
        if ok == (not self._failing.get(signal, False)):
            return
        self._failing[signal] = not ok
        if ok:
            logger.info("OTLP %s export works again", signal)
        else:
            logger.warning("OTLP %s export failed (the collector is down, slow or refusing); the proxy goes on, "
                           "telemetry meanwhile is dropped and counted in spendgate_telemetry_dropped_total", signal)


def _span_context(context: Context | None) -> SpanContext | None:
    if context is None:
        return None
    return get_current_span(context).get_span_context()



def build(config: TelemetryConfig, dropped: Counter, failures: Counter) -> Telemetry:
    """The exporter for `config`, with the SDK's OTLP/HTTP exporters (they read the other OTEL_* settings)."""
    span_exporter = OTLPSpanExporter(endpoint=config.traces_endpoint) if config.traces_endpoint else None
    metric_exporter = OTLPMetricExporter(endpoint=config.metrics_endpoint) if config.metrics_endpoint else None
    return Telemetry(config, span_exporter, metric_exporter, dropped, failures, service_resource())


def service_resource() -> Resource:
    """The SDK's resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME), named spendgate-proxy unless they name it."""
    detected = Resource.create()
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        detected = detected.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    return detected
