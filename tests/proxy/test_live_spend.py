"""The cluster live loop against a scripted API: what the proxy's tracker believes while reports and
the fleet's figures cross each other (neither ordering may count this proxy's own spend twice: a false
pause), which FleetSpend shards it follows as its spend and bundles change, how old it knows its view
to be, and how it backs off and logs while the API is away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from cluster.polling import POLL
from spendgate.adapters.kube import LISTED, Contact, KubeError
from spendgate.api.v1alpha1 import Enforcement, Period
from spendgate.logic import fleetspend
from spendgate.logic.tracker import SpendTracker
from spendgate.policy.bundle import BudgetEntry, Bundle, ScopeEntry, ThresholdEntry, WindowEntry
from spendgate.proxy.live import RETRY_CAP, STALE_AFTER, Backoff, LiveSpend, Outage, retrying

WINDOW = "2026-11-24"
ALICE = ("t/alice", WINDOW)
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


THRESHOLDS = ThresholdEntry(alertPercent=80, downgradePercent=95, pausePercent=110)


def bundle_of(*budgets: tuple[str, str]) -> Bundle:
    """A bundle with these (budget id, cost center) pairs, daily in UTC."""
    return Bundle(budgets=[BudgetEntry(id=budget_id, costCenter=center, scope=ScopeEntry(kind="CostCenter"),
                                       limitUSD="100", window=WindowEntry(period=Period.DAILY, timeZone="UTC"),
                                       thresholds=THRESHOLDS,
                                       enforcement=Enforcement.ENFORCE)
                           for budget_id, center in budgets])


TEAM = bundle_of(("t/alice", "team"), ("u/bob", "other"))


def shard(namespace: str, center: str, as_of: datetime | None = NOW, **spent: str) -> dict[str, Any]:
    """A FleetSpend as the operator writes it: the shard of `center`'s budgets, spend per budget name."""
    name = fleetspend.shard_name(center, 0)
    spec: dict[str, Any] = {"costCenter": center, "budgets": [{"budget": budget, "window": WINDOW, "spentUSD": value}
                                                                for budget, value in spent.items()]}
    if as_of is not None:
        spec["asOf"] = as_of.isoformat()
    return {"metadata": {"namespace": namespace, "name": name, "labels": {fleetspend.SHARD_LABEL: name}},
            "spec": spec}


class ScriptedKube:
    """Answers the live loop's calls: our SpendReport (or none), writes, and FleetSpend watches that
    list what their label selector asks for, then hand out the events a test pushes."""

    def __init__(self, report: dict[str, Any] | None = None, listing: list[dict[str, Any]] | None = None,
                 read_delay: float = 0.0) -> None:
        self.report, self.listing, self.read_delay = report, listing or [], read_delay
        self.during_write: Callable[[], None] | None = None
        self.listed = asyncio.Event()
        self.watching: dict[str, str] = {}  # the path of each watch running now -> its label selector
        self.events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def request(self, method: str, path: str, body: Any = None, *_: Any, **__: Any) -> dict[str, Any]:
        if method == "GET":
            await asyncio.sleep(self.read_delay)
            if self.report is None:
                raise KubeError(404, "NotFound", "no report yet")
            return self.report
        if self.during_write is not None:
            self.during_write()
        return {}

    async def watch(self, path: str, query: dict[str, str] | None = None, contact: Contact | None = None
                    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        selector = (query or {}).get("labelSelector", "")
        self.watching[path] = selector
        try:
            yield LISTED, [item for item in self.listing if self._selects(path, selector, item)]
            self.listed.set()
            while True:
                kind, item = await self.events.get()
                if self._selects(path, selector, item):
                    yield kind, [item]
        finally:
            self.watching.pop(path, None)

    @staticmethod
    def _selects(path: str, selector: str, item: dict[str, Any]) -> bool:
        names = selector.partition("(")[2].rstrip(")").split(",")
        metadata = item["metadata"]
        return f"/namespaces/{metadata['namespace']}/" in path and metadata["labels"][fleetspend.SHARD_LABEL] in names


def live(kube: ScriptedKube, tracker: SpendTracker, bundle: Callable[[], Bundle] = lambda: TEAM,
         now: Callable[[], datetime] = lambda: NOW) -> LiveSpend:
    return LiveSpend(kube, tracker, "sg", "proxy-a", bundle, now, start_spread=0)  # type: ignore[arg-type]


def charge(tracker: SpendTracker, budget_id: str, amount: str = "0") -> None:
    """A settled request (by default free: the tests of following read the fleet's figures unmixed)."""
    tracker.settle(tracker.reserve([(budget_id, WINDOW)], Decimal(0)), "r", Decimal(amount))


async def test_a_status_that_arrives_before_our_report_is_answered_counts_it_once() -> None:
    tracker = SpendTracker()
    charge(tracker, "t/alice", "2")
    kube = ScriptedKube()
    seen: list[Decimal] = []

    def figures_overtake_the_reply() -> None:  # the operator folded our report before its reply reached us
        tracker.set_global(*ALICE, Decimal("2"))
        seen.append(tracker.settled(*ALICE))

    kube.during_write = figures_overtake_the_reply
    assert await live(kube, tracker).report_once()
    assert seen == [Decimal("2")]
    assert tracker.settled(*ALICE) == Decimal("2")


async def test_a_restarted_proxy_reads_its_report_before_it_believes_the_fleets_figures() -> None:
    """Journal 2, SpendReport 2, FleetSpend 5 (3 from others + our 2): the proxy must see 5, never 7."""
    tracker = SpendTracker()
    charge(tracker, "t/alice", "2")
    report = {"spec": {"proxy": "proxy-a", "sequence": 4, "reportedAt": "2026-11-24T11:59:59Z",
                       "entries": [{"budget": "t/alice", "window": WINDOW, "spentUSD": "2", "requests": 1}]}}
    kube = ScriptedKube(report=report, listing=[shard("t", "team", alice="5")], read_delay=0.05)
    task = asyncio.create_task(live(kube, tracker).run())
    try:
        await asyncio.wait_for(kube.listed.wait(), 5)
        assert tracker.settled(*ALICE) == Decimal("5")
    finally:
        task.cancel()


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(POLL)
    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"{what} not reached within {timeout} s") from None


