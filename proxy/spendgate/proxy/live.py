"""Cluster mode's live spend loop: report this proxy's spend, learn the fleet's.

- Report: at most once a second, and only when something changed, the proxy's cumulative spend
  per (budget, window) goes into its own SpendReport (spendgate.adapters.reporter: compare-and-swap on
  the sequence, so retries and reordering are harmless). The journal is the source: a restarted
  proxy resumes its report and loses nothing it had answered for. On shutdown (SIGTERM), once the
  last requests have settled, one final report: a pod that never comes back loses nothing either.
- Learn: a watch on the Budgets of each policy namespace feeds `status.spentUSD` of the current
  window into the tracker, so every proxy enforces on the fleet's spend within about a second
  of another proxy reporting it (the operator folds reports at most once a second per budget).

Failures are logged and retried with a backoff; enforcement carries on from the last known
figures meanwhile (the local journal keeps counting).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import aiohttp

from spendgate.adapters.kube import LISTED, Kube, KubeError, custom_path
from spendgate.adapters.reporter import SequenceConflict, SpendReporter
from spendgate.logic.reportstate import ReportState
from spendgate.logic.tracker import Charge, SpendTracker

logger = logging.getLogger("spendgate.proxy.live")

REPORT_INTERVAL: Final = 1.0
MAX_BACKOFF: Final = 30.0
FINAL_REPORT_TIMEOUT: Final = 5.0
# What a call to the API server can fail with; everything else is a bug and should surface.
API_FAILURES: Final = (KubeError, aiohttp.ClientError, OSError, TimeoutError, ValueError)


class LiveSpend:
    def __init__(self, kube: Kube, tracker: SpendTracker, report_namespace: str, proxy_name: str,
                 policy_namespaces: tuple[str, ...], now: Callable[[], datetime]) -> None:
        self._kube = kube
        self._tracker = tracker
        self._state = ReportState(proxy_name)
        self._reporter = SpendReporter(kube, report_namespace, proxy_name, self._state)
        self._namespaces = policy_namespaces
        self._now = now

    async def run(self) -> None:
        # Our SpendReport first: until we know what it holds, a status (which includes it) would
        # count our reported spend twice, once in the status and once in our journal.
        await retrying("resume the SpendReport", self._resume)
        await asyncio.gather(self._report_forever(), *(self._watch_forever(ns) for ns in self._namespaces))

    # report --------------------------------------------------------------------------------

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            await retrying("report spend", self.report_once)

    async def _resume(self) -> None:
        await self._reporter.resume()
        self._tracker.adopt(self._state.totals())
        self._tracker.set_reported(self._state.reported)

    async def report_once(self) -> bool:
        self._state.merge(self._tracker.local_totals())
        if self._state.changed:  # from now on a status may include this report, even if its reply is lost
            self._tracker.set_reported(self._state.totals())
        try:
            sent = await self._reporter.report(self._now())
        except SequenceConflict:
            await self._resume()  # someone wrote our report (a previous life of this pod): catch up
            return False
        self._tracker.set_reported(self._state.reported)
        return sent

    async def final_report(self) -> None:
        """On shutdown, after the last requests settled: report what the last second added, or a pod
        that never comes back (a rolling update) would leave it out of Budget.status for good."""
        try:
            await asyncio.wait_for(self._flush(), FINAL_REPORT_TIMEOUT)
        except API_FAILURES as error:
            logger.warning("could not write the final spend report (the journal keeps it for the next start): %s",
                           error)
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

    async def _watch_forever(self, namespace: str) -> None:
        await retrying(f"watch Budgets in {namespace}", lambda: self._watch(namespace), forever=True)

    async def _watch(self, namespace: str) -> None:
        async for kind, budgets in self._kube.watch(custom_path("budgets", namespace)):
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


async def retrying(what: str, action: Callable[[], Any], forever: bool = False) -> None:
    """Run `action` until it succeeds (or, with `forever`, keep running it), backing off on errors."""
    backoff = REPORT_INTERVAL
    while True:
        try:
            await action()
            if not forever:
                return
            backoff = REPORT_INTERVAL
        except API_FAILURES as error:
            logger.warning("could not %s, retrying in %.0f s: %s", what, backoff, error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
