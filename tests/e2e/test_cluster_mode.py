"""The fleet's proxies run with no flag but their mounted bundle, as the chart and the docs run them:
each reports where the operator's ConfigMap says, follows the namespace its bundle's budgets live in
(not the report namespace), and says both in its log."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from cluster.polling import eventually
from e2e.conftest import NewTenant
from e2e.fleet import Cluster, Fleet, ProxyProcess

pytestmark = pytest.mark.cluster


def log_saying(proxy: ProxyProcess, text: str) -> str | None:
    assert proxy.process is not None
    log = proxy.process.log.read_text()
    return log if text in log else None


def report_of(cluster: Cluster, namespace: str, proxy: ProxyProcess) -> dict[str, Any]:
    found: dict[str, Any] = cluster.custom.get_namespaced_custom_object("spendgate.io", "v1alpha1", namespace,
                                                                        "spendreports", proxy.name)
    return found


def test_each_proxy_reports_where_the_bundle_says_and_follows_its_budgets_namespaces(
        fleet: Fleet, cluster: Cluster, new_tenant: NewTenant) -> None:
    new_tenant()  # a Budget in the policy namespace, which is not the report namespace
    assert fleet.policy_namespace != fleet.namespace
    following = f"following the Budgets of {fleet.policy_namespace} (the namespaces of the budgets in the bundle)"
    for proxy in fleet.proxies:
        log = eventually(functools.partial(log_saying, proxy, following), 20.0, f"{proxy.name} following")
        assert (f"cluster mode: reporting spend as SpendReport {fleet.namespace}/{proxy.name} (namespace from "
                f"{fleet.workdir / 'bundle' / 'report-namespace'})") in log
        # Its heartbeat: the operator knows every running proxy, whether it served anything or not.
        report = report_of(cluster, fleet.namespace, proxy)
        assert report["spec"]["proxy"] == proxy.name and not report["spec"].get("stopped")