T_PATH = "/apis/spendgate.io/v1alpha1/namespaces/t/fleetspends"


async def test_it_follows_only_the_shards_of_the_budgets_it_charges_in_every_namespace() -> None:
    """Nothing before the first charge; the shard of a budget charged for the first time within a second,
    in whatever namespace it lives; a shard no longer needed (its windows pruned) is dropped."""
    kube = ScriptedKube(listing=[shard("t", "team", alice="5"), shard("u", "other", bob="3")])
    tracker = SpendTracker()
    task = asyncio.create_task(live(kube, tracker).run())
    try:
        await asyncio.sleep(0.2)
        assert kube.watching == {}
        charge(tracker, "t/alice")
        await until(lambda: kube.watching == {T_PATH: f"{fleetspend.SHARD_LABEL} in (team.0)"}, "the shard of t")
        assert tracker.settled(*ALICE) == Decimal("5")

        charge(tracker, "u/bob")  # a caller of another cost center, in another namespace
        await until(lambda: tracker.settled("u/bob", WINDOW) == Decimal("3"), "u followed")

        tracker.forget({ALICE})  # u/bob's window ended and was pruned
        await until(lambda: kube.watching == {T_PATH: f"{fleetspend.SHARD_LABEL} in (team.0)"}, "u dropped")
        assert tracker.settled("u/bob", WINDOW) == Decimal(0)
        assert tracker.settled(*ALICE) == Decimal("5")
    finally:
        task.cancel()


async def test_figures_follow_the_events_and_a_budget_that_leaves_its_shard_is_forgotten() -> None:
    kube = ScriptedKube(listing=[shard("t", "team", alice="5", carol="1")])
    tracker = SpendTracker()
    charge(tracker, "t/alice")
    charge(tracker, "t/carol")
    task = asyncio.create_task(live(kube, tracker, lambda: bundle_of(("t/alice", "team"), ("t/carol", "team"))).run())
    try:
        await until(lambda: tracker.settled("t/carol", WINDOW) == Decimal(1), "the listing")
        kube.events.put_nowait(("MODIFIED", shard("t", "team", alice="7.5")))  # carol's budget was deleted
        await until(lambda: tracker.settled(*ALICE) == Decimal("7.5"), "the event")
        assert tracker.settled("t/carol", WINDOW) == Decimal(0)  # our own spend only
        kube.events.put_nowait(("DELETED", shard("t", "team")))
        await until(lambda: tracker.settled(*ALICE) == Decimal(0), "the deletion")
    finally:
        task.cancel()


