"""The cluster live loop against a scripted API: what the proxy's tracker believes while reports and
statuses cross each other. Neither ordering may count this proxy's own spend twice (a false pause)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from spendgate.adapters.kube import LISTED, KubeError
from spendgate.logic.tracker import SpendTracker
from spendgate.proxy.live import LiveSpend

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

    async def request(self, method: str, path: str, body: Any = None, *_: Any, **__: Any) -> dict[str, Any]:
        if method == "GET":
            await asyncio.sleep(self.read_delay)
            if self.report is None:
                raise KubeError(404, "NotFound", "no report yet")
            return self.report
        if self.during_write is not None:
            self.during_write()
        return {}

    async def watch(self, path: str, query: dict[str, str] | None = None
                    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        yield LISTED, self.listing
        self.listed.set()
        await asyncio.Event().wait()


def live(kube: ScriptedKube, tracker: SpendTracker) -> LiveSpend:
    return LiveSpend(kube, tracker, "sg", "proxy-a", ("t",), lambda: datetime(2026, 11, 24, 12, tzinfo=UTC))  # type: ignore[arg-type]


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
