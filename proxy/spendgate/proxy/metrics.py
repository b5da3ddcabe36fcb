"""Prometheus metrics, served on the admin port.

Labels are bounded: cost center and developer come from the bundle's keys, the model label is the
id the price was found under (or `unknown` for ids priced by the fallback), status is an HTTP
status code. Session ids, request ids, repositories and raw model strings sent by clients never
become labels; they live in the ledger.

The per-request series are plain counters in memory, turned into Prometheus samples only when
scraped (a custom collector): a `labels().inc()` costs more than the proxy's whole pricing step,
and it would happen eight times per request. Money is summed as Decimal and becomes a float only
in the scraped sample (Prometheus has no other number type); the ledger, not this counter, is what
reconciles with an invoice. Rare events (bundle loads, sink errors) use ordinary prometheus_client
metrics.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Final, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from spendgate.logic.pricing import Charge

# Latency buckets in seconds: the proxy's own share is sub-millisecond, the upstream's is seconds.
ADDED_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0)
UPSTREAM_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TOKEN_TYPES: Final = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
SPENDER_LABELS: Final = ["cost_center", "developer", "model"]
UNKNOWN_MODEL_LABEL: Final = "unknown"
NO_MODEL_LABEL: Final = "none"
Spender = tuple[str, str, str]  # cost center, developer, model label


class Histogram:
    """Bucket counts for one label set; `le` semantics, like Prometheus'."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running, buckets = 0, []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            buckets.append((bound, float(running)))
        return buckets


class SpenderTotals:
    __slots__ = ("cost", "requests", "tokens")

    def __init__(self) -> None:
        self.cost = Decimal(0)
        self.tokens = [0] * len(TOKEN_TYPES)
        self.requests: Tally[int] = Tally()  # by HTTP status


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, open fds, CPU seconds
        self.spenders: dict[Spender, SpenderTotals] = {}  # bounded like the labels
        self.flags: Tally[str] = Tally()
        self.decisions: Tally[tuple[str, str, str]] = Tally()  # (cost center, developer, decision)
        self.latency: dict[str, tuple[Histogram, Histogram]] = {}  # by endpoint: upstream, added
        self.registry.register(RequestCollector(self))
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
        self.bundle_stale_seconds = Gauge("spendgate_bundle_stale_seconds", "How long the bundle source has "
                                          "differed from the bundle in use (0: in sync).", registry=self.registry)
        self.settle_errors = Counter("spendgate_settle_errors", "Settlement steps that failed (the request still "
                                     "got its ledger line, flagged, and released its reservation).", ["step"],
                                     registry=self.registry)
        self.ledger_write_errors = Counter("spendgate_ledger_write_errors", "Failed ledger writes (lines stay "
                                           "queued and are retried).", registry=self.registry)
        self.ledger_lines_dropped = Counter("spendgate_ledger_lines_dropped", "Ledger lines dropped because the "
                                            "ledger could not be written for too long.", registry=self.registry)
        self.connections_refused = Counter("spendgate_client_connections_refused", "Client connections answered "
                                           "and closed before a request could be read (header timeout, header "
                                           "size, connection limit, malformed HTTP).", ["reason"],
                                           registry=self.registry)
        self.tasks_stopped = Counter("spendgate_background_tasks_stopped", "Background tasks (bundle watcher, "
                                     "spend loop) that ended unexpectedly; the proxy is then not ready.",
                                     ["task"], registry=self.registry)

    def bundle_swapped(self, version: str) -> None:
        self.bundle_info.clear()
        self.bundle_info.labels(version).set(1)
        self.bundle_loaded.set_to_current_time()
        self.bundle_last_load_ok.set(1)

    def bundle_refused(self) -> None:
        self.bundle_load_errors.inc()
        self.bundle_last_load_ok.set(0)

    def _totals(self, spender: Spender) -> SpenderTotals:
        totals = self.spenders.get(spender)
        if totals is None:
            totals = self.spenders[spender] = SpenderTotals()
        return totals

    def request(self, spender: Spender, status: int, charge: Charge | None) -> None:
        totals = self._totals(spender)
        totals.requests[status] += 1
        if charge is None:
            return
        totals.cost += charge.cost
        tokens, counts = charge.tokens, totals.tokens
        counts[0] += tokens.input
        counts[1] += tokens.cache_write_5m
        counts[2] += tokens.cache_write_1h
        counts[3] += tokens.cache_read
        counts[4] += tokens.output
        if charge.flags:
            self.flags.update(charge.flags)

    def flagged(self, flags: Iterable[str]) -> None:
        self.flags.update(flags)

    def decided(self, cost_center: str, developer: str, decision: str) -> None:
        """An enforcement decision that changed the request: `downgrade`, `pause` or `refuse`."""
        self.decisions[(cost_center, developer, decision)] += 1

    def observe_latency(self, endpoint: str, upstream: float | None, added: float | None) -> None:
        histograms = self.latency.get(endpoint)
        if histograms is None:
            histograms = self.latency[endpoint] = (Histogram(UPSTREAM_BUCKETS), Histogram(ADDED_BUCKETS))
        if upstream is not None:
            histograms[0].observe(upstream)
        if added is not None:
            histograms[1].observe(added)


