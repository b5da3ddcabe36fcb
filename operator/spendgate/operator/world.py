"""What the operator has observed through its watches, as parsed API objects.

kopf's event handlers feed every object here; the reconciler reads only from here and from the
responses to its own writes. Parsing (pydantic + the CRD's CEL rules in Python) is cached per
(uid, generation, labels, annotations), so a status write echoed back by the watch costs a dict
lookup, and `Change` says what an event means for the reconciler: recompile the bundle, refresh
one object's status, or refold some budgets' spend.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from spendgate.adapters.keysecrets import key_entries
from spendgate.api import v1alpha1 as api
from spendgate.operator.spendindex import SpendIndex
from spendgate.policy.bundle import KeyEntry
from spendgate.policy.errors import PolicyError
from spendgate.policy.manifests import parse_object

logger = logging.getLogger(__name__)

COST_CENTER, BUDGET, ROUTING_POLICY = "CostCenter", "Budget", "RoutingPolicy"
SPEND_REPORT, SECRET, FLEET_SPEND = "SpendReport", "Secret", "FleetSpend"
POLICY_KINDS = (COST_CENTER, BUDGET, ROUTING_POLICY)


@dataclass
class Seen:
    """One policy object as last observed."""

    kind: str
    key: str  # namespace/name, or name for CostCenters
    uid: str
    resource_version: str
    generation: int
    fingerprint: str
    parsed: api.PolicyObject | PolicyError
    status: dict[str, Any]
    reference: dict[str, str]  # the involvedObject of its Events

    @property
    def namespace(self) -> str | None:
        return self.reference.get("namespace")

    @property
    def name(self) -> str:
        return self.reference["name"]


@dataclass(frozen=True)
class Published:
    """A FleetSpend as last observed: what the proxies read."""

    resource_version: str
    spec: dict[str, Any]


@dataclass
class Change:
    policy: bool = False  # the bundle must be recompiled
    statuses: set[tuple[str, str]] = field(default_factory=set)  # (kind, key) whose status may be stale
    spend: set[str] = field(default_factory=set)  # budget refs whose reports changed
    published: set[str] = field(default_factory=set)  # FleetSpends (namespace/name) changed by someone


class World:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Seen]] = {kind: {} for kind in POLICY_KINDS}
        self.keys: dict[str, list[KeyEntry] | PolicyError] = {}  # by Secret namespace/name
        self.spend = SpendIndex()
        self.published: dict[str, Published] = {}  # FleetSpends by namespace/name
        self._own_writes: dict[str, deque[str]] = defaultdict(lambda: deque(maxlen=8))  # their resourceVersions
        self.uids: set[str] = set()
        self.departed: set[str] = set()  # uids seen and deleted (for the initial-sync check)

    def observe(self, kind: str, body: Mapping[str, Any]) -> Change:
        self._remember(body)
        if kind in POLICY_KINDS:
            return self._observe_policy(kind, body)
        if kind == SPEND_REPORT:
            return self._observe_report(body)
        if kind == FLEET_SPEND:
            return self._observe_published(body)
        return self._observe_key(body)

    def forget(self, kind: str, body: Mapping[str, Any]) -> Change:
        metadata = body.get("metadata") or {}
        self.uids.discard(str(metadata.get("uid")))
        self.departed.add(str(metadata.get("uid")))
        key = object_key(body)
        if kind in POLICY_KINDS:
            return Change(policy=self.objects[kind].pop(key, None) is not None)
        if kind == SPEND_REPORT:
            return Change(spend=self.spend.remove(key))
        if kind == FLEET_SPEND:
            self.published.pop(key, None)
            self._own_writes.pop(key, None)
            return Change(published={key})
        return Change(policy=self.keys.pop(key, None) is not None)

    def get(self, kind: str, key: str) -> Seen | None:
        return self.objects[kind].get(key)

    def valid(self, kind: str) -> dict[str, api.PolicyObject]:
        return {key: seen.parsed for key, seen in self.objects[kind].items()
                if not isinstance(seen.parsed, PolicyError)}

    def _remember(self, body: Mapping[str, Any]) -> None:
        self.uids.add(str((body.get("metadata") or {}).get("uid")))

    def _observe_policy(self, kind: str, body: Mapping[str, Any]) -> Change:
        metadata = body.get("metadata") or {}
        key, known = object_key(body), self.objects[kind].get(object_key(body))
        version = str(metadata.get("resourceVersion", ""))
        if known is not None and known.resource_version == version:
            return Change()  # the echo of our own write, or a re-listing
        seen = self.seen_of(kind, body)
        self.objects[kind][key] = seen
        if known is not None and known.fingerprint == seen.fingerprint:
            return Change(statuses={(kind, key)})
        return Change(policy=True, statuses={(kind, key)})

    def seen_of(self, kind: str, body: Mapping[str, Any]) -> Seen:
        """A policy object's body as a Seen, parsed again only if its spec or metadata changed."""
        metadata = body.get("metadata") or {}
        key, fingerprint = object_key(body), _fingerprint(metadata)
        known = self.objects[kind].get(key)
        parsed = known.parsed if known is not None and known.fingerprint == fingerprint else _parse(kind, body)
        return Seen(
            kind=kind, key=key, uid=str(metadata.get("uid", "")),
            resource_version=str(metadata.get("resourceVersion", "")), generation=int(metadata.get("generation") or 0),
            fingerprint=fingerprint, parsed=parsed,
            status=dict(body.get("status") or {}), reference=_reference(kind, body),
        )

    def _observe_report(self, body: Mapping[str, Any]) -> Change:
        key = object_key(body)
        try:
            spec = api.SpendReportSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            logger.warning("SpendReport %s ignored: %s", key, error.errors()[0]["msg"])
            return Change(spend=self.spend.remove(key))
        return Change(spend=self.spend.put(key, spec))

    def wrote(self, body: Mapping[str, Any]) -> None:
        """A FleetSpend as our own write left it (the reply); its echo through the watch changes nothing."""
        key, version = object_key(body), str((body.get("metadata") or {}).get("resourceVersion", ""))
        self._own_writes[key].append(version)
        self.published[key] = Published(version, dict(body.get("spec") or {}))

    def _observe_published(self, body: Mapping[str, Any]) -> Change:
        key, version = object_key(body), str((body.get("metadata") or {}).get("resourceVersion", ""))
        if version in self._own_writes.get(key, ()):
            return Change()  # the echo of one of our writes, perhaps overtaken by a newer one already
        self.published[key] = Published(version, dict(body.get("spec") or {}))
        return Change(published={key})

    def _observe_key(self, body: Mapping[str, Any]) -> Change:
        key, entry = object_key(body), key_entries(body)
        changed = self.keys.get(key) != entry
        self.keys[key] = entry
        return Change(policy=changed)


