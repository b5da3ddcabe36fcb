"""The level-based reconcile loop: one task that turns what the watches saw into API writes.

kopf's event handlers only record objects in the World and mark what is dirty; this loop then
(1) recompiles the bundle when policy objects or key Secrets changed and publishes it where its
hash differs, (2) publishes the fleet's spend in FleetSpends (fleetspend.py), which the proxies
enforce on, each shard at most once per `write_interval`, (3) recomputes the status of dirty
objects and of Budgets whose window just ended, and writes the ones that changed, each Budget at
most once per `write_interval`; a Budget whose spend alone changed shares `status_writes_per_second`
with the others unless its state or window moved (docs/fleet.md), (4) rolls CostCenter statuses up,
and (5) sends the alerts its status writes claimed.

Every status write carries the resourceVersion the loop computed from. A 409 means the World is
behind; the loop then waits for the watch to deliver the newer object instead of retrying on
stale data. That is also what keeps a paused HA peer (kopf stops its watches) from overwriting
anything newer than what it has seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable, Sequence
from contextlib import suppress
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from time import monotonic
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from spendgate.adapters.auditlog import AuditLogWriter
from spendgate.adapters.keysecrets import KIND as KEY_KIND
from spendgate.adapters.keysecrets import LABEL as KEY_LABEL
from spendgate.adapters.kube import MERGE_PATCH, METADATA_LIST, Kube, KubeError, core_path, custom_path, merge_patch
from spendgate.api import v1alpha1 as api
from spendgate.operator import alerts
from spendgate.operator.audit import AuditTrail, budget_records
from spendgate.operator.budgetstatus import BudgetInputs, budget_status, next_change
from spendgate.operator.clock import Clock
from spendgate.operator.conditions import ready_condition, set_condition
from spendgate.operator.config import OperatorConfig
from spendgate.operator.deliver import Notifier
from spendgate.operator.fleetspend import FleetSpendPublisher
from spendgate.operator.housekeeping import counts_now, deletable_reports
from spendgate.operator.metrics import OperatorMetrics
from spendgate.operator.notify import AlertMessage
from spendgate.operator.policystatus import BudgetSummary, cost_center_statuses, routing_policy_status
from spendgate.operator.provenance import ProvenanceTracker
from spendgate.operator.publisher import BundlePublisher
from spendgate.operator.recorder import EventRecorder
from spendgate.operator.reporting import Reporters, reporters
from spendgate.operator.transitions import EventNote, budget_events, ready_events
from spendgate.operator.world import (
    BUDGET,
    COST_CENTER,
    FLEET_SPEND,
    POLICY_KINDS,
    ROUTING_POLICY,
    SECRET,
    SPEND_REPORT,
    Change,
    Seen,
    World,
    object_key,
)
from spendgate.policy.compiler import compile_policies
from spendgate.policy.errors import PolicyError

logger = logging.getLogger(__name__)

PLURALS = {COST_CENTER: "costcenters", BUDGET: "budgets", ROUTING_POLICY: "routingpolicies",
           SPEND_REPORT: "spendreports", FLEET_SPEND: "fleetspends"}
RELIST_AFTER = 3.0  # seconds without progress before the initial-sync check lists again
STATUS_BATCH = 16  # statuses written per step of the loop
SYNC_POLL = 0.05
ALERT_TIMEOUT_MARGIN = timedelta(seconds=30)

ObjectRef = tuple[str, str]  # (kind, key)
ErrorKey = tuple[str, str | None, str]  # (kind, namespace, name)
StatusModel = TypeVar("StatusModel", api.BudgetStatus, api.CostCenterStatus, api.RoutingPolicyStatus)


class Reconciler:
    def __init__(self, config: OperatorConfig, kube: Kube, clock: Clock, metrics: OperatorMetrics) -> None:
        self.config = config
        self.world = World()
        self.synced = False
        self._kube = kube
        self._clock = clock
        self._metrics = metrics
        self._notifier = Notifier(kube, config.alert_backoffs, config.alert_request_timeout)
        self._publisher = BundlePublisher(kube, config.bundle_targets, config.namespace, metrics)
        self._recorder = EventRecorder(kube, config.identity, clock)
        self._provenance = ProvenanceTracker(kube, config.argocd_namespace)
        self._audit = AuditTrail(AuditLogWriter(kube, config.namespace, config.audit_log, config.audit_segment_bytes),
                                 metrics.registry)
        self._alert_timeout = timedelta(seconds=self._notifier.longest_delivery) + ALERT_TIMEOUT_MARGIN
        self._wake = asyncio.Event()
        self._policy_dirty = True
        self._policy_retry_at = 0.0
        self._dirty: set[ObjectRef] = set()
        self._hold: dict[ObjectRef, float] = {}  # monotonic time before which a routine write waits
        self._backoff: dict[ObjectRef, float] = {}  # monotonic time before which a failed write is not retried
        self._recheck: dict[str, datetime] = {}  # budget key -> when time alone changes its status
        self._errors: dict[ErrorKey, list[PolicyError]] = {}
        self._compiled: dict[ObjectRef, str] = {}  # the fingerprints the errors above were computed from
        self._rollup_due = True
        self._rollup_after = 0.0
        self._next_housekeeping: datetime | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._writes = asyncio.Semaphore(config.write_concurrency)
        self._fleet = FleetSpendPublisher(kube, self.world, metrics, config.watched_namespaces, config.write_interval,
                                          config.retry_delay, self._wake.set)
        # Budgets whose spend changed since their status was written, in the order they changed.
        self._spend_dirty: dict[str, None] = {}
        self._spend_moved: set[str] = set()  # ... of which the state or window moved
        self._tokens, self._tokens_at = config.status_writes_per_second, monotonic()
        self._reporters = reporters({}, clock.now(), config.report_timeout)
        self._reporters_due = True
        self._warned_no_reporter = False
        self._warned_silent: set[str] = set()

    # -- fed by kopf's event handlers ----------------------------------------------------------

    def observe(self, kind: str, event_type: str | None, body: dict[str, Any]) -> None:
        if kind in POLICY_KINDS:
            self._provenance.observe(kind, (kind, object_key(body)), event_type, body)
        if event_type == "DELETED":
            self._forget(kind, body)
            change = self.world.forget(kind, body)
        else:
            change = self.world.observe(kind, body)
        self._mark(change)
        if kind == SPEND_REPORT and self._reporter_may_change(object_key(body)):
            self._reporters_due = True
            self._wake.set()

    def _mark(self, change: Change) -> None:
        self._policy_dirty |= change.policy
        self._dirty |= change.statuses
        self._spend_dirty.update(dict.fromkeys(change.spend))
        self._fleet.mark_published(change.published)
        # Spend wakes the loop only when a shard of it may be written now: hundreds of reports a
        # second would otherwise run a step each.
        if change.policy or change.statuses or change.published or self._fleet.mark(change.spend):
            self._wake.set()

    def _reporter_may_change(self, key: str) -> bool:
        """Whether a report event may change who reports: a heartbeat of a fresh reporter does not."""
        report = self.world.spend.get(key)
        return report is None or report.stopped or key not in self._reporters.fresh

    def _forget(self, kind: str, body: dict[str, Any]) -> None:
        """A deleted object leaves no timers and no metrics behind."""
        key = object_key(body)
        self._hold.pop((kind, key), None)
        self._backoff.pop((kind, key), None)
        if kind == BUDGET:
            metadata, spec = body.get("metadata") or {}, body.get("spec") or {}
            self._metrics.forget_budget(str(metadata.get("namespace")), str(metadata.get("name")),
                                        str(spec.get("costCenter", "")))
            self._recheck.pop(key, None)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.initial_sync()
            while True:
                self._wake.clear()
                await self.step()
                await self._nap()
        finally:
            for task in list(self._deliveries):
                task.cancel()
            await self._fleet.close()
            await self._notifier.close()

    async def initial_sync(self) -> None:
        """Wait until the watches delivered every object that existed at start-up, so the first
        bundle is never compiled from a partial listing (which would drop budgets for a moment)."""
        expected, progress_at, missing_before = await self._existing_uids(), monotonic(), -1
        while missing := expected - self.world.uids - self.world.departed:
            if len(missing) != missing_before:
                progress_at, missing_before = monotonic(), len(missing)
            elif monotonic() - progress_at > RELIST_AFTER:
                expected, progress_at = await self._existing_uids(), monotonic()
            await asyncio.sleep(SYNC_POLL)
        self.world.departed.clear()
        self.synced = True
        self._metrics.synced.set(1)
        logger.info("initial listing complete: %d objects", len(self.world.uids))

    async def step(self) -> None:
        now = self._clock.now()
        # Policy changes reach the audit log before the status that shows them (docs/operator.md).
        records, changed = await self._provenance.records(now)
        await self._audit.append(records, now)
        self._dirty |= changed
        if self._policy_dirty and monotonic() >= self._policy_retry_at:
            with self._metrics.timed("compile"):
                await self._compile_and_publish(now)
        with self._metrics.timed("fleetspend"):
            self._spend_moved |= self._fleet.publish(now, self._status_of)
        changes_at = self._reporters.changes_at
        if self._reporters_due or (changes_at is not None and now >= changes_at):
            self._refresh_reporters(now)
        with self._metrics.timed("status"):
            await self._refresh_statuses(now)
        if self._rollup_due and monotonic() >= self._rollup_after:
            with self._metrics.timed("rollup"):
                await self._refresh_cost_centers(now)
        if self._next_housekeeping is None or now >= self._next_housekeeping:
            self._next_housekeeping = now + self.config.housekeeping_interval
            await self._delete_stale_reports(now)

    async def _nap(self) -> None:
        now, mono = self._clock.now(), monotonic()
        waits = [self._clock.longest_nap]
        if self._dirty:
            waits.append(min(self._due_at(ref) for ref in self._dirty) - mono)
        if self._recheck:
            waits.append((min(self._recheck.values()) - now).total_seconds())
        if self._rollup_due:
            waits.append(self._rollup_after - mono)
        if self._policy_dirty:
            waits.append(self._policy_retry_at - mono)
        if self._reporters.changes_at is not None:
            waits.append((self._reporters.changes_at - now).total_seconds())
        fleet = self._fleet.next_due(now)
        if fleet is not None:
            waits.append(fleet)
        if self._spend_dirty:
            waits.append(self._next_spend_write(mono))
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, min(waits)))

    # -- the bundle ----------------------------------------------------------------------------

    async def _compile_and_publish(self, now: datetime) -> None:
        self._policy_dirty = False
        self._reporters_due = True  # the budgets may have come or gone: whether anyone reports them matters anew
        self._compiled = {(kind, key): seen.fingerprint
                          for kind in POLICY_KINDS for key, seen in self.world.objects[kind].items()}
        objects = [obj for kind in POLICY_KINDS for obj in self.world.valid(kind).values()]
        keys = [key for entries in self.world.keys.values() if not isinstance(entries, PolicyError) for key in entries]
        result = compile_policies(objects, keys)
        errors = _grouped([*result.errors, *self._parse_errors()])
        changed = {key for key in errors.keys() | self._errors.keys() if errors.get(key) != self._errors.get(key)}
        self._errors = errors
        self._mark_changed_errors(changed)
        await self._report_key_problems(changed)
        self._fleet.plan(result.bundle.bundle)
        if not await self._publisher.publish(result.bundle):
            self._policy_dirty, self._policy_retry_at = True, monotonic() + self.config.retry_delay

    def _parse_errors(self) -> list[PolicyError]:
        parsed = [seen.parsed for kind in POLICY_KINDS for seen in self.world.objects[kind].values()]
        keys = list(self.world.keys.values())
        return [problem for problem in (*parsed, *keys) if isinstance(problem, PolicyError)]

    def _mark_changed_errors(self, changed: set[ErrorKey]) -> None:
        for kind, namespace, name in changed:
            if kind in POLICY_KINDS:
                self._dirty.add((kind, f"{namespace}/{name}" if namespace else name))
        self._dirty |= {(ROUTING_POLICY, key) for key in self.world.objects[ROUTING_POLICY]}  # "used by N"
        self._rollup_due = True

    async def _report_key_problems(self, changed: set[ErrorKey]) -> None:
        """Key Secrets have no status: their problems become Warning Events on the Secret."""
        for kind, namespace, name in sorted(changed, key=str):
            if kind != KEY_KIND:
                continue
            namespaces = [namespace] if namespace else [
                key.split("/", 1)[0] for key in self.world.keys if key.split("/", 1)[-1] == name]
            for error in self._errors.get((kind, namespace, name), []):
                for secret_namespace in namespaces:
                    reference = {"apiVersion": "v1", "kind": SECRET, "namespace": secret_namespace, "name": name}
                    await self._recorder.record(reference, EventNote("Warning", error.reason, error.message))

    # -- who reports -------------------------------------------------------------------------

    def _refresh_reporters(self, now: datetime) -> None:
        """Which proxies report; when that changes, every Budget's Reporting condition is due again."""
        self._reporters_due = False
        reports = self.world.spend.reports()
        known = reporters(reports, now, self.config.report_timeout)
        budgets = {key: b for key, b in self.world.valid(BUDGET).items() if isinstance(b, api.Budget)}
        silent = {key for key in known.silent if counts_now(reports[key], budgets, now)}
        self._dirty |= {(BUDGET, key) for key in self._reporting_moved(known, reports)}
        self._log_reporting(known, silent, bool(budgets))
        self._reporters = known
        self._fleet.pace(len(known.fresh), self.config.report_writes_per_second)
        self._metrics.reporting_proxies.set(len(known.fresh))
        self._metrics.silent_proxies.set(len(silent))

    def _reporting_moved(self, known: Reporters, reports: dict[str, api.SpendReportSpec]) -> set[str]:
        """The Budgets whose Reporting condition may change: all of them when reports start or stop
        arriving at all, else those a proxy that went silent, or spoke again, holds spend for."""
        if bool(known.fresh) != bool(self._reporters.fresh):
            return set(self.world.objects[BUDGET])
        flipped = known.silent.keys() ^ self._reporters.silent.keys()
        return {entry.budget for key in flipped if key in reports for entry in reports[key].entries}

    def _log_reporting(self, known: Reporters, silent: set[str], any_budget: bool) -> None:
        """Once per change: no proxy reports at all, or one went silent while its spend counts."""
        seconds = int(known.timeout.total_seconds())
        if not known.fresh and any_budget and not self._warned_no_reporter:
            logger.warning("no proxy has reported spend in the last %ds: Budgets are enforced by no reporting proxy "
                           "(proxies report to the namespace in the bundle ConfigMap's report-namespace key, %s)",
                           seconds, self.config.namespace)
            self._warned_no_reporter = True
        elif known.fresh and self._warned_no_reporter:
            logger.info("spend reports arrive again, from %d proxies", len(known.fresh))
            self._warned_no_reporter = False
        for key in sorted(silent - self._warned_silent):
            gone = known.silent[key]
            logger.warning("proxy %s (SpendReport %s) has not reported since %s (over %ds) and did not stop cleanly: "
                           "the spend it served since is missing from Budget status until it reports again",
                           gone.proxy, key, gone.reported_at, seconds)
        for key in sorted(self._warned_silent - silent):
            logger.info("SpendReport %s reports again, stopped, or no longer counts in a current window", key)
        self._warned_silent = silent

    # -- statuses ------------------------------------------------------------------------------

    async def _refresh_statuses(self, now: datetime) -> None:
        """At most STATUS_BATCH objects a step (the rest in the next one), so the fleet's spend, published
        first in every step, never waits behind a thousand status writes (the first report of a fleet
        changes the Reporting condition of every Budget)."""
        mono = monotonic()
        due = {ref for ref in self._dirty if self._due_at(ref) <= mono}
        due |= {(BUDGET, key) for key, at in self._recheck.items() if at <= now}
        due = set(sorted(ref for ref in due if self._compiled_as_seen(ref))[:STATUS_BATCH])
        due |= self._spend_due(mono, STATUS_BATCH - len(due))
        self._dirty -= due
        if any(kind == COST_CENTER for kind, _ in due):
            self._rollup_due = True
        refreshers = {BUDGET: self._refresh_budget, ROUTING_POLICY: self._refresh_routing_policy}
        await asyncio.gather(*(self._guarded((kind, key), refreshers[kind](key, now))
                               for kind, key in due if kind in refreshers))

    async def _guarded(self, ref: ObjectRef, job: Awaitable[Any]) -> None:
        """One object's failure is logged and retried later; it never stops the loop."""
        async with self._writes:
            try:
                await job
            except Exception:
                logger.exception("status of %s %s not refreshed; retrying", *ref)
                self._retry_later(ref)

    def _spend_due(self, mono: float, room: int) -> set[ObjectRef]:
        """Up to `room` Budgets whose spend changed: one whose state or window moved as soon as its write
        interval allows; the others `status_writes_per_second` at most, in the order they changed.
        Proxies enforce on FleetSpends, so at scale Budget.status may trail them (docs/fleet.md)."""
        rate = self.config.status_writes_per_second
        self._tokens, self._tokens_at = min(rate, self._tokens + (mono - self._tokens_at) * rate), mono
        self._spend_dirty.update(dict.fromkeys(self._spend_moved - self._spend_dirty.keys()))
        chosen: list[str] = []
        moved_first = [*sorted(self._spend_moved), *(key for key in self._spend_dirty if key not in self._spend_moved)]
        for key in moved_first:
            routine = key not in self._spend_moved
            if len(chosen) >= room or (routine and self._tokens < 1):
                break
            if self._due_at((BUDGET, key)) > mono or not self._compiled_as_seen((BUDGET, key)):
                continue
            chosen.append(key)
            self._tokens -= routine
        for key in chosen:
            del self._spend_dirty[key]
        self._spend_moved -= set(chosen)
        return {(BUDGET, key) for key in chosen}

    def _next_spend_write(self, mono: float) -> float:
        """Seconds until a Budget whose spend changed may be written: its hold, and a token."""
        held = min(self._due_at((BUDGET, key)) for key in self._spend_dirty) - mono
        if self._spend_moved & self._spend_dirty.keys():
            return held
        return max(held, (1 - self._tokens) / self.config.status_writes_per_second)

    def _status_of(self, budget_key: str) -> dict[str, Any]:
        seen = self.world.get(BUDGET, budget_key)
        return seen.status if seen is not None else {}

    def _retry_later(self, ref: ObjectRef) -> None:
        self._dirty.add(ref)
        self._backoff[ref] = monotonic() + self.config.retry_delay

    def _compiled_as_seen(self, ref: ObjectRef) -> bool:
        """Whether the last compile saw this object as it is now (else its errors may be stale and
        it waits for the next compile; a deleted object passes and is dropped by its refresher)."""
        seen = self.world.get(*ref)
        return seen is None or self._compiled.get(ref) == seen.fingerprint

    def _due_at(self, ref: ObjectRef) -> float:
        """When a dirty object may be refreshed: after a failed write's backoff, and for routine
        changes (spend) after the write interval; a spec change is shown at once."""
        seen = self.world.get(*ref)
        urgent = seen is not None and seen.generation != seen.status.get("observedGeneration")
        return max(self._backoff.get(ref, 0.0), 0.0 if urgent else self._hold.get(ref, 0.0))

    async def _refresh_budget(self, key: str, now: datetime) -> None:
        seen = self.world.get(BUDGET, key)
        if seen is None:
            self._recheck.pop(key, None)
            return
        previous = _parsed(api.BudgetStatus, seen.status)
        if not isinstance(seen.parsed, api.Budget):
            await self._write_status(seen, previous, _invalid(previous, seen, now), [])
            return
        inputs = BudgetInputs(seen.parsed, self._errors_of(seen), previous, now, self._alert_timeout, self._reporters,
                              partial(self._fleet.figure, key))
        status = budget_status(inputs, self.world.spend)
        self._metrics.budget(seen.parsed, status)
        self._track_recheck(key, status)
        await self._audit.append(budget_records(seen.parsed, seen.uid, previous, status, now), now)
        if await self._write_status(seen, previous, status, budget_events(previous, status)):
            self._rollup_due |= status.spentUSD != previous.spentUSD
            claim = alerts.claimed(previous.alerts, status.alerts)
            if claim is not None:
                self._start_delivery(seen.parsed, status, claim)

    def _track_recheck(self, key: str, status: api.BudgetStatus) -> None:
        at = next_change(status, self._alert_timeout)
        if at is None:
            self._recheck.pop(key, None)
        else:
            self._recheck[key] = at

    async def _refresh_routing_policy(self, key: str, now: datetime) -> None:
        seen = self.world.get(ROUTING_POLICY, key)
        if seen is None:
            return
        previous = _parsed(api.RoutingPolicyStatus, seen.status)
        if not isinstance(seen.parsed, api.RoutingPolicy):
            await self._write_status(seen, previous, _invalid(previous, seen, now), [])
            return
        users = sum(1 for budget in self.world.valid(BUDGET).values()
                    if isinstance(budget, api.Budget) and budget.metadata.namespace == seen.namespace
                    and budget.spec.routingPolicyRef == seen.name)
        status = routing_policy_status(seen.parsed, users, previous, now)
        await self._write_status(seen, previous, status, ready_events(previous.conditions, status.conditions))

    async def _refresh_cost_centers(self, now: datetime) -> None:
        self._rollup_due, self._rollup_after = False, monotonic() + self.config.write_interval
        cost_centers = {key: seen for key, seen in self.world.objects[COST_CENTER].items()}
        valid = {key: obj for key, obj in self.world.valid(COST_CENTER).items() if isinstance(obj, api.CostCenter)}
        previous = {key: _parsed(api.CostCenterStatus, seen.status) for key, seen in cost_centers.items()}
        errors = {name: self._errors.get((COST_CENTER, None, name), []) for name in valid}
        statuses = cost_center_statuses(valid, self._budget_summaries(), errors, previous, now)
        for key, seen in cost_centers.items():
            if not self._compiled_as_seen((COST_CENTER, key)):
                self._rollup_due = True
                continue
            status = statuses.get(key) or _invalid(previous[key], seen, now)
            events = ready_events(previous[key].conditions, status.conditions)
            await self._guarded((COST_CENTER, key), self._write_status(seen, previous[key], status, events))

    def _budget_summaries(self) -> list[BudgetSummary]:
        summaries = []
        for seen in self.world.objects[BUDGET].values():
            if isinstance(seen.parsed, api.Budget):
                spent = seen.status.get("spentUSD")
                summaries.append(BudgetSummary(seen.parsed.spec.costCenter,
                                               seen.parsed.spec.scope.kind == api.ScopeKind.COST_CENTER,
                                               _decimal(spent)))
        return summaries

    def _errors_of(self, seen: Seen) -> list[PolicyError]:
        return self._errors.get((seen.kind, seen.namespace, seen.name), [])

    async def _write_status(self, seen: Seen, previous: BaseModel, status: BaseModel,
                            notes: Sequence[EventNote]) -> bool:
        """Patch the status if it changed, conditional on the resourceVersion it was computed from.
        Returns True when written; Events go out only then, so a lost race posts none."""
        if seen.kind in POLICY_KINDS:
            provenance = self._provenance.status((seen.kind, seen.key), getattr(previous, "provenance", None),
                                                 self._clock.now())
            status = status.model_copy(update={"provenance": provenance})
        wanted = api.as_json(status)
        if api.as_json(previous) == wanted:
            return False
        body = {"metadata": {"resourceVersion": seen.resource_version}, "status": merge_patch(seen.status, wanted)}
        path = custom_path(PLURALS[seen.kind], seen.namespace, seen.name, "status")
        try:
            written = await self._kube.request("PATCH", path, body, MERGE_PATCH)
        except KubeError as error:
            return self._write_failed(seen, error)
        self._metrics.writes.labels(seen.kind, "written").inc()
        self.world.observe(seen.kind, written)
        self._hold[(seen.kind, seen.key)] = monotonic() + self.config.write_interval
        self._backoff.pop((seen.kind, seen.key), None)
        for note in notes:
            await self._recorder.record(seen.reference, note)
        return True

    def _write_failed(self, seen: Seen, error: KubeError) -> bool:
        self._metrics.writes.labels(seen.kind, str(error.status)).inc()
        if error.status in (404, 409):
            return False  # deleted, or a newer version is on its way through the watch
        logger.error("status of %s %s not written: %s", seen.kind, seen.key, error)
        self._retry_later((seen.kind, seen.key))
        return False

    # -- alerts --------------------------------------------------------------------------------

    def _start_delivery(self, budget: api.Budget, status: api.BudgetStatus, claim: alerts.Claim) -> None:
        found = self.world.valid(COST_CENTER).get(budget.spec.costCenter)
        # Budgets with errors claim nothing, but the CostCenter may have gone since the claim.
        cost_center = found if isinstance(found, api.CostCenter) else None
        code, targets = (cost_center.spec.code, cost_center.spec.alertTargets) if cost_center else ("", [])
        message = AlertMessage(budget, budget.spec.costCenter, code, claim, status)
        task = asyncio.create_task(self._deliver(budget, targets, message))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, budget: api.Budget, targets: Sequence[api.AlertTarget], message: AlertMessage) -> None:
        deliveries = await self._notifier.deliver(targets, message)
        outcome = alerts.outcome_text(deliveries)
        result = "delivered" if outcome == alerts.DELIVERED else "skipped" if not deliveries else "failed"
        self._metrics.alerts.labels(message.threshold.value, result).inc()
        await self._record_outcome(budget, message.claim, outcome)

    async def _record_outcome(self, budget: api.Budget, claim: alerts.Claim, outcome: str) -> None:
        """Read the Budget fresh (the World may lag behind our own claim) and set the outcome."""
        path = custom_path(PLURALS[BUDGET], budget.metadata.namespace, budget.metadata.name)
        for _ in range(5):
            try:
                seen = self.world.seen_of(BUDGET, await self._kube.request("GET", path))
            except KubeError as error:
                logger.error("alert outcome for %s not recorded: %s", budget.ref(), error)
                return
            previous = _parsed(api.BudgetStatus, seen.status)
            status = previous.model_copy(update={"alerts": alerts.with_outcome(previous.alerts, claim, outcome)})
            if api.as_json(status) == api.as_json(previous):
                return
            if await self._write_status(seen, previous, status, budget_events(previous, status)):
                return
        logger.error("alert outcome for %s not recorded after repeated conflicts", budget.ref())

    # -- start-up and housekeeping ---------------------------------------------------------------

    async def _existing_uids(self) -> set[str]:
        """The uids of every watched object now; the API may refuse while it starts: then retry."""
        while True:
            try:
                return await self._list_uids()
            except KubeError as error:
                logger.warning("listing for the initial sync failed, retrying: %s", error)
                await asyncio.sleep(self.config.retry_delay)

    async def _list_uids(self) -> set[str]:
        lists = [custom_path(PLURALS[COST_CENTER])]
        queries: list[dict[str, str] | None] = [None]
        for namespace in self.config.watched_namespaces:
            for kind in (BUDGET, ROUTING_POLICY, SPEND_REPORT, FLEET_SPEND):
                lists.append(custom_path(PLURALS[kind], namespace))
                queries.append(None)
            lists.append(core_path("secrets", namespace))
            queries.append({"labelSelector": f"{KEY_LABEL}=true"})
        uids: set[str] = set()
        for path, query in zip(lists, queries, strict=True):
            listing = await self._kube.request("GET", path, accept=METADATA_LIST, query=query)
            uids |= {str(item["metadata"]["uid"]) for item in listing.get("items") or []}
        return uids

    async def _delete_stale_reports(self, now: datetime) -> None:
        budgets = {key: b for key, b in self.world.valid(BUDGET).items() if isinstance(b, api.Budget)}
        reports = self.world.spend.reports()
        for key in deletable_reports(reports, budgets, now, self.config.stale_report_after):
            namespace, name = key.split("/", 1)
            try:
                await self._kube.request("DELETE", custom_path(PLURALS[SPEND_REPORT], namespace, name))
                logger.info("deleted SpendReport %s: no report since %s", key, reports[key].reportedAt)
            except KubeError as error:
                logger.warning("stale SpendReport %s not deleted: %s", key, error)


def _grouped(errors: Iterable[PolicyError]) -> dict[ErrorKey, list[PolicyError]]:
    grouped: dict[ErrorKey, list[PolicyError]] = {}
    for error in errors:
        grouped.setdefault((error.kind, error.namespace, error.name), []).append(error)
    return grouped


def _parsed(model: type[StatusModel], raw: dict[str, Any]) -> StatusModel:
    """The stored status as a model; one we cannot read is treated as empty and rewritten."""
    try:
        return model.model_validate(raw)
    except ValidationError:
        return model()


def _invalid(previous: StatusModel, seen: Seen, now: datetime) -> StatusModel:
    assert isinstance(seen.parsed, PolicyError)
    ready = ready_condition([seen.parsed], seen.generation, "", "", now)
    return previous.model_copy(update={"observedGeneration": seen.generation,
                                       "conditions": set_condition(previous.conditions, ready)})


def _decimal(value: Any) -> Decimal | None:
    return Decimal(str(value)) if value is not None else None
