"""The cluster live loop against a scripted API: what the proxy's tracker believes while reports and
statuses cross each other (neither ordering may count this proxy's own spend twice: a false pause),
which namespaces it follows as bundles change, and how it backs off and logs while the API is away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from cluster.polling import POLL
from spendgate.adapters.kube import LISTED, Contact, KubeError
from spendgate.logic.tracker import SpendTracker
from spendgate.proxy.live import RETRY_CAP, Backoff, LiveSpend, Outage, retrying

WINDOW = "2026-11-24"
ALICE = ("t/alice", WINDOW)


def budget(spent: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "t", "name": "alice"}, "status": {"window": WINDOW, "spentUSD": spent}}


class ScriptedKube:
    """Answers the live loop's calls: our SpendReport (or none), writes, and one Budget listing."""

    def __init__(self, report: dict[str, Any] | None = None, listing: list[dict[str, Any]] | None = None,
                 read_delay: float = 0.0) -> None:
        self.report, self.listing, self.read_delay = report, listing or [], read_delay
        self.during_write: Callable[[], None] | None = None
        self.listed = asyncio.Event()
        self.watching: set[str] = set()  # the paths of the watches running now

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
        self.watching.add(path)
        try:
            yield LISTED, [b for b in self.listing if f"/namespaces/{b['metadata']['namespace']}/" in path]
            self.listed.set()
            await asyncio.Event().wait()
        finally:
            self.watching.discard(path)


def live(kube: ScriptedKube, tracker: SpendTracker, namespaces: Callable[[], Collection[str]] = lambda: {"t"}
         ) -> LiveSpend:
    return LiveSpend(kube, tracker, "sg", "proxy-a", namespaces,  # type: ignore[arg-type]
                     lambda: datetime(2026, 11, 24, 12, tzinfo=UTC))


async def test_a_status_that_arrives_before_our_report_is_answered_counts_it_once() -> None:
    tracker = SpendTracker()
    tracker.settle(tracker.reserve([ALICE], Decimal(0)), "r1", Decimal("2"))
    kube = ScriptedKube()
    seen: list[Decimal] = []

    def status_overtakes_the_reply() -> None:  # the operator folded our report before its reply reached us
        tracker.set_global(*ALICE, Decimal("2"))
        seen.append(tracker.settled(*ALICE))

    kube.during_write = status_overtakes_the_reply
    assert await live(kube, tracker).report_once()
    assert seen == [Decimal("2")]
    assert tracker.settled(*ALICE) == Decimal("2")


async def test_a_restarted_proxy_reads_its_report_before_it_believes_a_status() -> None:
    """Journal 2, SpendReport 2, status 5 (3 from others + our 2): the proxy must see 5, never 7."""
    tracker = SpendTracker()
    tracker.settle(tracker.reserve([ALICE], Decimal(0)), "r1", Decimal("2"))
    report = {"spec": {"proxy": "proxy-a", "sequence": 4, "reportedAt": "2026-11-24T11:59:59Z",
                       "entries": [{"budget": "t/alice", "window": WINDOW, "spentUSD": "2", "requests": 1}]}}
    kube = ScriptedKube(report=report, listing=[budget("5")], read_delay=0.05)  # the report is slower to read
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


async def test_it_follows_the_namespaces_of_the_budgets_in_its_bundle_as_bundles_change() -> None:
    """Budgets in a namespace other than the report namespace are followed (they were not: shown Paused in
    `kubectl get budgets` while every proxy kept serving); a namespace that leaves the bundle is dropped."""
    other = {"metadata": {"namespace": "u", "name": "bob"}, "status": {"window": WINDOW, "spentUSD": "3"}}
    kube = ScriptedKube(listing=[budget("5"), other])
    tracker = SpendTracker()
    in_bundle = {"t"}
    task = asyncio.create_task(live(kube, tracker, lambda: in_bundle).run())
    try:
        await until(lambda: kube.watching == {"/apis/spendgate.io/v1alpha1/namespaces/t/budgets"}, "the watch of t")
        assert tracker.settled(*ALICE) == Decimal("5")

        in_bundle = {"t", "u"}  # a new bundle brings Budgets of namespace u
        await until(lambda: tracker.settled("u/bob", WINDOW) == Decimal("3"), "u followed")

        in_bundle = {"t"}  # ... and the next one has none left there
        await until(lambda: kube.watching == {"/apis/spendgate.io/v1alpha1/namespaces/t/budgets"}, "u dropped")
        assert tracker.settled("u/bob", WINDOW) == Decimal(0)
        assert tracker.settled(*ALICE) == Decimal("5")
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
    outage, failures = Outage(), {"report spend": 5, "watch the Budgets in t": 3}

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
    forbidden = KubeError(403, "Forbidden", 'budgets.spendgate.io is forbidden: User "system:serviceaccount:x:y" '
                                            "cannot watch resource")
    with caplog.at_level(logging.INFO, logger="spendgate.proxy.live"):
        for _ in range(3):
            outage.failed("watch the Budgets in u", forbidden)
        outage.answered("watch the Budgets in u")

    assert not outage.ongoing
    assert [r.levelname for r in caplog.records] == ["ERROR", "INFO"]
    assert "refuses to let this proxy watch the Budgets in u: 403 Forbidden" in caplog.records[0].getMessage()
    assert "RBAC" in caplog.records[0].getMessage()
