"""Prometheus metrics of the operator, on their own registry (one per operator instance).

Money is Decimal everywhere else; Prometheus samples are floats, so spend is converted here, at
the very edge, for dashboards and alert rules only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from time import perf_counter

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from spendgate.api import v1alpha1 as api

BUDGET_LABELS = ("namespace", "budget", "cost_center")


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter("spendgate_operator_reconcile_total", "Reconcile passes by phase and result",
                                  ("phase", "result"), registry=self.registry)
        self.latency = Histogram("spendgate_operator_reconcile_seconds", "Duration of reconcile passes by phase",
                                 ("phase",), registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.writes = Counter("spendgate_operator_api_writes_total", "API writes by kind and result",
                              ("kind", "result"), registry=self.registry)
        self.bundle_bytes = Gauge("spendgate_bundle_bytes", "Size of the bundle document as written",
                                  registry=self.registry)
        self.bundle_errors = Counter("spendgate_bundle_publish_errors_total", "Bundle writes that failed",
                                     ("reason",), registry=self.registry)
        self.synced = Gauge("spendgate_operator_synced", "1 once the first full listing has been reconciled",
                            registry=self.registry)
        self.spent = Gauge("spendgate_budget_spent_usd", "Spend in the current window", BUDGET_LABELS,
                           registry=self.registry)
        self.limit = Gauge("spendgate_budget_limit_usd", "Limit per window", BUDGET_LABELS, registry=self.registry)
        self.used = Gauge("spendgate_budget_used_ratio", "Spent / limit in the current window", BUDGET_LABELS,
                          registry=self.registry)
        self.state = Gauge("spendgate_budget_state", "1 for the budget's current state, 0 for the others",
                           (*BUDGET_LABELS, "state"), registry=self.registry)
        self.alerts = Counter("spendgate_alerts_total", "Threshold alerts by threshold and result",
                              ("threshold", "result"), registry=self.registry)
        # Whether the proxies' spend reports arrive (reporting.py).
        self.reporting_proxies = Gauge("spendgate_operator_reporting_proxies", "Proxies whose SpendReport was "
                                       "written within --report-timeout", registry=self.registry)
        self.silent_proxies = Gauge("spendgate_operator_silent_proxies", "Proxies silent past --report-timeout "
                                    "without a clean stop while holding spend of a current window",
                                    registry=self.registry)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = perf_counter()
        try:
            yield
        except BaseException:
            self.reconciles.labels(phase, "error").inc()
            raise
        finally:
            self.latency.labels(phase).observe(perf_counter() - started)
        self.reconciles.labels(phase, "ok").inc()

    def budget(self, budget: api.Budget, status: api.BudgetStatus) -> None:
        if status.spentUSD is None or status.state is None:
            return
        labels = (budget.metadata.namespace or "", budget.metadata.name, budget.spec.costCenter)
        spent, limit = float(status.spentUSD), float(budget.spec.limitUSD)
        self.spent.labels(*labels).set(spent)
        self.limit.labels(*labels).set(limit)
        self.used.labels(*labels).set(spent / limit)
        for state in api.BudgetState:
            self.state.labels(*labels, state.value).set(1 if state == status.state else 0)

    def forget_budget(self, namespace: str, name: str, cost_center: str) -> None:
        labels = (namespace, name, cost_center)
        for gauge in (self.spent, self.limit, self.used):
            _remove(gauge, labels)
        for state in api.BudgetState:
            _remove(self.state, (*labels, state.value))


def _remove(gauge: Gauge, labels: tuple[str, ...]) -> None:
    with suppress(KeyError):  # never set: the budget had no window yet
        gauge.remove(*labels)
