"""The Grafana dashboard: what the chart ships is what hack/dashboard.py builds, and every query
names metrics and labels that the proxy and the operator export (read from their own registries
after exercising them, never from a hand-written list)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import promql_parser
import pytest
import yaml

from cluster.controlplane import REPO_ROOT
from cluster.helm import render
from spendgate.api import v1alpha1 as api
from spendgate.operator.metrics import OperatorMetrics
from spendgate.proxy.metrics import ProxyMetrics

DASHBOARD = REPO_ROOT / "charts" / "spendgate" / "dashboards" / "spendgate.json"
# Labels Prometheus adds from the scrape target (the ServiceMonitor's pods), not the exporters.
TARGET_LABELS = frozenset({"namespace", "pod", "instance", "job", "service", "container"})
# Grafana's macros, replaced by durations before parsing (as Grafana does before querying).
MACROS = {"$__rate_interval": "5m", "$__range": "1d", "$__interval": "1m"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",), "unknown": ("",), "summary": ("_sum", "_count", "_created")}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboard", REPO_ROOT / "hack" / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exported() -> dict[str, set[str]]:
    """Series names -> label names, from the registries of a proxy and an operator that did their work."""
    proxy = ProxyMetrics()
    proxy.request(("platform", "alice", "claude-opus-5-5"), 200, None)
    proxy.decided("platform", "alice", "downgrade")
    proxy.flagged(["estimated"])
    proxy.observe_latency("messages", 1.2, 0.0004)
    proxy.bundle_stale_seconds.set(0)
    operator = OperatorMetrics()
    budget = next(api.Budget.model_validate(doc) for doc in yaml.safe_load_all(
        (REPO_ROOT / "examples" / "policies" / "30-budgets.yaml").read_text()) if doc and doc["kind"] == "Budget")
    operator.budget(budget, api.BudgetStatus(spentUSD="12.50", state=api.BudgetState.OK))
    operator.alerts.labels("alert", "Delivered").inc()
    names: dict[str, set[str]] = {}
    for registry in (proxy.registry, operator.registry):
        for family in registry.collect():
            for suffix in SUFFIXES[family.type]:
                names.setdefault(family.name + suffix, set())
            for sample in family.samples:
                names.setdefault(sample.name, set()).update(sample.labels)
    return names


def queries(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in document["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def walk(node: Any) -> Iterator[Any]:
    yield node
    for attribute in ("expr", "lhs", "rhs", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, str | int | float):
            yield from walk(child)
    for argument in getattr(node, "args", None) or []:
        yield from walk(argument)


def parse(expr: str) -> Any:
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    return promql_parser.parse(expr)


def problems(expr: str, metrics: dict[str, set[str]]) -> list[str]:
    """Metrics the exporters lack, and labels that none of the selected metrics carries."""
    found: list[str] = []
    for node in walk(parse(expr)):
        if isinstance(node, promql_parser.VectorSelector):
            if node.name not in metrics:
                found.append(f"metric {node.name}")
                continue
            for matcher in node.matchers.matchers:
                if matcher.name not in metrics[node.name] | TARGET_LABELS:
                    found.append(f"label {matcher.name} of {node.name}")
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            available = set(TARGET_LABELS)
            for inner in walk(node.expr):
                if isinstance(inner, promql_parser.VectorSelector) and inner.name in metrics:
                    available |= metrics[inner.name]
            found += [f"label {label} in {node.op} by ({', '.join(node.modifier.labels)})"
                      for label in node.modifier.labels if label not in available]
    return found


def test_the_shipped_dashboard_is_what_the_generator_builds() -> None:
    assert DASHBOARD.read_text() == generator().render(), "run `make dashboard` (hack/dashboard.py)"


def test_every_query_names_exported_metrics_and_labels() -> None:
    document, metrics = json.loads(DASHBOARD.read_text()), exported()
    checked = list(queries(document))
    variable = next(v for v in document["templating"]["list"] if v["name"] == "cost_center")

    assert len(checked) >= 20
    assert {title: problems(expr, metrics) for title, expr in checked if problems(expr, metrics)} == {}
    assert variable["query"] == "label_values(spendgate_cost_usd_total, cost_center)"
    assert "cost_center" in metrics["spendgate_cost_usd_total"]


@pytest.mark.parametrize(("expr", "problem"), [
    ("rate(spendgate_cost_total[5m])", "metric spendgate_cost_total"),
    ('spendgate_budget_spent_usd{team="a"}', "label team of spendgate_budget_spent_usd"),
    ("sum by (team) (spendgate_budget_spent_usd)", "label team in sum by (team)"),
])
def test_a_misnamed_metric_or_label_is_caught(expr: str, problem: str) -> None:
    assert problem in problems(expr, exported())


def test_the_chart_ships_the_dashboard_for_the_grafana_sidecar() -> None:
    configmap = next(doc for doc in yaml.safe_load_all(render("sg", "monitoring.grafanaDashboard.enabled=true"))
                     if doc and doc["metadata"]["name"] == "spendgate-dashboard")

    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["spendgate.json"]) == json.loads(DASHBOARD.read_text())
    assert "spendgate-dashboard" not in render("sg")
