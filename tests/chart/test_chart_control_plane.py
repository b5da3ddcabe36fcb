"""The chart's side of cluster mode: the gateway gets no flag that could disagree with its bundle,
nothing listens on 0.0.0.0, and the alerts on reports and watches name metrics the code exports."""

from __future__ import annotations

import re
from typing import Any

import yaml

from cluster.helm import render
from spendgate.operator.metrics import OperatorMetrics
from spendgate.proxy.metrics import ControlPlaneAges, ControlPlaneCollector, ProxyMetrics

REPORTING_GROUP = "spendgate.reporting"


def documents(*values: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render("sg", *values)) if doc]


def container(name: str) -> dict[str, Any]:
    deployment = next(doc for doc in documents() if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name)
    found: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return found


def pod_ip_from_the_downward_api(spec: dict[str, Any]) -> bool:
    return {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in spec["env"]


def test_the_gateway_reports_and_follows_by_what_its_bundle_says() -> None:
    args = container("spendgate-gateway")["args"]

    assert "--bundle-configmap=sg/spendgate-bundle" in args
    assert not [arg for arg in args if arg.startswith(("--policy-namespace", "--report-namespace"))]


def test_nothing_listens_on_all_addresses() -> None:
    containers = [c for doc in documents("operator.peering.enabled=true") if doc["kind"] == "Deployment"
                  for c in doc["spec"]["template"]["spec"]["containers"]]
    gateway, operator = container("spendgate-gateway"), container("spendgate-operator")

    assert not [arg for c in containers for arg in c["args"] if "0.0.0.0" in arg]
    assert {"--host=$(POD_IP)", "--admin-host=$(POD_IP)"} <= set(gateway["args"])
    assert {"--metrics-host=$(POD_IP)", "--liveness=http://$(POD_IP):8081/healthz"} <= set(operator["args"])
    assert pod_ip_from_the_downward_api(gateway) and pod_ip_from_the_downward_api(operator)


def test_the_reporting_alerts_name_metrics_that_exist() -> None:
    rule = next(doc for doc in documents("monitoring.prometheusRule.enabled=true") if doc["kind"] == "PrometheusRule")
    group = next(g for g in rule["spec"]["groups"] if g["name"] == REPORTING_GROUP)
    used = {name for alert in group["rules"] for name in re.findall(r"spendgate_[a-z_]+", alert["expr"])}
    proxy = ProxyMetrics()
    proxy.registry.register(ControlPlaneCollector(lambda: ControlPlaneAges(0.0, {"team": 0.0}, 0.0)))
    exported = {family.name for registry in (OperatorMetrics().registry, proxy.registry)
                for family in registry.collect()}

    assert {alert["alert"] for alert in group["rules"]} == {
        "SpendgateNoReportingProxy", "SpendgateProxyReportsStopped", "SpendgateGatewayCannotReport",
        "SpendgateGatewayFleetSpendWatchStale", "SpendgateGatewayFleetSpendStale"}
    assert used and used <= exported, used - exported