async def test_a_fleetspend_that_is_not_what_the_operator_writes_is_refused_and_said_once(
        caplog: pytest.LogCaptureFixture) -> None:
    broken = shard("t", "team", alice="5")
    broken["spec"]["budgets"][0]["spentUSD"] = "5e3"  # no exponents: money is a decimal string
    kube = ScriptedKube(listing=[broken])
    tracker = SpendTracker()
    charge(tracker, "t/alice")
    with caplog.at_level(logging.INFO, logger="spendgate.proxy.live"):
        task = asyncio.create_task(live(kube, tracker).run())
        try:
            await asyncio.wait_for(kube.listed.wait(), 5)
            kube.events.put_nowait(("MODIFIED", broken))
            kube.events.put_nowait(("MODIFIED", shard("t", "team", alice="6")))
            await until(lambda: tracker.settled(*ALICE) == Decimal(6), "the good figures")
        finally:
            task.cancel()
    refusals = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(refusals) == 1 and "FleetSpend t/team.0 is not what the operator writes" in refusals[0]
    assert "spentUSD" in refusals[0]


async def test_it_knows_how_old_its_view_is_and_says_so_once_it_is_stale(caplog: pytest.LogCaptureFixture) -> None:
    clock = [NOW + timedelta(seconds=3)]
    kube = ScriptedKube(listing=[shard("t", "team", as_of=NOW, alice="5")])
    tracker = SpendTracker()
    following = live(kube, tracker, now=lambda: clock[0])
    assert following.fleet_spend_age() == 0  # it follows nothing yet
    charge(tracker, "t/alice")
    with caplog.at_level(logging.INFO, logger="spendgate.proxy.live"):
        task = asyncio.create_task(following.run())
        try:
            await asyncio.wait_for(kube.listed.wait(), 5)
            assert following.fleet_spend_age() == pytest.approx(3)
            assert following.ages().fleet_spend == pytest.approx(3)
            clock[0] = NOW + timedelta(seconds=STALE_AFTER + 5)  # the operator wrote nothing newer
            await until(lambda: any("over 60 s old" in r.getMessage() for r in caplog.records), "the warning")
            kube.events.put_nowait(("MODIFIED", shard("t", "team", as_of=clock[0], alice="6")))
            await until(lambda: any("fresh again" in r.getMessage() for r in caplog.records), "fresh again")
            assert following.fleet_spend_age() == 0
        finally:
            task.cancel()
    assert [r.levelname for r in caplog.records if "old" in r.getMessage() or "fresh" in r.getMessage()] == [
        "WARNING", "INFO"]


async def test_a_shard_it_follows_that_never_arrives_ages_from_when_it_began_following() -> None:
    kube = ScriptedKube()  # the operator has not written it (not running, or too old to know FleetSpends)
    tracker = SpendTracker()
    charge(tracker, "t/alice")
    following = live(kube, tracker)
    task = asyncio.create_task(following.run())
    try:
        await asyncio.wait_for(kube.listed.wait(), 5)
        await asyncio.sleep(0.3)
        assert 0.3 <= following.fleet_spend_age() < 5
    finally:
        task.cancel()


def test_the_backoff_grows_with_jitter_up_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(12)]
    backoff.reset()

    assert all(0 < delay <= RETRY_CAP for delay in delays)
    assert max(delays[6:]) > RETRY_CAP / 2 - 1e-9 and min(delays[6:]) >= RETRY_CAP / 2
    assert backoff.next_delay() <= 0.25
    assert len(set(delays[6:])) > 1  # jitter: a fleet does not retry in lockstep


async def test_an_outage_is_logged_once_when_it_begins_and_once_when_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    outage, failures = Outage(), {"report spend": 5, "watch the fleet's spend in t": 3}

    def flaky(what: str) -> Callable[[], Any]:
        async def call() -> None:
            if failures[what] > 0:
                failures[what] -= 1
                raise aiohttp.ClientConnectionError("Cannot connect to host 127.0.0.1:6443")
        return call

    with caplog.at_level(logging.INFO, logger="spendgate.proxy.live"):
        await asyncio.gather(*(retrying(what, flaky(what), outage, Backoff(0.001, 0.01)) for what in failures))

    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == ["WARNING", "INFO"], lines
    assert "does not answer (could not report spend: ClientConnectionError: Cannot connect" in lines[0][1]
    assert lines[1][1].startswith("the API server answers again after ")
    assert not outage.ongoing


async def test_a_refusal_is_no_outage_and_is_logged_once_with_what_to_fix(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage()
    forbidden = KubeError(403, "Forbidden", 'fleetspends.spendgate.io is forbidden: User "system:serviceaccount:x:y" '
                                            "cannot watch resource")
    with caplog.at_level(logging.INFO, logger="spendgate.proxy.live"):
        for _ in range(3):
            outage.failed("watch the fleet's spend in u", forbidden)
        outage.answered("watch the fleet's spend in u")

    assert not outage.ongoing
    assert [r.levelname for r in caplog.records] == ["ERROR", "INFO"]
    assert "refuses to let this proxy watch the fleet's spend in u: 403 Forbidden" in caplog.records[0].getMessage()
    assert "RBAC" in caplog.records[0].getMessage()
