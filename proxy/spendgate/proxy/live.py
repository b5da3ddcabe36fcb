"""Cluster mode's live spend loop: report this proxy's spend, learn the fleet's, and say so when the
API server is away.

- Report: at most once a second when something changed, and at least once per HEARTBEAT
  regardless (so the operator can tell a quiet proxy from a gone one), the proxy's cumulative
  spend per (budget, window) goes into its own SpendReport (spendgate.adapters.reporter:
  compare-and-swap on the sequence, so retries and reordering are harmless). The journal is the
  source: a restarted proxy resumes its report and loses nothing it had answered for. On shutdown
  (SIGTERM), once the last requests have settled, one final report that says `stopped`.
- Learn: a watch on the Budgets of every namespace the bundle's budgets live in (budget ids are
  `namespace/name`) feeds `status.spentUSD` of the current window into the tracker, so every proxy
  enforces on the fleet's spend within about a second of another proxy reporting it. A new bundle
  that brings a namespace starts its watch; a namespace whose last budget left is dropped.
- The API server away (down, hung, etcd gone): the gateway keeps serving on the last known
  figures and keeps journaling. Every call has a deadline and every watch a silence limit, so a
  hang is noticed; retries back off exponentially with jitter up to RETRY_CAP and start over after
  a success, so reporting resumes within about two seconds of the API server's return. One
  warning per outage and one line when it ends (`Outage`), and two ages as metrics: of the last
  report the API server accepted, and of the last word on each Budget watch.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from decimal import Decimal
from time import monotonic
from typing import Any, Final

import aiohttp

from spendgate.adapters.kube import LISTED, Kube, KubeError, custom_path
from spendgate.adapters.reporter import SequenceConflict, SpendReporter
from spendgate.logic.reportstate import ReportState
from spendgate.logic.tracker import Charge, SpendTracker

logger = logging.getLogger("spendgate.proxy.live")

REPORT_INTERVAL: Final = 1.0
HEARTBEAT: Final = timedelta(seconds=15)  # the operator's --report-timeout (60 s) allows four missed ones
FOLLOW_INTERVAL: Final = 1.0  # how often the bundle's namespaces are compared with the watches
# A report or a listing that takes longer meets a hung API server (or one whose etcd is away: such a
# write is answered only at this deadline). Kubernetes' own SLO for a write is 1 s at the 99th percentile.
REQUEST_SECONDS: Final = 3.0
RETRY_FIRST: Final = 0.25
RETRY_CAP: Final = 2.0
REFUSED_RETRY: Final = 30.0  # the API server answered "no" (RBAC, a bad request): asking often will not help
FINAL_REPORT_TIMEOUT: Final = 5.0
# What a call to the API server can fail with; everything else is a bug and should surface.
API_FAILURES: Final = (KubeError, aiohttp.ClientError, OSError, TimeoutError, ValueError)


class LiveSpend:
    def __init__(self, kube: Kube, tracker: SpendTracker, report_namespace: str, proxy_name: str,
                 budget_namespaces: Callable[[], Collection[str]], now: Callable[[], datetime],
                 outage: Outage | None = None) -> None:
        self._kube = kube
        self._tracker = tracker
        self._state = ReportState(proxy_name)
        self._reporter = SpendReporter(kube, report_namespace, proxy_name, self._state)
        self._budget_namespaces = budget_namespaces
        self._now = now
        self.outage = outage or Outage()
        self._report_accepted = monotonic()  # before the first report: since start
        self._watch_heard: dict[str, float] = {}  # namespace -> when its watch last heard the API server

    async def run(self) -> None:
        # Our SpendReport first: until we know what it holds, a status (which includes it) would
        # count our reported spend twice, once in the status and once in our journal.
        await retrying("read its SpendReport", self._resume, self.outage)
        await asyncio.gather(self._report_forever(), self._follow_namespaces())

    def ages(self) -> tuple[float, dict[str, float]]:
        """Seconds since the API server accepted our last report, and since each watch last heard it."""
        now = monotonic()
        return now - self._report_accepted, {ns: now - at for ns, at in self._watch_heard.items()}

    # report --------------------------------------------------------------------------------

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            await retrying("report spend", self.report_once, self.outage)

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
        that never comes back, a rolling update, would leave it out of Budget.status for good), and
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

    async def _follow_namespaces(self) -> None:
        """One watch per namespace of the bundle's budgets, kept in step as bundles come and go."""
        watches: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                self._restart_ended(watches)
                wanted = set(self._budget_namespaces())
                started, stopped = sorted(wanted - watches.keys()), sorted(watches.keys() - wanted)
                for namespace in started:
                    self._watch_heard[namespace] = monotonic()
                    watches[namespace] = asyncio.create_task(self._watch_forever(namespace))
                for namespace in stopped:
                    watches.pop(namespace).cancel()
                    self._watch_heard.pop(namespace, None)
                    self.outage.forget(_watch_activity(namespace))
                    self._tracker.forget_global(f"{namespace}/")
                if started or stopped:
                    logger.info("following the Budgets of %s (the namespaces of the budgets in the bundle)",
                                ", ".join(sorted(wanted)) or "no namespace")
                await asyncio.sleep(FOLLOW_INTERVAL)
        finally:
            for task in watches.values():
                task.cancel()
            await asyncio.gather(*watches.values(), return_exceptions=True)

    @staticmethod
    def _restart_ended(watches: dict[str, asyncio.Task[None]]) -> None:
        """A watch must never end; if a bug ends one, say so, and it is started again at once."""
        for namespace, task in list(watches.items()):
            if task.done():
                logger.error("the watch of the Budgets in %s ended; starting it again", namespace,
                             exc_info=task.exception())
                del watches[namespace]

    async def _watch_forever(self, namespace: str) -> None:
        what = _watch_activity(namespace)
        backoff = Backoff()

        def heard() -> None:
            self._watch_heard[namespace] = monotonic()
            backoff.reset()
            self.outage.answered(what)

        await retrying(what, lambda: self._watch(namespace, heard), self.outage, backoff, forever=True)

    async def _watch(self, namespace: str, heard: Callable[[], None]) -> None:
        async for kind, budgets in self._kube.watch(custom_path("budgets", namespace), contact=heard):
            if kind == LISTED:  # a fresh listing replaces what we knew of this namespace
                self._tracker.forget_global(f"{namespace}/")
            for budget in budgets:
                self._learn(kind, budget)

    def _learn(self, kind: str, budget: dict[str, Any]) -> None:
        metadata, status = budget.get("metadata") or {}, budget.get("status") or {}
        budget_id = f"{metadata.get('namespace')}/{metadata.get('name')}"
        window, spent = status.get("window"), status.get("spentUSD")
        if kind == "DELETED" or not window or spent is None:
            self._tracker.set_global(budget_id, "", None)
        else:
            self._tracker.set_global(budget_id, str(window), Decimal(str(spent)))


def _watch_activity(namespace: str) -> str:
    return f"watch the Budgets in {namespace}"


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
