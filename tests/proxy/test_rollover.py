"""A window that ends resets the proxy's enforcement at once, on the proxy's own clock: a developer
paused late in the day is let through at midnight in the budget's time zone, standalone (journal) or
in a cluster (the last status still says Paused for the old window, or already says the new one).

The proxies run on the real clock, so the end-to-end tests (tests/e2e) cannot roll a daily window
over; this drives the real BudgetAdmission with the request's `now`, which is all the time it reads.
The operator's side of the same rollover (status, history, WindowReset Event, with an injected
clock) is tests/operator/test_operator_windows.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from proxy.proxy_harness import Keys
from spendgate.adapters.journal import SpendJournal
from spendgate.logic.pricing import PriceBook
from spendgate.logic.tracker import SpendTracker
from spendgate.policy.bundle import SignedBundle
from spendgate.proxy.admission import AdmissionRequest, Endpoint, Forward, Reject
from spendgate.proxy.attribution import Attribution, Identity
from spendgate.proxy.bundles import PolicyDirectory
from spendgate.proxy.enforce import BudgetAdmission, ended_charges

BUDGET = "ai-budgets/alice-daily"  # $40 a day in Europe/Berlin (examples/policies)
LAST_SECOND = datetime(2026, 11, 24, 22, 59, 59, tzinfo=UTC)  # 23:59:59 in Berlin
MIDNIGHT = LAST_SECOND + timedelta(seconds=1)  # 00:00 on 2026-11-25 in Berlin
ALICE = Attribution(Identity(key_name="alice-laptop", developer="alice", cost_center="platform"))


def request(bundle: SignedBundle, now: datetime) -> AdmissionRequest:
    return AdmissionRequest(endpoint=Endpoint.MESSAGES, attribution=ALICE, model="claude-opus-5-5", stream=False,
                            body_bytes=200, bundle=bundle,
                            prices=PriceBook(bundle.bundle.pricing), now=now)


def state(decision: Forward | object) -> str:
    assert isinstance(decision, Forward), decision
    return dict(decision.headers)["x-spendgate-budget-state"]


def test_standalone_a_paused_day_ends_at_midnight_in_the_budgets_zone(policies: Path, keys: Keys,
                                                                      tmp_path: Path) -> None:
    bundle = PolicyDirectory(policies, keys.file).load()
    journal = SpendJournal(tmp_path / "spend.journal")
    journal.append("late", [(BUDGET, "2026-11-24")], Decimal("44.00"))  # 110% of $40
    admission = BudgetAdmission(SpendTracker(journal))

    refused = admission.admit(request(bundle, LAST_SECOND))
    assert isinstance(refused, Reject) and refused.status == 429
    assert dict(refused.headers)["retry-after"] == "1"
    forwarded = admission.admit(request(bundle, MIDNIGHT))
    assert state(forwarded) == "Ok"
    assert dict(forwarded.headers)["x-spendgate-budget-used"] == "0.0%"
    assert (BUDGET, "2026-11-24") in ended_charges(SpendTracker(journal).local_totals(), bundle.bundle, MIDNIGHT)


def test_in_a_cluster_the_old_windows_status_no_longer_counts(policies: Path, keys: Keys) -> None:
    bundle = PolicyDirectory(policies, keys.file).load()
    tracker = SpendTracker()
    admission = BudgetAdmission(tracker)
    tracker.set_global(BUDGET, "2026-11-24", Decimal("50.00"))  # Budget.status: Paused, other proxies' spend
    assert isinstance(admission.admit(request(bundle, LAST_SECOND)), Reject)

    # Past midnight before the operator has rolled the status over: the old window's figure is not today's.
    assert state(admission.admit(request(bundle, MIDNIGHT))) == "Ok"
    # The operator rolled it over: the new window starts at zero, and its spend counts as it comes.
    tracker.set_global(BUDGET, "2026-11-25", Decimal("0"))
    assert state(admission.admit(request(bundle, MIDNIGHT + timedelta(seconds=2)))) == "Ok"
    tracker.set_global(BUDGET, "2026-11-25", Decimal("33.00"))  # 82.5%
    assert state(admission.admit(request(bundle, MIDNIGHT + timedelta(seconds=3)))) == "Alert"
