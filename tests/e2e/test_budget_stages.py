"""A developer's Budget through its stages on a real fleet: three proxies share one wallet through
Budget.status, the operator alerts once per threshold, `kubectl get budgets` tells the story, and a
raised limit lets traffic through again."""

from __future__ import annotations

import functools
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from operator_harness import WebhookReceiver

from cluster.polling import eventually
from e2e.conftest import NewTenant, Tenant
from e2e.fleet import COST, OPUS, SONNET, Cluster, Fleet, ProxyProcess, send, state_seen

pytestmark = pytest.mark.cluster

STATUS_TIMEOUT = 15.0  # report (1 s) + fold (1 s write interval) + watch, with a wide margin for a busy machine


def drive(fleet: Fleet, tenant: Tenant, count: int, start: int = 0) -> list[httpx.Response]:
    """`count` priced requests, one after another, round-robin over the proxies."""
    return [send(fleet.proxies[(start + number) % len(fleet.proxies)], tenant.key) for number in range(count)]


def status_at(cluster: Cluster, tenant: Tenant, spent: Decimal) -> dict[str, Any] | None:
    """Budget.status once the operator has folded exactly `spent` into it."""
    status = cluster.budget_status(tenant.namespace, tenant.budget)
    return status if status.get("spentUSD") is not None and Decimal(status["spentUSD"]) == spent else None


def every_proxy_sees(fleet: Fleet, tenant: Tenant, state: str) -> None:
    def enforcing(proxy: ProxyProcess) -> bool:
        return state_seen(proxy, tenant.key) == state

    for proxy in fleet.proxies:
        eventually(functools.partial(enforcing, proxy), STATUS_TIMEOUT, f"{proxy.name} enforcing {state}")


def alerts(receiver: WebhookReceiver, tenant: Tenant) -> list[str]:
    return [message["threshold"] for message in receiver.at(tenant.webhook)]


def kubectl_row(cluster: Cluster, tenant: Tenant) -> tuple[str, Decimal, str, str]:
    """LIMIT, SPENT, USED and STATE as the real `kubectl get budgets` prints them."""
    row = cluster.kubectl_get_budget(tenant.namespace, tenant.budget)
    return row["LIMIT"], Decimal(row["SPENT"]), row["USED"], row["STATE"]


