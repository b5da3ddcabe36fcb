"""With the operator down nothing folds reports into Budget.status, so a proxy enforces on the last
status it saw plus its own spend since: it still pauses on time for what it serves itself."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cluster.polling import eventually
from e2e.conftest import NewTenant
from e2e.fleet import COST, OPUS, Cluster, Fleet, ProxyProcess, send

pytestmark = pytest.mark.cluster


def used_seen(proxy: ProxyProcess, key: str) -> str:
    """How full the proxy believes the budget is, from a free probe."""
    return send(proxy, key, probe=True).headers.get("x-spendgate-budget-used", "")


def test_a_proxy_counts_its_own_spend_on_top_of_the_last_status_while_the_operator_is_down(
        fleet: Fleet, cluster: Cluster, new_tenant: NewTenant) -> None:
    tenant = new_tenant(limit="1.00")
    budget_id = f"{tenant.namespace}/{tenant.budget}"
    first, second = fleet.proxies[0], fleet.proxies[1]
    assert fleet.operator is not None

    # $0.60 through the second proxy; the first learns it from Budget.status.
    assert [send(second, tenant.key).status_code for _ in range(10)] == [200] * 10
    eventually(lambda: cluster.spent(tenant.namespace, tenant.budget) == Decimal("0.60"), 15.0, "$0.60 in status")
    eventually(lambda: used_seen(first, tenant.key) == "60.0%", 15.0, "the first proxy seeing 60%")

    fleet.operator.stop()
    try:
        # $0.30 through the first proxy, reported, and never folded: the status stays at $0.60.
        assert [send(first, tenant.key).status_code for _ in range(5)] == [200] * 5
        eventually(lambda: cluster.reported(fleet.namespace, first.name, budget_id) == Decimal("0.30"), 10.0,
                   "the first proxy's report of $0.30")
        assert cluster.spent(tenant.namespace, tenant.budget) == Decimal("0.60")
        assert used_seen(first, tenant.key) == "90.0%"  # the fleet's 0.60 as last seen + its own 0.30

        # On to the pause: 0.96 on Opus, then Sonnet at Downgrade, refused at the first request past $1.10.
        spent, models = Decimal("0.90"), []
        for _ in range(20):
            response = send(first, tenant.key)
            if response.status_code == 429:
                break
            assert response.status_code == 200, response.text
            models.append(response.json()["model"])
            spent += COST[models[-1]]
        assert response.status_code == 429
        assert models[0] == OPUS and spent == Decimal("1.11"), (models, spent)
    finally:
        fleet.operator.start()
