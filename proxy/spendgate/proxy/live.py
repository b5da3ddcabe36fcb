"""Cluster mode's live spend loop: report this proxy's spend, learn the fleet's, and say so when the
API server is away.

- Report: at most once a second when something changed, and at least once per HEARTBEAT
  regardless (so the operator can tell a quiet proxy from a gone one), the proxy's cumulative
  spend per (budget, window) goes into its own SpendReport (spendgate.adapters.reporter:
  compare-and-swap on the sequence, so retries and reordering are harmless). The journal is the
  source: a restarted proxy resumes its report and loses nothing it had answered for. On shutdown
  (SIGTERM), once the last requests have settled, one final report that says `stopped`.
- Learn: the operator publishes the fleet's spend per budget and window in FleetSpend objects, each
  a shard of a cost center's budgets (spendgate.logic.fleetspend; docs/fleet.md). The proxy watches,
  per namespace and with a label selector, only the shards of the budgets it has spend on or in
  flight, and feeds their figures into the tracker, so it enforces on the fleet's spend within about
  a second of another proxy reporting it, and receives a few small events a second however large
  the fleet. A budget it charges for the first time is followed within FOLLOW_INTERVAL.
- Staleness is said: the age of the oldest figures it enforces on (from the newest report the
  operator had folded into them) is a metric, and a warning once it passes STALE_AFTER.
- The API server away (down, hung, etcd gone): the gateway keeps serving on the last known
  figures and keeps journaling. Every call has a deadline and every watch a silence limit, so a
  hang is noticed; retries back off exponentially with jitter up to RETRY_CAP and start over after
  a success, so reporting resumes within about two seconds of the API server's return. One
  warning per outage and one line when it ends (`Outage`), and ages as metrics: of the last report
  the API server accepted, of the last word on each watch, and of the fleet's spend itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from time import monotonic
from typing import Any, Final

import aiohttp
from pydantic import ValidationError

from spendgate.adapters.kube import LISTED, Kube, KubeError, custom_path
from spendgate.adapters.reporter import SequenceConflict, SpendReporter
from spendgate.api import v1alpha1 as api
from spendgate.logic import fleetspend
from spendgate.logic.reportstate import ReportState
from spendgate.logic.tracker import Charge, SpendTracker
from spendgate.policy.bundle import Bundle
from spendgate.proxy.metrics import ControlPlaneAges

logger = logging.getLogger("spendgate.proxy.live")

REPORT_INTERVAL: Final = 1.0
HEARTBEAT: Final = timedelta(seconds=15)  # the operator's --report-timeout (60 s) allows four missed ones
FOLLOW_INTERVAL: Final = 1.0  # how often the shards to follow are compared with the watches
# The operator refreshes every FleetSpend while proxies report (heartbeats every 15 s included), so
# figures older than this mean the operator, the API server or the watch is behind.
STALE_AFTER: Final = 60.0
# A report or a listing that takes longer meets a hung API server (or one whose etcd is away: such a
# write is answered only at this deadline). Kubernetes' own SLO for a write is 1 s at the 99th percentile.
REQUEST_SECONDS: Final = 3.0
RETRY_FIRST: Final = 0.25
RETRY_CAP: Final = 2.0
REFUSED_RETRY: Final = 30.0  # the API server answered "no" (RBAC, a bad request): asking often will not help
FINAL_REPORT_TIMEOUT: Final = 5.0
START_SPREAD: Final = 5.0
# What a call to the API server can fail with; everything else is a bug and should surface.
API_FAILURES: Final = (KubeError, aiohttp.ClientError, OSError, TimeoutError, ValueError)
ShardKey = tuple[str, str]  # (namespace, FleetSpend name)


class LiveSpend:
    def __init__(self, kube: Kube, tracker: SpendTracker, report_namespace: str, proxy_name: str,
                 bundle: Callable[[], Bundle], now: Callable[[], datetime], outage: Outage | None = None,
                 start_spread: float = START_SPREAD) -> None:
        self._kube = kube
        self._tracker = tracker
        self._state = ReportState(proxy_name)
        self._reporter = SpendReporter(kube, report_namespace, proxy_name, self._state)
        self._bundle = bundle
        self._placed: tuple[Bundle, dict[str, fleetspend.Shard]] | None = None  # the bundle's shards, once
        self._now = now
        self._start_spread = start_spread
        self.outage = outage or Outage()
        self._report_accepted = monotonic()  # before the first report: since start
        self._watch_heard: dict[str, float] = {}  # namespace -> when its watch last heard the API server
        self._followed_since: dict[ShardKey, float] = {}  # the shards followed now, since when
        self._figures: dict[ShardKey, set[str]] = {}  # the budgets each shard's figures told the tracker about
        self._as_of: dict[ShardKey, datetime | None] = {}  # the newest report folded into each shard's figures
        self._refused: dict[ShardKey, str] = {}  # shards whose content was refused, and why (logged once)
        self._report_intervals: dict[ShardKey, float | None] = {}  # what each shard's operator asked for
        self._stale = False

    async def run(self) -> None:
        # A fleet that starts at once (a rollout, a node pool coming back) spreads its first calls, or
        # hundreds of proxies would ask at the same instant and time out together. Meanwhile the proxy
        # serves on its own spend, journaled.
        await asyncio.sleep(random.uniform(0, self._start_spread))
        # Our SpendReport first: until we know what it holds, the fleet's figures (which include it)
        # would count our reported spend twice, once in them and once in our journal.
        await retrying("read its SpendReport", self._resume, self.outage)
        await asyncio.gather(self._report_forever(), self._follow_fleet_spend())

    def ages(self) -> ControlPlaneAges:
        now = monotonic()
        return ControlPlaneAges(now - self._report_accepted, {ns: now - at for ns, at in self._watch_heard.items()},
                                self.fleet_spend_age())

    # report --------------------------------------------------------------------------------

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval())
            await retrying("report spend", self.report_once, self.outage)

    def report_interval(self) -> float:
        """Once a second, or as seldom as the operator asks (a large fleet shares the API server's write
        budget: FleetSpend's reportIntervalSeconds), within the heartbeat."""
        asked = [interval for interval in self._report_intervals.values() if interval is not None]
        return min(max([REPORT_INTERVAL, *asked]), HEARTBEAT.total_seconds() / 2)

    async def _resume(self) -> None:
        await self._reporter.resume()
        self._tracker.adopt(self._state.totals())
        self._tracker.set_reported(self._state.reported)

    async def report_once(self) -> bool:
        self._state.merge(self._tracker.local_totals())
        if self._state.changed:  # from now on a status may include this report, even if its reply is lost
            self._tracker.set_reported(self._state.totals())
        try:
            sent = await self._reporter.report(self._now(), HEARTBEAT)
        except SequenceConflict:
            await self._resume()  # someone wrote our report (a previous life of this pod): catch up
            return False
        self._tracker.set_reported(self._state.reported)
        if sent:
            self._report_accepted = monotonic()
        return sent

    async def final_report(self) -> None:
        """On shutdown, after the last requests settled: report what the last second added (or a pod
        that never comes back, a rolling update, would leave it out of the fleet's spend for good), and
        say that this proxy stopped, so its silence from now on alarms nobody."""
        self._state.stop()
        try:
            await asyncio.wait_for(self._flush(), FINAL_REPORT_TIMEOUT)
        except API_FAILURES as error:
            logger.warning("could not write the final spend report (the journal keeps it for the next start): %s",
                           describe(error))
        finally:
            await self._kube.close()

    async def _flush(self) -> None:
        for _ in range(2):  # a sequence conflict reads our report back; then once more
            await self.report_once()
            if not self._state.changed:
                return

    def prune(self, ended: set[Charge]) -> None:
        """Forget ended windows once their final value is in the SpendReport the API holds."""
        local = self._tracker.local_totals()
        final = {charge for charge in ended
                 if charge in local and self._state.reported.get(charge) == local[charge].spent}
        if final:
            self._state.forget(lambda charge: charge in final)
            self._tracker.forget(set(local) - final)

    # learn ---------------------------------------------------------------------------------

    def following(self) -> dict[str, frozenset[str]]:
        """namespace -> the FleetSpend shards of the budgets this proxy has spend on or in flight."""
        bundle = self._bundle()
        if self._placed is None or self._placed[0] is not bundle:  # once per bundle
            self._placed = (bundle, fleetspend.shards(bundle.budgets))
        return fleetspend.to_follow(self._tracker.budgets(), self._placed[1])

    async def _follow_fleet_spend(self) -> None:
        """One watch per namespace, of the shards this proxy needs, started again when they change."""
        watches: dict[str, tuple[frozenset[str], asyncio.Task[None]]] = {}
        try:
            while True:
                self._restart_ended(watches)
                wanted = self.following()
                for namespace in sorted(watches.keys() - wanted.keys()):
                    watches.pop(namespace)[1].cancel()
                    self._drop_namespace(namespace)
                mono = monotonic()
                self._followed_since = {(ns, name): self._followed_since.get((ns, name), mono)
                                        for ns, names in wanted.items() for name in names}
                changed = sorted(ns for ns, names in wanted.items() if ns not in watches or watches[ns][0] != names)
                for namespace in changed:
                    if namespace in watches:
                        watches[namespace][1].cancel()  # what it learnt stands until the new listing replaces it
                    self._watch_heard.setdefault(namespace, mono)
                    watches[namespace] = (wanted[namespace], asyncio.create_task(
                        self._watch_forever(namespace, wanted[namespace])))
                if changed:
                    logger.info("following the fleet's spend of %s", "; ".join(
                        f"{ns}: {', '.join(sorted(names))}" for ns, names in sorted(wanted.items())))
                self._say_when_stale()
                await asyncio.sleep(FOLLOW_INTERVAL)
        finally:
            for _, task in watches.values():
                task.cancel()
            await asyncio.gather(*(task for _, task in watches.values()), return_exceptions=True)

    @staticmethod
    def _restart_ended(watches: dict[str, tuple[frozenset[str], asyncio.Task[None]]]) -> None:
        """A watch must never end; if a bug ends one, say so, and it is started again at once."""
        for namespace, (_, task) in list(watches.items()):
            if task.done() and not task.cancelled():
                logger.error("the watch of the fleet's spend in %s ended; starting it again", namespace,
                             exc_info=task.exception())
                del watches[namespace]

    def _drop_namespace(self, namespace: str) -> None:
        """Nothing left to follow there (its budgets left the bundle, or their windows were pruned)."""
        self._watch_heard.pop(namespace, None)
        self.outage.forget(_watch_activity(namespace))
        for key in [key for key in self._figures if key[0] == namespace]:
            self._forget_shard(key)

    async def _watch_forever(self, namespace: str, names: frozenset[str]) -> None:
        what = _watch_activity(namespace)
        backoff = Backoff()

        def heard() -> None:
            self._watch_heard[namespace] = monotonic()
            backoff.reset()
            self.outage.answered(what)

        await retrying(what, lambda: self._watch(namespace, names, heard), self.outage, backoff, forever=True)

    async def _watch(self, namespace: str, names: frozenset[str], heard: Callable[[], None]) -> None:
        query = {"labelSelector": fleetspend.selector(names)}
        async for kind, items in self._kube.watch(custom_path("fleetspends", namespace), query, contact=heard):
            if kind == LISTED:  # a fresh listing replaces what we knew of this namespace
                listed = {(namespace, str((item.get("metadata") or {}).get("name"))) for item in items}
                for key in [key for key in self._figures if key[0] == namespace and key not in listed]:
                    self._forget_shard(key)
            for item in items:
                self._learn(namespace, kind, item)

    def _learn(self, namespace: str, kind: str, item: dict[str, Any]) -> None:
        key = (namespace, str((item.get("metadata") or {}).get("name")))
        if kind == "DELETED":
            self._forget_shard(key)
            return
        try:
            spec = api.FleetSpendSpec.model_validate(item.get("spec") or {})
            as_of = datetime.fromisoformat(spec.asOf) if spec.asOf else None
        except (ValidationError, ValueError) as error:
            if self._refused.get(key) != str(error):  # once per content, not once per second
                logger.error("FleetSpend %s/%s is not what the operator writes; enforcing without its figures: %s",
                             *key, error)
                self._refused[key] = str(error)
            self._forget_shard(key)
            return
        self._refused.pop(key, None)
        figures = fleetspend.figures(namespace, spec)
        self._tracker.forget_global(self._figures.get(key, set()) - {figure.budget_id for figure in figures})
        for figure in figures:
            self._tracker.set_global(figure.budget_id, figure.window, figure.spent)
        self._figures[key] = {figure.budget_id for figure in figures}
        self._as_of[key] = as_of
        self._report_intervals[key] = spec.reportIntervalSeconds

    def _forget_shard(self, key: ShardKey) -> None:
        self._tracker.forget_global(self._figures.pop(key, set()))
        self._as_of.pop(key, None)
        self._report_intervals.pop(key, None)

    # how old the view is -------------------------------------------------------------------

    def fleet_spend_age(self) -> float:
        """Seconds since the newest report folded into the oldest figures this proxy enforces on (since it
        began following them, while it has none); 0 while it follows nothing."""
        now, mono = self._now(), monotonic()
        ages = []
        for key, since in self._followed_since.items():
            as_of = self._as_of.get(key)
            ages.append(max(0.0, (now - as_of).total_seconds()) if as_of is not None else mono - since)
        return max(ages, default=0.0)

    def _say_when_stale(self) -> None:
        """Once when the view grows older than STALE_AFTER, once when it is fresh again."""
        stale = self.fleet_spend_age() > STALE_AFTER
        if stale and not self._stale:
            logger.warning("the fleet's spend this proxy enforces on is over %.0f s old (is the operator running?): "
                           "other proxies' spend since then is not counted, only this proxy's own",
                           STALE_AFTER)
        elif self._stale and not stale:
            logger.info("the fleet's spend this proxy enforces on is fresh again")
        self._stale = stale


def _watch_activity(namespace: str) -> str:
    return f"watch the fleet's spend in {namespace}"


# the API server away -------------------------------------------------------------------------


class Backoff:
    """Capped exponential backoff with jitter; `reset()` after a success starts it over."""

    def __init__(self, first: float = RETRY_FIRST, cap: float = RETRY_CAP) -> None:
        self._first, self._cap, self._failures = first, cap, 0

    def next_delay(self) -> float:
        ceiling = min(self._cap, self._first * 2 ** min(self._failures, 16))
        self._failures += 1
        return random.uniform(ceiling / 2, ceiling)  # jitter: a fleet does not retry in lockstep

    def reset(self) -> None:
        self._failures = 0


class Outage:
    """Logs an outage of the API server once when it begins and once when it ends, however many
    calls of however many activities fail in between: it ends when every activity that failed has
    heard from the API server again. An answer that says "no" (a 4xx: RBAC, a bad request) is no
    outage: it is logged once per activity, with what to fix."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._failures = 0
        self._failing: set[str] = set()  # activities whose last call met no API server
        self._refused: dict[str, str] = {}  # activity -> the refusal last logged

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def failed(self, what: str, error: BaseException) -> None:
        if refusal(error):
            if self._refused.get(what) != str(error):
                self._refused[what] = str(error)
                logger.error("the API server refuses to let this proxy %s: %s; check its RBAC (the chart's "
                             "spendgate-gateway Role and RoleBindings) and flags; asking again every %.0f s",
                             what, error, REFUSED_RETRY)
            self._heard(what)
            return
        self._failures += 1
        self._failing.add(what)
        if self._since is None:
            self._since = monotonic()
            logger.warning("the API server does not answer (could not %s: %s): serving on with the last bundle and "
                           "budget figures, journaling spend, retrying every %.0f s at most; logged once per outage",
                           what, describe(error), RETRY_CAP)

    def answered(self, what: str) -> None:
        if self._refused.pop(what, None) is not None:
            logger.info("the API server lets this proxy %s again", what)
        self._heard(what)

    def forget(self, what: str) -> None:
        """An activity that ended (a namespace no longer followed) holds no outage open."""
        self._refused.pop(what, None)
        self._heard(what)

    def _heard(self, what: str) -> None:
        self._failing.discard(what)
        if self._since is not None and not self._failing:
            logger.info("the API server answers again after %.1f s (%d failed calls); reporting resumes",
                        monotonic() - self._since, self._failures)
            self._since, self._failures = None, 0


def refusal(error: BaseException) -> bool:
    """The API server answered and said no; 408 and 429 only mean "not now"."""
    return isinstance(error, KubeError) and 400 <= error.status < 500 and error.status not in (408, 429)


def describe(error: BaseException) -> str:
    """A timeout's own text is empty: name the class instead."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else f"{type(error).__name__} (no answer in time)"


async def retrying(what: str, action: Callable[[], Any], outage: Outage, backoff: Backoff | None = None,
                   forever: bool = False) -> None:
    """Run `action` until it succeeds (with `forever`, keep running it), backing off on failures."""
    backoff = backoff or Backoff()
    while True:
        try:
            await action()
        except API_FAILURES as error:
            outage.failed(what, error)
            await asyncio.sleep(REFUSED_RETRY if refusal(error) else backoff.next_delay())
            continue
        outage.answered(what)
        backoff.reset()
        if not forever:
            return
