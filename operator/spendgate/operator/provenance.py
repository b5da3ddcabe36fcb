"""Where each policy came from, and what changed: `status.provenance` and the policy-change records
of the audit log.

Everything is read off the object itself, so a restarted operator picks up where it left off:
the Argo CD tracking id (annotation `argocd.argoproj.io/tracking-id`, else the label
`app.kubernetes.io/instance`), the Git revision (the `spendgate.io/git-revision` annotation the sync
stamps, else the Argo CD Application's sync status, where the operator may read it), the field
manager that last wrote the spec (managedFields), the break-glass annotation the admission policy
makes break-glass users set, approvals the pipeline stamped, and the provenance this operator
already recorded in status. A change is one the recorded provenance does not know yet.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from spendgate.adapters.kube import Kube, KubeError
from spendgate.api import v1alpha1 as api
from spendgate.logic import audit
from spendgate.logic.windows import rfc3339

logger = logging.getLogger(__name__)

TRACKING_ANNOTATION = "argocd.argoproj.io/tracking-id"
INSTANCE_LABEL = "app.kubernetes.io/instance"
REVISION_ANNOTATION = "spendgate.io/git-revision"
BREAK_GLASS_ANNOTATION = "spendgate.io/break-glass"
PULL_REQUEST_ANNOTATION, APPROVED_BY_ANNOTATION = "spendgate.io/pull-request", "spendgate.io/approved-by"
CHANGES_KEPT = 5  # the CRD's maxItems for status.provenance.changes

Ref = tuple[str, str]  # (kind, key)


@dataclass(frozen=True)
class Source:
    """What one observed object says about its own origin."""

    kind: str
    subject: dict[str, str]
    generation: int
    spec_digest: str
    tracking_id: str | None
    application: str | None  # `namespace/name`, or `name` in the operator's --argocd-namespace
    revision: str | None  # from the annotation
    spec_writes: dict[str, str]  # field manager -> when it last wrote a spec field (managedFields)
    manager: str | None  # the one that wrote this spec, as far as managedFields tell
    break_glass: str | None
    approvals: dict[str, Any] | None
    recorded: api.Provenance | None  # what status.provenance says


def source_of(kind: str, body: Mapping[str, Any]) -> Source:
    metadata = body.get("metadata") or {}
    annotations, labels = metadata.get("annotations") or {}, metadata.get("labels") or {}
    tracking_id = annotations.get(TRACKING_ANNOTATION)
    return Source(
        kind=kind,
        subject=audit.subject(kind, metadata.get("namespace"), str(metadata.get("name", "")), metadata.get("uid")),
        generation=int(metadata.get("generation") or 0),
        spec_digest=audit.digest(body.get("spec")),
        tracking_id=tracking_id,
        application=application_of(tracking_id, labels.get(INSTANCE_LABEL)),
        revision=annotations.get(REVISION_ANNOTATION) or None,
        spec_writes=(writes := spec_writes(metadata.get("managedFields") or [])),
        manager=writer(writes, None),
        break_glass=audit.scrub(annotations.get(BREAK_GLASS_ANNOTATION)) or None,
        approvals=_approvals(annotations),
        recorded=_recorded(body.get("status")),
    )


def application_of(tracking_id: str | None, instance_label: str | None) -> str | None:
    """The Application's name from `<app>:<group>/<kind>:<namespace>/<name>` (Argo CD writes
    `<app-namespace>_<app>` for apps outside its own namespace), else the instance label."""
    app = tracking_id.split(":", 1)[0] if tracking_id and ":" in tracking_id else instance_label
    if not app:
        return None
    namespace, _, name = app.rpartition("_")
    return f"{namespace}/{name}" if namespace else name


def spec_writes(managed_fields: list[Any]) -> dict[str, str]:
    """When each field manager last wrote a spec field it still owns."""
    writes: dict[str, str] = {}
    for entry in managed_fields:
        if isinstance(entry, dict) and "f:spec" in (entry.get("fieldsV1") or {}) and entry.get("manager"):
            manager, time = str(entry["manager"]), str(entry.get("time") or "")
            writes[manager] = max(time, writes.get(manager, ""))
    return writes


def writer(writes: Mapping[str, str], before: Mapping[str, str] | None) -> str | None:
    """Who wrote the spec: the manager whose write time moved since the last observation (a manager
    that merely lost fields keeps its time); without one to compare with, the latest writer (times
    have one-second resolution, so a tie is possible then)."""
    moved = [manager for manager, time in writes.items() if before is not None and before.get(manager) != time]
    candidates = moved or list(writes)
    return max(candidates, key=lambda manager: writes[manager], default=None)


def _approvals(annotations: Mapping[str, str]) -> dict[str, Any] | None:
    approvers = [name.strip() for name in annotations.get(APPROVED_BY_ANNOTATION, "").split(",") if name.strip()]
    pull_request = annotations.get(PULL_REQUEST_ANNOTATION)
    if not approvers and not pull_request:
        return None
    return {"pullRequest": pull_request, "approvers": approvers} if pull_request else {"approvers": approvers}


def _recorded(status: Any) -> api.Provenance | None:
    raw = status.get("provenance") if isinstance(status, dict) else None
    try:
        return api.Provenance.model_validate(raw) if raw else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Sync:
    """What an Argo CD Application says about its current sync."""

    revision: str | None
    details: dict[str, str]  # initiatedBy, startedAt, phase: evidence of who deployed


def sync_of(application: Mapping[str, Any]) -> Sync:
    status = application.get("status") or {}
    operation = status.get("operationState") or {}
    started = operation.get("operation") or {}
    revision = ((operation.get("syncResult") or {}).get("revision") or (started.get("sync") or {}).get("revision")
                or (status.get("sync") or {}).get("revision"))
    initiated = started.get("initiatedBy") or {}
    who = "automated sync" if initiated.get("automated") else initiated.get("username")
    details = {"initiatedBy": who, "startedAt": operation.get("startedAt"), "phase": operation.get("phase")}
    return Sync(str(revision) if revision else None, {key: str(value) for key, value in details.items() if value})


@dataclass(frozen=True)
class Known:
    """The last state of an object that produced a record (or that status recorded)."""

    generation: int
    spec_digest: str
    break_glass: str | None
    spec_writes: Mapping[str, str] | None = None  # unknown after a restart

    @classmethod
    def of(cls, source: Source) -> Known:
        return cls(source.generation, source.spec_digest, source.break_glass, source.spec_writes)

    @classmethod
    def recorded(cls, provenance: api.Provenance | None) -> Known | None:
        if provenance is None or not provenance.changes:
            return None
        newest = provenance.changes[0]
        return cls(newest.generation, newest.specDigest, provenance.breakGlass)

    def same_state(self, other: Known | None) -> bool:
        return other is not None and (self.generation, self.spec_digest, self.break_glass) == (
            other.generation, other.spec_digest, other.break_glass)


def change_records(source: Source, known: Known | None, sync: Sync | None, now: datetime) -> list[dict[str, Any]]:
    """The audit records one observation makes: a policy change, or a break-glass use that left the
    spec alone; nothing when the object is as last recorded (a status echo, a re-listing)."""
    fresh_glass = source.break_glass if source.break_glass and source.break_glass != (known and known.break_glass) \
        else None
    glass = audit.BreakGlass.parse(fresh_glass)
    if known is not None and (known.generation, known.spec_digest) == (source.generation, source.spec_digest):
        if glass is None:
            return []
        return [audit.break_glass_use(now, source.subject, glass, source.generation, audit.digest(fresh_glass))]
    change = "updated" if known else "created" if source.generation <= 1 else "observed"
    revision = source.revision or (sync.revision if sync else None)
    return [audit.policy_change(now, source.subject, audit.PolicyChange(
        change=change, generation=source.generation, digest_before=known.spec_digest if known else None,
        digest_after=source.spec_digest, revision=revision, application=source.application, by=source.manager,
        sync=sync.details if sync and sync.details else None, approvals=source.approvals, break_glass=glass))]


def deletion_record(source: Source, now: datetime) -> dict[str, Any]:
    return audit.policy_change(now, source.subject, audit.PolicyChange(
        change="deleted", generation=source.generation, digest_before=source.spec_digest, digest_after=None,
        revision=source.revision, application=source.application, by=None))


def provenance(source: Source, revision: str | None, previous: api.Provenance | None, now: datetime) -> api.Provenance:
    """status.provenance: the spec in force and its last few changes, newest first. A sync that
    re-applies the same spec from a later revision moves `lastApplied`, it adds no change."""
    changes = list(previous.changes) if previous else []
    newest = changes[0] if changes else None
    glass = audit.BreakGlass.parse(source.break_glass)
    fresh_glass = glass is not None and source.break_glass != (previous and previous.breakGlass)
    if newest is not None and (newest.specDigest, newest.generation) == (source.spec_digest, source.generation):
        if revision and revision != (newest.lastRevision or newest.revision):
            changes[0] = newest.model_copy(update={"lastApplied": rfc3339(now), "lastRevision": revision})
    else:
        changes.insert(0, api.ProvenanceChange(
            specDigest=source.spec_digest, generation=source.generation, revision=revision,
            firstApplied=rfc3339(now), lastApplied=rfc3339(now),
            by=f"break-glass: {glass.user}" if fresh_glass and glass else audit.scrub(source.manager),
            breakGlass=fresh_glass))
    in_force = revision or (changes[0].lastRevision or changes[0].revision)
    return api.Provenance(trackingId=source.tracking_id, application=source.application, revision=in_force,
                          specDigest=source.spec_digest, breakGlass=audit.scrub(source.break_glass),
                          changes=changes[:CHANGES_KEPT])


@dataclass
class ProvenanceTracker:
    """The operator's side: sources as the watches deliver them, changes waiting for their
    records, and Argo CD Applications read (once per batch) where a revision is not stamped."""

    kube: Kube
    argocd_namespace: str | None = None
    sources: dict[Ref, Source] = field(default_factory=dict)
    known: dict[Ref, Known] = field(default_factory=dict)
    revisions: dict[Ref, tuple[int, str]] = field(default_factory=dict)  # resolved from an Application
    pending: list[tuple[Source, Known | None]] = field(default_factory=list)
    deleted: list[Source] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)  # Applications we may not read: said once

    def observe(self, kind: str, ref: Ref, event_type: str | None, body: Mapping[str, Any]) -> None:
        if event_type == "DELETED":
            gone = self.sources.pop(ref, None) or source_of(kind, body)
            self.known.pop(ref, None)
            self.revisions.pop(ref, None)
            self.deleted.append(gone)
            return
        source = source_of(kind, body)
        known = self.known.get(ref) or Known.recorded(source.recorded)
        if known is not None and known.spec_writes is not None and known.spec_digest != source.spec_digest:
            source = replace(source, manager=writer(source.spec_writes, known.spec_writes))
        elif (previous := self.sources.get(ref)) is not None and previous.spec_digest == source.spec_digest:
            source = replace(source, manager=previous.manager)  # a metadata change keeps who wrote the spec
        self.sources[ref] = source
        if not Known.of(source).same_state(known):
            self.pending.append((source, known))
        self.known[ref] = Known.of(source)

    async def records(self, now: datetime) -> tuple[list[dict[str, Any]], set[Ref]]:
        """The records of everything observed since the last call (Applications are read here), and
        the objects whose provenance in status they change."""
        pending, deleted, self.pending, self.deleted = self.pending, self.deleted, [], []
        syncs: dict[str, Sync | None] = {}
        records, changed = [], set()
        for source, known in pending:
            ref = (source.kind, _key(source.subject))
            sync = await self._sync(source.application, syncs) if source.application else None
            if sync is not None and sync.revision and not source.revision:
                self.revisions[ref] = (source.generation, sync.revision)
            records.extend(change_records(source, known, sync, now))
            changed.add(ref)
        records.extend(deletion_record(source, now) for source in deleted)
        return records, changed

    def status(self, ref: Ref, previous: api.Provenance | None, now: datetime) -> api.Provenance | None:
        """What status.provenance should say now; while a change waits for its record (and its
        Application read), what it said before."""
        source = self.sources.get(ref)
        if source is None or any((pending.kind, _key(pending.subject)) == ref for pending, _ in self.pending):
            return previous
        resolved = self.revisions.get(ref)
        revision = source.revision or (resolved[1] if resolved and resolved[0] == source.generation else None)
        return provenance(source, revision, previous, now)

    async def _sync(self, application: str, cache: dict[str, Sync | None]) -> Sync | None:
        if application not in cache:
            cache[application] = await self._read_application(application)
        return cache[application]

    async def _read_application(self, application: str) -> Sync | None:
        namespace, _, name = application.rpartition("/")
        namespace = namespace or self.argocd_namespace or ""
        if not namespace:
            return None
        path = f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/applications/{name}"
        try:
            return sync_of(await self.kube.request("GET", path))
        except KubeError as error:
            if application not in self.unreadable:
                self.unreadable.add(application)
                logger.info("Argo CD Application %s/%s not readable (%s): revisions come from the %s annotation "
                            "only", namespace, name, error.status, REVISION_ANNOTATION)
            return None


def _key(subject: Mapping[str, str]) -> str:
    namespace = subject.get("namespace")
    return f"{namespace}/{subject['name']}" if namespace else subject["name"]

