"""Alert decisions and messages, pure: claims, outcomes, and the three wire formats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spendgate.api import v1alpha1 as api
from spendgate.api.v1alpha1 import BudgetState
from spendgate.operator import alerts
from spendgate.operator.alerts import Claim, Delivery
from spendgate.operator.notify import AlertMessage, pagerduty_payload, slack_payload, webhook_payload

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
ALERT, DOWNGRADE, PAUSED = BudgetState.ALERT, BudgetState.DOWNGRADE, BudgetState.PAUSED


def record(window: str, threshold: BudgetState, outcome: str = "Delivered", sent: str = "2026-11-24T11:00:00Z"
           ) -> api.AlertRecord:
    return api.AlertRecord(window=window, threshold=threshold, sentAt=sent, outcome=outcome)


def test_jumping_to_paused_crosses_every_threshold() -> None:
    assert alerts.crossed(BudgetState.OK) == ()
    assert alerts.crossed(PAUSED) == (ALERT, DOWNGRADE, PAUSED)


def test_a_claim_names_only_thresholds_not_yet_recorded_in_this_window() -> None:
    records = [record("2026-11-24", ALERT), record("2026-11-23", DOWNGRADE)]

    assert alerts.new_claim(records, PAUSED, "2026-11-24") == Claim("2026-11-24", (DOWNGRADE, PAUSED))
    assert alerts.new_claim(records, ALERT, "2026-11-24") is None
    assert alerts.new_claim(records, ALERT, "2026-11-25") == Claim("2026-11-25", (ALERT,))


def test_the_claim_a_status_change_made_is_its_new_sending_records() -> None:
    before = [record("2026-11-24", ALERT)]
    after = [*before, *alerts.claim_records(Claim("2026-11-24", (PAUSED, DOWNGRADE)), NOW)]

    assert alerts.claimed(before, after) == Claim("2026-11-24", (DOWNGRADE, PAUSED))
    assert alerts.claimed(after, after) is None


def test_an_outcome_lands_on_the_claims_sending_records_only() -> None:
    claim = Claim("2026-11-24", (DOWNGRADE,))
    records = [record("2026-11-24", ALERT, "Sending"), record("2026-11-24", DOWNGRADE, "Sending")]

    updated = alerts.with_outcome(records, claim, "Delivered")

    assert [r.outcome for r in updated] == ["Sending", "Delivered"]


def test_only_stale_sending_records_expire() -> None:
    records = [record("w", ALERT, "Sending", "2026-11-24T11:57:00Z"), record("w", DOWNGRADE, "Sending"),
               record("w", PAUSED, "Failed: x: HTTP 500 after 3 attempts")]

    expired = alerts.expire_stale(records, NOW, timedelta(minutes=5))

    assert [r.outcome.split(":")[0] for r in expired] == ["Sending", "Unknown", "Failed"]


def test_records_of_windows_no_longer_shown_are_dropped() -> None:
    records = [record("2026-11-20", ALERT), record("2026-11-24", ALERT), record("2026-11-24", PAUSED)]

    kept = alerts.keep_recent(records, {"2026-11-24"}, 10)

    assert [(r.window, r.threshold) for r in kept] == [("2026-11-24", PAUSED), ("2026-11-24", ALERT)]


def test_outcome_text_names_each_failed_target_and_the_delivered_ones() -> None:
    ok, bad = Delivery("leads", True, "delivered"), Delivery("oncall", False, "HTTP 500 after 3 attempts")

    assert alerts.outcome_text([ok]) == "Delivered"
    assert alerts.outcome_text([]) == alerts.NO_TARGETS
    assert alerts.outcome_text([ok, bad]) == "Failed: oncall: HTTP 500 after 3 attempts; delivered to leads"


def message(enforcement: str = "Enforce") -> AlertMessage:
    budget = api.Budget.model_validate({
        "metadata": {"name": "alice-daily", "namespace": "ai-budgets"},
        "spec": {"costCenter": "platform", "scope": {"kind": "Developer", "name": "alice"}, "limitUSD": "40.00",
                 "window": {"period": "Daily", "timeZone": "Europe/Berlin"}, "enforcement": enforcement},
    })
    status = api.BudgetStatus(scope="Developer/alice", spentUSD="44.5", percentUsed="111.3%", window="2026-11-24",
                              windowStart="2026-11-23T23:00:00Z", windowEnd="2026-11-24T23:00:00Z")
    return AlertMessage(budget, "platform", "ENG-1200", Claim("2026-11-24", (DOWNGRADE, PAUSED)), status)


def test_the_text_says_who_how_much_which_threshold_and_when_it_resets() -> None:
    text = message().text()

    assert text == (
        "Budget ai-budgets/alice-daily (Developer/alice, cost center platform ENG-1200) crossed its Paused "
        "threshold (110%): $44.50 of $40.00 spent (111.3%) in window 2026-11-24; requests are refused until the "
        "window resets. The window resets at 2026-11-25 00:00 CET (2026-11-24T23:00:00Z).")


def test_a_dry_run_says_traffic_is_unchanged() -> None:
    assert "dry run: enforcement would mean requests are refused until the window resets; traffic is unchanged" in (
        message("DryRun").text())


def test_the_wire_formats() -> None:
    slack, hook, pager = slack_payload(message()), webhook_payload(message()), pagerduty_payload(message(), "rk")

    assert slack == {"text": f":rotating_light: {message().text()}"}
    assert (hook["type"], hook["threshold"], hook["thresholdPercent"], hook["thresholdsCrossed"]) == (
        "spendgate.io/budget-threshold", "Paused", 110, ["Downgrade", "Paused"])
    assert hook["costCenter"] == {"name": "platform", "code": "ENG-1200"}
    assert (pager["routing_key"], pager["dedup_key"], pager["payload"]["severity"]) == (
        "rk", "spendgate/ai-budgets/alice-daily/2026-11-24/Paused", "critical")
    assert pager["payload"]["custom_details"] == hook
