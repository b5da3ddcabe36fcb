"""The fleet's proxies run with no flag but their mounted bundle, as the chart and the docs run them:
each reports where the operator's ConfigMap says, follows the fleet's spend (FleetSpend shards) of the
budgets it charges in the namespace they live in (not the report namespace), and says both in its log."""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

import kubernetes
import pytest

from cluster.polling import eventually
from e2e.conftest import NewTenant
from e2e.fleet import Cluster, Fleet, ProxyProcess, send

pytestmark = pytest.mark.cluster


def log_following(proxy: ProxyProcess, namespace: str, shard: str) -> str | None:
    """The proxy's log once a line says it follows this shard of this namespace."""
    assert proxy.process is not None
    log = proxy.process.log.read_text()
    said = [line for line in log.splitlines() if "following the fleet's spend of" in line]
    return log if any(f"{namespace}: " in line and shard in line for line in said) else None


def report_of(cluster: Cluster, namespace: str, proxy: ProxyProcess) -> dict[str, Any] | None:
    """Its SpendReport, once written (a proxy spreads its first calls over its first seconds)."""
    try:
        found: dict[str, Any] = cluster.custom.get_namespaced_custom_object("spendgate.io", "v1alpha1", namespace,
                                                                            "spendreports", proxy.name)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return found


def fleet_spend_figure(cluster: Cluster, namespace: str, shard: str, budget: str) -> Decimal | None:
    """The figure the operator published for this budget in its FleetSpend shard."""
    found = cluster.custom.get_namespaced_custom_object("spendgate.io", "v1alpha1", namespace, "fleetspends", shard)
    return next((Decimal(entry["spentUSD"]) for entry in found["spec"]["budgets"] if entry["budget"] == budget), None)


def test_each_proxy_reports_where_the_bundle_says_and_follows_the_shards_of_the_budgets_it_charges(
        fleet: Fleet, cluster: Cluster, new_tenant: NewTenant) -> None:
    tenant = new_tenant()  # a Budget in the policy namespace, which is not the report namespace
    assert fleet.policy_namespace != fleet.namespace
    shard = f"{tenant.cost_center}.0"  # the cost center's only shard (spendgate.logic.fleetspend)
    for proxy in fleet.proxies:
        assert send(proxy, tenant.key).status_code == 200
        log = eventually(functools.partial(log_following, proxy, fleet.policy_namespace, shard), 20.0,
                         f"{proxy.name} following {shard}")
        assert (f"cluster mode: reporting spend as SpendReport {fleet.namespace}/{proxy.name} (namespace from "
                f"{fleet.workdir / 'bundle' / 'report-namespace'})") in log
        # Its heartbeat: the operator knows every running proxy, whether it served anything or not.
        report = eventually(functools.partial(report_of, cluster, fleet.namespace, proxy), 20.0,
                            f"{proxy.name}'s SpendReport")
        assert report["spec"]["proxy"] == proxy.name and not report["spec"].get("stopped")
    # The shard the proxies follow holds the fleet's spend of the budget, as Budget.status does.
    eventually(lambda: (fleet_spend_figure(cluster, fleet.policy_namespace, shard, tenant.budget) or 0) > 0
               and fleet_spend_figure(cluster, fleet.policy_namespace, shard, tenant.budget)
               == cluster.spent(fleet.policy_namespace, tenant.budget), 20.0,
               f"{tenant.budget}'s spend in FleetSpend {shard} and in its status")
