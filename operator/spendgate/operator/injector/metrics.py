"""The injector's Prometheus metrics, on its admin port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from spendgate.operator.injector.tls import ServingTLS


class InjectorMetrics:
    def __init__(self, tls: ServingTLS) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.admissions = Counter("spendgate_injector_admissions", "Admission reviews answered, by webhook path "
                                  "and outcome (injected, updated, unchanged, not-wanted, refused, not-a-pod, "
                                  "bad-review).", ["webhook", "outcome"], registry=self.registry)
        self.latency = Histogram("spendgate_injector_admission_seconds", "Time to answer an admission review, "
                                 "from the request's first byte to the answer.", ["webhook"],
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                                 registry=self.registry)
        self.renewals = Counter("spendgate_injector_certificate_renewals", "Certificates issued by this replica "
                                "(self-managed certificates only).", registry=self.registry)
        self.certificate_errors = Counter("spendgate_injector_certificate_errors", "Failed attempts to keep the "
                                          "certificate, its Secret or the webhook's CA bundle current, by step.",
                                          ["step"], registry=self.registry)
        expiry = Gauge("spendgate_injector_certificate_expiry_timestamp_seconds", "When the serving certificate "
                       "in use expires (unix seconds); absent before one is loaded.", registry=self.registry)
        expiry.set_function(lambda: tls.expiry_timestamp() or float("nan"))
