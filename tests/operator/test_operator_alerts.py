"""Threshold alerts: exactly once per threshold per window, across restarts and replicas."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from operator_harness import (
    Api,
    FakeProxy,
    ManualClock,
    OperatorThread,
    WebhookReceiver,
    budget,
    cost_center,
    manifests,
)

from cluster.controlplane import ControlPlane
from cluster.polling import eventually

pytestmark = pytest.mark.cluster

WINDOW = "2026-11-24"


def target(name: str, kind: str, secret: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "type": kind, "secretRef": {"namespace": namespace, "name": secret}}


def alerts_of(api: Api, namespace: str) -> list[dict[str, Any]]:
    return list(api.status("Budget", "team", namespace).get("alerts", []))


def settled(api: Api, namespace: str, count: int) -> list[dict[str, Any]] | None:
    """The alert records once there are `count` and none is still being sent."""
    records = alerts_of(api, namespace)
    return records if len(records) == count and all(r["outcome"] != "Sending" for r in records) else None


@pytest.fixture
def alerting_budget(control_plane: ControlPlane, api: Api, run_id: str, operator_namespace: str,
                    policy_namespace: str, receiver: WebhookReceiver) -> str:
    api.create_secret(operator_namespace, "slack", {"url": receiver.url("/slack")})
    api.create_secret(operator_namespace, "hook", {"url": receiver.url("/hook")})
    api.create_secret(operator_namespace, "pagerduty", {"url": "routing-key-123", "eventsURL": receiver.url("/pd")})
    targets = (target("leads", "Slack", "slack", operator_namespace),
               target("oncall", "Webhook", "hook", operator_namespace),
               target("pager", "PagerDuty", "pagerduty", operator_namespace))
    control_plane.apply(manifests(cost_center(f"team-{run_id}", run_id, targets=targets),
                                  budget("team", policy_namespace, f"team-{run_id}", limit="10.00")))
    return f"{policy_namespace}/team"


def test_one_alert_per_threshold_per_window_across_restarts(
        control_plane: ControlPlane, api: Api, clock: ManualClock, run_id: str, operator_namespace: str,
        policy_namespace: str, receiver: WebhookReceiver, alerting_budget: str,
        start_operator: type[OperatorThread]) -> None:
    first = start_operator()
    proxy = FakeProxy(control_plane, operator_namespace, "proxy-a")
    proxy.spend(alerting_budget, WINDOW, "8.50")
    proxy.report(clock.now())
    eventually(lambda: settled(api, policy_namespace, 1), what="the Alert record")

    first.stop()
    start_operator()  # a restarted operator sees the record and sends nothing again
    proxy.spend(alerting_budget, WINDOW, "0.10")
    proxy.report(clock.now())
    eventually(lambda: api.status("Budget", "team", policy_namespace).get("spentUSD") == "8.6", what="8.60")
    proxy.spend(alerting_budget, WINDOW, "3.40")  # 120%: Downgrade and Paused at once
    proxy.report(clock.now())
    records = eventually(lambda: settled(api, policy_namespace, 3), what="Downgrade and Paused records")

    clock.advance(timedelta(days=1))
    proxy.spend(alerting_budget, "2026-11-25", "8.00")
    proxy.report(clock.now())
    eventually(lambda: settled(api, policy_namespace, 4), what="the next window's Alert record")
    events = [e["reason"] for e in api.events(policy_namespace, "team")]

    assert {(r["window"], r["threshold"], r["outcome"]) for r in records} == {
        (WINDOW, "Alert", "Delivered"), (WINDOW, "Downgrade", "Delivered"), (WINDOW, "Paused", "Delivered")}
    assert [m["threshold"] for m in receiver.at("/hook")] == ["Alert", "Paused", "Alert"]
    assert len(receiver.at("/slack")) == len(receiver.at("/pd")) == 3
    assert receiver.at("/hook")[1]["thresholdsCrossed"] == ["Downgrade", "Paused"]
    assert events.count("AlertSent") == 3


def test_the_message_says_who_how_much_which_threshold_and_when_it_resets(
        control_plane: ControlPlane, clock: ManualClock, api: Api, operator_namespace: str, policy_namespace: str,
        receiver: WebhookReceiver, alerting_budget: str, start_operator: type[OperatorThread]) -> None:
    start_operator()
    proxy = FakeProxy(control_plane, operator_namespace, "proxy-a")
    proxy.spend(alerting_budget, WINDOW, "9.70")
    proxy.report(clock.now())
    eventually(lambda: settled(api, policy_namespace, 2), what="Alert and Downgrade records")

    slack, hook, pager = receiver.at("/slack")[0], receiver.at("/hook")[0], receiver.at("/pd")[0]
    assert f"Budget {alerting_budget} (CostCenter, cost center team-" in slack["text"]
    assert "crossed its Downgrade threshold (95%): $9.70 of $10.00 spent (97.0%)" in slack["text"]
    assert "resets at 2026-11-25 00:00 CET (2026-11-24T23:00:00Z)" in slack["text"]
    assert (hook["spentUSD"], hook["limitUSD"], hook["resetsAt"], hook["window"]["id"]) == (
        "9.7", "10.00", "2026-11-24T23:00:00Z", WINDOW)
    assert hook["dedupeKey"] == f"spendgate/{alerting_budget}/{WINDOW}/Downgrade"
    assert (pager["routing_key"], pager["event_action"], pager["payload"]["severity"]) == (
        "routing-key-123", "trigger", "error")


def test_a_failing_target_is_retried_and_the_failure_recorded(
        control_plane: ControlPlane, api: Api, clock: ManualClock, run_id: str, operator_namespace: str,
        policy_namespace: str, receiver: WebhookReceiver, start_operator: type[OperatorThread]) -> None:
    receiver.statuses.update({"/broken": [500], "/flaky": [503, 200], "/refused": [404]})
    for name in ("broken", "flaky", "refused"):
        api.create_secret(operator_namespace, name, {"url": receiver.url(f"/{name}")})
    targets = (*(target(name, "Webhook", name, operator_namespace) for name in ("broken", "flaky", "refused")),
               target("gone", "Slack", "no-such-secret", operator_namespace))
    control_plane.apply(manifests(cost_center(f"team-{run_id}", run_id, targets=targets),
                                  budget("team", policy_namespace, f"team-{run_id}", limit="10.00")))
    start_operator()
    proxy = FakeProxy(control_plane, operator_namespace, "proxy-a")
    proxy.spend(f"{policy_namespace}/team", WINDOW, "8.00")
    proxy.report(clock.now())

    record = eventually(lambda: settled(api, policy_namespace, 1), what="the failed record")[0]
    warning = eventually(lambda: [e for e in api.events(policy_namespace, "team") if e["reason"] == "AlertFailed"],
                         what="an AlertFailed Event")[0]

    assert record["outcome"] == (
        f"Failed: broken: HTTP 500 after 3 attempts; refused: HTTP 404 after 1 attempt; gone: Secret "
        f"{operator_namespace}/no-such-secret: it does not exist; delivered to flaky")
    assert (receiver.attempts["/broken"], receiver.attempts["/flaky"], receiver.attempts["/refused"]) == (3, 2, 1)
    assert warning["type"] == "Warning" and "127.0.0.1" not in warning["message"]
    assert "127.0.0.1" not in str(api.get("Budget", "team", policy_namespace))


def test_two_operators_at_once_send_one_alert(
        control_plane: ControlPlane, api: Api, clock: ManualClock, operator_namespace: str, policy_namespace: str,
        receiver: WebhookReceiver, alerting_budget: str, start_operator: type[OperatorThread]) -> None:
    start_operator(identity="replica-a")
    start_operator(identity="replica-b")
    proxy = FakeProxy(control_plane, operator_namespace, "proxy-a")
    proxy.spend(alerting_budget, WINDOW, "8.00")
    proxy.report(clock.now())

    eventually(lambda: settled(api, policy_namespace, 1), what="the Alert record")
    eventually(lambda: [e for e in api.events(policy_namespace, "team") if e["reason"] == "AlertSent"],
               what="the AlertSent Event")

    assert len(receiver.at("/hook")) == len(receiver.at("/slack")) == len(receiver.at("/pd")) == 1