def object_key(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata") or {}
    namespace, name = metadata.get("namespace"), str(metadata.get("name", ""))
    return f"{namespace}/{name}" if namespace else name


def _fingerprint(metadata: Mapping[str, Any]) -> str:
    return json.dumps([metadata.get("uid"), metadata.get("generation"), metadata.get("labels"),
                       metadata.get("annotations")], sort_keys=True)


def _parse(kind: str, body: Mapping[str, Any]) -> api.PolicyObject | PolicyError:
    metadata = body.get("metadata") or {}
    document = {
        "apiVersion": body.get("apiVersion"), "kind": kind, "spec": body.get("spec"),
        "metadata": {field: metadata[field] for field in ("name", "namespace", "generation", "labels", "annotations")
                     if metadata.get(field) is not None},
    }
    parsed = parse_object(document, source=f"{kind} {object_key(body)}")
    if parsed is None:
        return PolicyError(kind, metadata.get("namespace"), str(metadata.get("name")), "UnsupportedVersion",
                           f"apiVersion {body.get('apiVersion')} is not served", "apiVersion")
    return parsed


def _reference(kind: str, body: Mapping[str, Any]) -> dict[str, str]:
    metadata = body.get("metadata") or {}
    reference = {"apiVersion": str(body.get("apiVersion", api.API_VERSION)), "kind": kind,
                 "name": str(metadata.get("name", "")), "uid": str(metadata.get("uid", "")),
                 "resourceVersion": str(metadata.get("resourceVersion", ""))}
    if metadata.get("namespace"):
        reference["namespace"] = str(metadata["namespace"])
    return reference
