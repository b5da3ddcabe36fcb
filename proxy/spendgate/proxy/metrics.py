"""Prometheus metrics, served on the admin port.

Labels are bounded: cost center and developer come from the bundle's keys, the model label is the
id the price was found under (or `unknown` for ids priced by the fallback), status is an HTTP
status code. Session ids, request ids, repositories and raw model strings sent by clients never
become labels; they live in the ledger.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from spendgate.pricing import Charge, Tokens

# Latency buckets in seconds: the proxy's own share is sub-millisecond, the upstream's is seconds.
ADDED_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
UPSTREAM_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TOKEN_TYPES: Final = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
UNKNOWN_MODEL_LABEL: Final = "unknown"
NO_MODEL_LABEL: Final = "none"


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, open fds, CPU seconds
        spender = ["cost_center", "developer", "model"]
        self.requests = Counter("spendgate_requests", "Requests answered, by HTTP status.",
                                [*spender, "status"], registry=self.registry)
        self.cost = Counter("spendgate_cost_usd", "Priced cost in US dollars.", spender, registry=self.registry)
        self.tokens = Counter("spendgate_tokens", "Billed tokens by type.", [*spender, "type"],
                              registry=self.registry)
        self.flags = Counter("spendgate_request_flags", "Requests carrying a ledger flag (estimated, "
                             "unknown_model, ...).", ["flag"], registry=self.registry)
        self.upstream_latency = Histogram("spendgate_upstream_latency_seconds", "Upstream time to response.",
                                          ["endpoint"], buckets=UPSTREAM_BUCKETS, registry=self.registry)
        self.added_latency = Histogram("spendgate_added_latency_seconds", "The proxy's own share of the time "
                                       "to first byte.", ["endpoint"], buckets=ADDED_BUCKETS, registry=self.registry)
        self.spend_sink_errors = Counter("spendgate_spend_sink_errors", "Spend records the spend sink failed on.",
                                         registry=self.registry)
        self.bundle_info = Gauge("spendgate_bundle_info", "The bundle in use (value 1).", ["version"],
                                 registry=self.registry)
        self.bundle_loaded = Gauge("spendgate_bundle_loaded_timestamp_seconds", "When the bundle in use was loaded.",
                                   registry=self.registry)
        self.bundle_load_errors = Counter("spendgate_bundle_load_errors", "Bundles refused (the last good one "
                                          "stays in use).", registry=self.registry)
        self.bundle_last_load_ok = Gauge("spendgate_bundle_last_load_success", "1 if the last bundle load "
                                         "succeeded.", registry=self.registry)

    def bundle_swapped(self, version: str) -> None:
        self.bundle_info.clear()
        self.bundle_info.labels(version).set(1)
        self.bundle_loaded.set_to_current_time()
        self.bundle_last_load_ok.set(1)

    def bundle_refused(self) -> None:
        self.bundle_load_errors.inc()
        self.bundle_last_load_ok.set(0)

    def request(self, spender: tuple[str, str, str], status: int) -> None:
        self.requests.labels(*spender, str(status)).inc()

    def charged(self, spender: tuple[str, str, str], charge: Charge) -> None:
        # The one float in the money path: Prometheus samples are floats. Sums of the ledger's
        # Decimal costs, not this counter, are what reconciles with an invoice.
        self.cost.labels(*spender).inc(float(charge.cost))
        tokens: Tokens = charge.tokens
        for kind, count in zip(TOKEN_TYPES, (tokens.input, tokens.cache_write_5m, tokens.cache_write_1h,
                                             tokens.cache_read, tokens.output), strict=True):
            if count:
                self.tokens.labels(*spender, kind).inc(count)
        for flag in charge.flags:
            self.flags.labels(flag).inc()

    def flagged(self, flags: set[str]) -> None:
        for flag in flags:
            self.flags.labels(flag).inc()

    def latency(self, endpoint: str, upstream: float | None, added: float | None) -> None:
        if upstream is not None:
            self.upstream_latency.labels(endpoint).observe(upstream)
        if added is not None:
            self.added_latency.labels(endpoint).observe(added)