class RequestCollector(Collector):
    """Turns the in-memory totals into Prometheus samples at scrape time."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        spenders = list(self._metrics.spenders.items())
        requests = CounterMetricFamily("spendgate_requests", "Requests answered, by HTTP status.",
                                       labels=[*SPENDER_LABELS, "status"])
        cost = CounterMetricFamily("spendgate_cost_usd", "Priced cost in US dollars.", labels=SPENDER_LABELS)
        tokens = CounterMetricFamily("spendgate_tokens", "Billed tokens by type.", labels=[*SPENDER_LABELS, "type"])
        for spender, totals in spenders:
            for status, count in sorted(totals.requests.items()):
                requests.add_metric([*spender, str(status)], count)
            cost.add_metric(list(spender), float(totals.cost))
            for kind, count in zip(TOKEN_TYPES, totals.tokens, strict=True):
                tokens.add_metric([*spender, kind], count)
        flags = CounterMetricFamily("spendgate_request_flags", "Requests carrying a ledger flag (estimated, "
                                    "unknown_model, ...).", labels=["flag"])
        for flag, count in sorted(self._metrics.flags.items()):
            flags.add_metric([flag], count)
        decisions = CounterMetricFamily("spendgate_enforcement_decisions", "Requests a budget changed: downgraded "
                                        "to a cheaper model, paused (429), or refused (e.g. a missing repository "
                                        "tag).", labels=["cost_center", "developer", "decision"])
        for labels, count in sorted(self._metrics.decisions.items()):
            decisions.add_metric(list(labels), count)
        yield from (requests, cost, tokens, flags, decisions)
        yield from self._histograms()

    def _histograms(self) -> Iterator[Metric]:
        upstream = HistogramMetricFamily("spendgate_upstream_latency_seconds", "Upstream time to response.",
                                         labels=["endpoint"])
        added = HistogramMetricFamily("spendgate_added_latency_seconds", "The proxy's own share of the time "
                                      "to first byte.", labels=["endpoint"])
        for endpoint, (upstream_histogram, added_histogram) in sorted(self._metrics.latency.items()):
            upstream.add_metric([endpoint], upstream_histogram.cumulative(), upstream_histogram.total)
            added.add_metric([endpoint], added_histogram.cumulative(), added_histogram.total)
        yield from (upstream, added)


# Cluster mode: how recently the API server took part (live.py) ------------------------------

class ControlPlaneAges(NamedTuple):
    report: float  # since the API server accepted this proxy's last SpendReport
    watches: Mapping[str, float]  # namespace -> since its FleetSpend watch last heard the API server
    fleet_spend: float  # how old the fleet's spend this proxy enforces on is


class ControlPlaneCollector(Collector):
    """The live loop's ages, read at scrape time: they grow while the API server or the operator is
    away. A report is written at least every 15 s, a healthy watch hears the API server at least once
    a minute (events, bookmarks, or the end of its server-side timeout), and the operator refreshes
    the fleet's spend while proxies report."""

    def __init__(self, ages: Callable[[], ControlPlaneAges]) -> None:
        self._ages = ages

    def collect(self) -> Iterator[Metric]:
        ages = self._ages()
        yield GaugeMetricFamily("spendgate_spend_report_age_seconds", "Seconds since the API server accepted this "
                                "proxy's last SpendReport.", value=ages.report)
        yield GaugeMetricFamily("spendgate_fleet_spend_age_seconds", "How old the fleet's spend this proxy enforces "
                                "on is: seconds since the newest report folded into the oldest FleetSpend it "
                                "follows (0 while it follows none).", value=ages.fleet_spend)
        watches = GaugeMetricFamily("spendgate_fleet_spend_watch_age_seconds", "Seconds since the watch of the "
                                    "FleetSpends in a namespace last heard from the API server.",
                                    labels=["namespace"])
        for namespace, age in sorted(ages.watches.items()):
            watches.add_metric([namespace], age)
        yield watches