def test_alert_then_downgrade_then_pause_across_three_proxies(
        fleet: Fleet, cluster: Cluster, new_tenant: NewTenant, receiver: WebhookReceiver) -> None:
    tenant = new_tenant(limit="1.00")
    upstream = fleet.upstream
    assert upstream is not None

    # Ok -> Alert: 14 Opus requests, $0.84. No proxy can see more than the truth, so none reroutes.
    answered = drive(fleet, tenant, 14)
    assert [r.status_code for r in answered] == [200] * 14, answered[-1].text
    assert {m["model"] for m in upstream.messages()[-14:]} == {OPUS}
    status = eventually(lambda: status_at(cluster, tenant, Decimal("0.84")), STATUS_TIMEOUT, "$0.84 in status")
    assert (status["state"], status["percentUsed"], status["reportingProxies"]) == ("Alert", "84.0%", 3)
    assert kubectl_row(cluster, tenant) == ("1.00", Decimal("0.84"), "84.0%", "Alert")
    eventually(lambda: alerts(receiver, tenant), STATUS_TIMEOUT, "the Alert webhook")
    every_proxy_sees(fleet, tenant, "Alert")
    assert alerts(receiver, tenant) == ["Alert"]

    # Alert -> Downgrade: two more Opus requests, $0.96 (each proxy's view stays under 95% until both settled).
    answered = drive(fleet, tenant, 2, start=14)
    assert [r.status_code for r in answered] == [200, 200]
    assert [m["model"] for m in upstream.messages()[-2:]] == [OPUS, OPUS]
    status = eventually(lambda: status_at(cluster, tenant, Decimal("0.96")), STATUS_TIMEOUT, "$0.96 in status")
    assert status["state"] == "Downgrade"
    assert kubectl_row(cluster, tenant) == ("1.00", Decimal("0.96"), "96.0%", "Downgrade")
    every_proxy_sees(fleet, tenant, "Downgrade")
    eventually(lambda: len(alerts(receiver, tenant)) == 2, STATUS_TIMEOUT, "the Downgrade webhook")

    # Downgrade -> Paused: every request now goes to the next model in the cascade, until the wallet
    # passes 110% and the proxies refuse with the 429 Claude Code shows at once.
    spent, served, refused = Decimal("0.96"), 0, None
    for number in range(40):
        proxy = fleet.proxies[number % len(fleet.proxies)]
        response = send(proxy, tenant.key)
        if response.status_code == 429:
            refused = (proxy, response)
            break
        assert response.status_code == 200, response.text
        assert response.headers["x-spendgate-downgraded-from"] == OPUS
        assert upstream.messages()[-1]["model"] == SONNET
        assert response.json()["model"] == SONNET
        spent += COST[SONNET]
        served += 1
    assert refused is not None, f"no pause after {served} downgraded requests (${spent})"
    assert served >= 5 and spent >= Decimal("1.10"), f"paused at ${spent}: a false pause"  # 0.96 + 5 x 0.03
    check_pause(refused[1], tenant)
    status = eventually(lambda: status_at(cluster, tenant, spent), STATUS_TIMEOUT, f"${spent} in status")
    assert status["state"] == "Paused"
    assert kubectl_row(cluster, tenant) == ("1.00", spent, status["percentUsed"], "Paused")
    every_proxy_sees(fleet, tenant, "Paused")
    eventually(lambda: len(alerts(receiver, tenant)) == 3, STATUS_TIMEOUT, "the Paused webhook")
    time.sleep(1.5)  # a duplicate would be sent right after the first: give it the chance to show up
    assert alerts(receiver, tenant) == ["Alert", "Downgrade", "Paused"]
    print(f"\npaused after {served} downgraded requests at ${spent} (pause threshold $1.10)")


def check_pause(response: httpx.Response, tenant: Tenant) -> None:
    """The refusal Claude Code renders at once and does not retry."""
    assert response.status_code == 429
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "billing_error"
    message = body["error"]["message"]
    assert message.startswith("spend limit reached (daily; resets "), message
    assert f"Budget {tenant.namespace}/{tenant.budget} (developer {tenant.developer})" in message
    assert "of $1.00 spent" in message and "Alerted: oncall" in message
    assert response.headers["x-should-retry"] == "false"
    assert 0 < int(response.headers["retry-after"]) <= 25 * 3600


def test_raising_the_limit_lets_traffic_through_again(
        fleet: Fleet, cluster: Cluster, new_tenant: NewTenant) -> None:
    tenant = new_tenant(limit="0.10")
    answered = drive(fleet, tenant, 2)  # $0.12 of $0.10: 120%
    assert [r.status_code for r in answered] == [200, 200]
    eventually(lambda: status_at(cluster, tenant, Decimal("0.12")), STATUS_TIMEOUT, "$0.12 in status")
    every_proxy_sees(fleet, tenant, "Paused")

    started = time.monotonic()
    cluster.apply(tenant.with_limit("10.00"))
    flowing: dict[str, float] = {}

    def all_flowing() -> bool:
        for proxy in fleet.proxies:
            if proxy.name not in flowing and send(proxy, tenant.key, probe=True).status_code == 200:
                flowing[proxy.name] = time.monotonic() - started
        return len(flowing) == len(fleet.proxies)

    eventually(all_flowing, 10.0, "traffic through every proxy after the limit was raised", interval=0.02)
    assert [r.status_code for r in drive(fleet, tenant, 3)] == [200, 200, 200]  # $0.30 of $10.00
    status = eventually(lambda: status_at(cluster, tenant, Decimal("0.30")), STATUS_TIMEOUT, "$0.30 in status")
    assert (status["state"], status["percentUsed"]) == ("Ok", "3.0%")
    assert kubectl_row(cluster, tenant) == ("10.00", Decimal("0.30"), "3.0%", "Ok")
    print("\nlimit raised -> traffic flows: " + ", ".join(f"{name} {seconds:.2f} s"
                                                         for name, seconds in sorted(flowing.items())))
