"""FleetSpend objects: the fleet's spend per budget and window, where the proxies read it.

The layout comes from the bundle (spendgate.logic.fleetspend: shards of a cost center's budgets per
namespace), so the proxies, which load the same bundle, know which shards to follow. Each step of the
reconcile loop brings the shards in line with the reports:

- a shard is written when one of its figures changed, at most once per write interval, and when
  its `asOf` falls REFRESH behind the newest report (while proxies report, heartbeats included), so
  a proxy can tell fresh figures from stale ones (spendgate_fleet_spend_age_seconds);
- a figure never goes down within a window: it is the largest of the reports' fold, the Budget's
  status and the figure already published, so a restarted operator, a deleted report or a pruned
  entry lose nothing;
- a window that ends is written at once (its budgets start again at their new window's fold);
- shards no longer in the layout are deleted.

Every write is conditional on the resourceVersion the loop saw; a conflict waits for the watch.
`publish` also says which budgets' state or window moved away from their Budget.status, so the
reconciler writes those statuses first (alerts and Events follow from them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from math import ceil
from time import monotonic
from typing import Any, Final

from spendgate.adapters.kube import Kube, KubeError, custom_path
from spendgate.api import v1alpha1 as api
from spendgate.logic import fleetspend
from spendgate.logic.spend import Thresholds, exact
from spendgate.logic.windows import UnknownTimeZone, Window, rfc3339, window_at
from spendgate.operator.metrics import OperatorMetrics
from spendgate.operator.spendindex import SpendIndex
from spendgate.operator.world import FLEET_SPEND, Published, World
from spendgate.policy.bundle import BudgetEntry, Bundle

logger = logging.getLogger(__name__)

REFRESH: Final = timedelta(seconds=10)
REFRESH_CHECK: Final = 1.0
MAX_REPORT_INTERVAL: Final = 10.0  # well inside the proxies' 15 s heartbeat
# Writes in flight at once: each shard is written on its own, so a slow API server delays figures by its
# latency, not by the number of shards times it.
CONCURRENCY: Final = 32
MANAGED_BY: Final = {"app.kubernetes.io/name": "spendgate", "app.kubernetes.io/component": "fleet-spend",
                     "app.kubernetes.io/managed-by": "spendgate-operator"}


class Windows:
    """The current window of each (period, time zone), computed once per window, not once per figure."""

    def __init__(self) -> None:
        self._current: dict[tuple[str, str], Window] = {}

    def at(self, budget: BudgetEntry, now: datetime) -> Window | None:
        key = (budget.window.period, budget.window.timeZone)
        window = self._current.get(key)
        if window is None or not window.start <= now < window.end:
            try:
                window = self._current[key] = window_at(budget.window.period, budget.window.timeZone, now)
            except UnknownTimeZone:
                return None  # the compiler refuses such budgets; nothing to count in
        return window


@dataclass(frozen=True)
class Figure:
    budget: BudgetEntry
    window: Window
    spent: Decimal


def figures(budgets: Iterable[BudgetEntry], spend: SpendIndex, windows: Windows, now: datetime,
            floor: Callable[[str, str], Decimal]) -> list[Figure]:
    """Each budget's spend in its current window: the reports' fold, never below `floor(budget, window)`."""
    found = []
    for budget in budgets:
        window = windows.at(budget, now)
        if window is not None:
            spent = max(spend.fold(budget.id, window.id).spent, floor(budget.id, window.id))
            found.append(Figure(budget, window, spent))
    return found


def spec_of(cost_center: str, found: Iterable[Figure], as_of: datetime | None, report_interval: float
            ) -> dict[str, Any]:
    spec = api.FleetSpendSpec(
        costCenter=cost_center, asOf=rfc3339(as_of) if as_of else None, reportIntervalSeconds=report_interval,
        budgets=[api.FleetSpendEntry(budget=f.budget.id.partition("/")[2], window=f.window.id, spentUSD=exact(f.spent))
                 for f in sorted(found, key=lambda f: f.budget.id)])
    return api.as_json(spec)


def published_figures(published: Published | None) -> dict[tuple[str, str], Decimal]:
    """(budget name, window) -> the figure a FleetSpend holds; one that cannot be read holds nothing."""
    entries = published.spec.get("budgets") if published else None
    found = {}
    for entry in entries if isinstance(entries, list) else []:
        try:
            found[(str(entry["budget"]), str(entry["window"]))] = Decimal(str(entry["spentUSD"]))
        except (KeyError, TypeError, ArithmeticError):
            continue
    return found


class FleetSpendPublisher:
    def __init__(self, kube: Kube, world: World, metrics: OperatorMetrics, namespaces: Iterable[str],
                 write_interval: float, retry_delay: float, written: Callable[[], None]) -> None:
        self._kube, self._world, self._metrics, self._written = kube, world, metrics, written
        self._namespaces = frozenset(namespaces)  # the watched ones: where stale shards can be seen and deleted
        self._write_interval, self._retry_delay = write_interval, retry_delay
        self._writes = asyncio.Semaphore(CONCURRENCY)
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._layout: dict[str, tuple[str, list[BudgetEntry]]] = {}  # shard key -> (cost center, budgets)
        self._shard_of: dict[str, str] = {}  # budget id -> shard key (namespace/name)
        self._dirty: set[str] = set()
        self._hold: dict[str, float] = {}  # monotonic time before which a shard is not written again
        self._ends: dict[str, datetime] = {}  # shard -> the earliest end of its budgets' windows
        self._as_of_written: dict[str, datetime | None] = {}  # shard -> the asOf it holds
        self._windows = Windows()
        self._planned = False
        self._report_interval = 1.0

    def plan(self, bundle: Bundle) -> None:
        """The shards of the bundle's budgets; every shard is looked at again (limits may have moved)."""
        placed = fleetspend.shards(bundle.budgets)
        layout: dict[str, tuple[str, list[BudgetEntry]]] = {}
        for budget in bundle.budgets:
            shard = placed[budget.id]
            layout.setdefault(f"{shard.namespace}/{shard.name}", (shard.cost_center, []))[1].append(budget)
        self._dirty |= layout.keys() | self._layout.keys()
        self._layout = layout
        self._shard_of = {budget_id: f"{shard.namespace}/{shard.name}" for budget_id, shard in placed.items()}
        self._ends = {key: end for key, end in self._ends.items() if key in layout}
        self._planned = True

    def pace(self, reporters: int, writes_per_second: float) -> None:
        """How often the proxies should report: at most `writes_per_second` reports for the whole fleet,
        and never less than once a second (in half seconds, so a proxy more or less rewrites nothing)."""
        interval = min(MAX_REPORT_INTERVAL, max(1.0, ceil(2 * reporters / writes_per_second) / 2))
        if interval != self._report_interval:
            self._report_interval = interval
            self._dirty |= self._layout.keys()

    def mark(self, budget_ids: Iterable[str]) -> bool:
        """The shards of these budgets need new figures; True when one may be written now."""
        now, ready = monotonic(), False
        for budget_id in budget_ids:
            key = self._shard_of.get(budget_id)
            if key is not None:
                self._dirty.add(key)
                ready = ready or self._hold.get(key, 0.0) <= now
        return ready

    def mark_published(self, keys: Iterable[str]) -> None:
        """Someone else changed or deleted these FleetSpends: look at them again."""
        self._dirty |= set(keys)

    def figure(self, budget_id: str, window_id: str) -> Decimal:
        """What this budget's FleetSpend says for this window (a floor for its status), else 0."""
        key = self._shard_of.get(budget_id)
        if key is None:
            return Decimal(0)
        published = published_figures(self._world.published.get(key))
        return published.get((budget_id.partition("/")[2], window_id), Decimal(0))

    def next_due(self, now: datetime) -> float | None:
        """Seconds until the next shard may need writing (None: none is waiting). A shard whose asOf is
        behind the reports waits for its hold; reports that move it further wake nobody, so the
        reconciler looks again at least every REFRESH_CHECK seconds."""
        mono, as_of = monotonic(), self._as_of(now)
        waits = [self._hold.get(key, 0.0) - mono for key in self._dirty - self._in_flight]
        waits += [(end - now).total_seconds() for key, end in self._ends.items() if key not in self._in_flight]
        waits += [self._hold.get(key, 0.0) - mono for key in self._layout
                  if key not in self._in_flight and self._behind(key, as_of)]
        if self._layout:
            waits.append(REFRESH_CHECK)
        return min(waits, default=None)

    def publish(self, now: datetime, status_of: Callable[[str], Mapping[str, Any]]) -> set[str]:
        """Start writing the shards that are due (each on its own: a slow write holds up no other shard and
        not the loop); returns the budgets whose state or window moved away from their status."""
        if not self._planned:
            return set()
        mono, as_of = monotonic(), self._as_of(now)
        due = {key for key in self._dirty if self._hold.get(key, 0.0) <= mono}
        due |= {key for key, end in self._ends.items() if end <= now}
        due |= {key for key in self._layout if self._hold.get(key, 0.0) <= mono and self._behind(key, as_of)}
        due |= {key for key in self._world.published if key not in self._layout}  # to delete
        due -= self._in_flight
        self._dirty -= due
        moved: set[str] = set()
        for key in sorted(due):
            job = self._job(key, now, as_of, status_of, moved)
            if job is not None:
                self._start(key, job)
        return moved

    def _start(self, key: str, job: Coroutine[Any, Any, None]) -> None:
        self._in_flight.add(key)
        self._hold[key] = monotonic() + self._write_interval  # from the start: a slow reply stretches nothing
        task = asyncio.create_task(job, name=f"FleetSpend {key}")

        def done(_: asyncio.Task[None]) -> None:
            self._in_flight.discard(key)
            self._tasks.discard(task)
            self._written()  # the loop looks at the shards again: this one may have changed meanwhile

        self._tasks.add(task)
        task.add_done_callback(done)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _as_of(self, now: datetime) -> datetime | None:
        newest = self._world.spend.newest
        return min(newest, now) if newest is not None else None  # a clock ahead of ours cannot freeze the age

    def _behind(self, key: str, as_of: datetime | None) -> bool:
        """Whether this shard was never written, or its asOf is REFRESH behind the newest report."""
        if key not in self._world.published:
            return True
        if as_of is None:
            return False
        written = self._as_of_written.get(key)
        return written is None or as_of - written >= REFRESH

    def _job(self, key: str, now: datetime, as_of: datetime | None, status_of: Callable[[str], Mapping[str, Any]],
             moved: set[str]) -> Coroutine[Any, Any, None] | None:
        """The write (or delete) this shard needs, if any; its figures are computed now."""
        planned = self._layout.get(key)
        if planned is None:
            return self._delete(key)
        cost_center, budgets = planned
        published = self._world.published.get(key)
        before = published_figures(published)

        def floor(budget_id: str, window_id: str) -> Decimal:
            status = status_of(budget_id)
            carried = Decimal(str(status["spentUSD"])) if status.get("window") == window_id and status.get(
                "spentUSD") is not None else Decimal(0)
            return max(carried, before.get((budget_id.partition("/")[2], window_id), Decimal(0)))

        found = figures(budgets, self._world.spend, self._windows, now, floor)
        moved |= {f.budget.id for f in found if _moved(f, status_of(f.budget.id))}
        self._ends[key] = min((f.window.end for f in found), default=now + timedelta(days=1))
        spec = spec_of(cost_center, found, as_of, self._report_interval)
        if published is not None and _same(published.spec, spec) and not self._behind(key, as_of):
            return None
        return self._write(key, spec, published)

    async def _write(self, key: str, spec: dict[str, Any], published: Published | None) -> None:
        namespace, name = key.split("/", 1)
        metadata: dict[str, Any] = {"name": name, "namespace": namespace,
                                    "labels": {fleetspend.SHARD_LABEL: name, **MANAGED_BY}}
        body = {"apiVersion": api.API_VERSION, "kind": FLEET_SPEND, "metadata": metadata, "spec": spec}
        try:
            async with self._writes:
                if published is None:
                    written = await self._kube.request("POST", custom_path("fleetspends", namespace), body)
                else:
                    metadata["resourceVersion"] = published.resource_version
                    written = await self._kube.request("PUT", custom_path("fleetspends", namespace, name), body)
        except KubeError as error:
            self._failed(key, error)
            return
        self._metrics.writes.labels(FLEET_SPEND, "written").inc()
        self._world.wrote(written)
        self._as_of_written[key] = datetime.fromisoformat(spec["asOf"]) if spec.get("asOf") else None

    def _failed(self, key: str, error: KubeError) -> None:
        """A conflict means the World is behind (the watch brings the newer object); anything else is
        logged. Either way the shard is looked at again after the retry delay."""
        self._metrics.writes.labels(FLEET_SPEND, str(error.status)).inc()
        if error.status == 404:
            self._world.published.pop(key, None)  # deleted meanwhile: create it
        elif error.status != 409:
            logger.error("FleetSpend %s not written: %s", key, error)
        self._dirty.add(key)
        self._hold[key] = monotonic() + self._retry_delay

    async def _delete(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        if key not in self._world.published or namespace not in self._namespaces:
            return
        try:
            async with self._writes:
                await self._kube.request("DELETE", custom_path("fleetspends", namespace, name))
        except KubeError as error:
            if error.status != 404:
                self._failed(key, error)
                return
        self._world.published.pop(key, None)
        self._metrics.writes.labels(FLEET_SPEND, "deleted").inc()

def _moved(figure: Figure, status: Mapping[str, Any]) -> bool:
    thresholds = Thresholds.of(Decimal(figure.budget.limitUSD), figure.budget.thresholds)
    return status.get("window") != figure.window.id or status.get("state") != thresholds.state(figure.spent).value


def _same(published: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """The same figures (asOf aside: refreshing it alone is not worth a write every second)."""
    return {**published, "asOf": None} == {**wanted, "asOf": None}

