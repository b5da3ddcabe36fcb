"""Pod in, JSON patch out: whether to inject, and the RFC 6902 operations that do it.

Opt-in has two levels, like Istio's: a namespace labelled `spendgate.io/inject: enabled` injects
every pod unless the pod says `spendgate.io/inject: "false"`; elsewhere a pod opts in with
`spendgate.io/inject: "true"`. Which of the two applies is the webhook's (`namespace_opted_in`),
because an AdmissionReview carries no namespace labels: the chart routes the two cases to two
paths by namespaceSelector.

Idempotent: a pod that already has the sidecar gets only what it still lacks (an app container
added by a later webhook gets its environment on reinvocation), so a pod injected twice is
unchanged. Never refuses a pod: what cannot be injected is left alone with a warning, which
kubectl shows, because a broken injector must not block developers' pods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from spendgate.operator.injector.settings import SidecarSettings
from spendgate.operator.injector.sidecar import (
    API_KEY_ENV,
    SIDECAR_NAME,
    VOLUME_NAMES,
    app_env,
    proxy_container,
    proxy_volumes,
)

INJECT = "spendgate.io/inject"  # pod annotation "true" / "false"; namespace label "enabled" / "disabled"
INJECTED = "spendgate.io/injected"  # the injector's version, on every injected pod
VIRTUAL_KEY_SECRET = "spendgate.io/virtual-key-secret"  # optional: app containers get ANTHROPIC_API_KEY from it

Operation = dict[str, Any]


@dataclass(frozen=True)
class Injection:
    outcome: str  # injected | updated | unchanged | not-wanted | refused (a metric label)
    patch: list[Operation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def wants_injection(pod: Mapping[str, Any], namespace_opted_in: bool) -> bool:
    # Exactly the chart's matchConditions, so the API server and the webhook never disagree.
    annotation = _annotations(pod).get(INJECT)
    return annotation != "false" if namespace_opted_in else annotation == "true"


def inject(pod: Mapping[str, Any], settings: SidecarSettings, namespace: str, namespace_opted_in: bool,
           version: str) -> Injection:
    """The patch that adds the sidecar to `pod` (created in `namespace`), or none, with why."""
    if not wants_injection(pod, namespace_opted_in):
        return Injection("not-wanted")
    spec = pod.get("spec")
    if not isinstance(spec, Mapping) or not _list_of_objects(spec.get("containers")):
        return Injection("refused", warnings=["spendgate: not injected: the pod has no containers list"])
    problem = _cannot_inject(spec, settings)
    if problem:
        return Injection("refused", warnings=[f"spendgate: not injected: {problem}"])
    injected_before = _has_sidecar(spec)
    patch = [] if injected_before else _add_sidecar(spec, settings, namespace)
    virtual_key = str(_annotations(pod).get(VIRTUAL_KEY_SECRET) or "") or None
    patch += _app_environment(spec, app_env(settings, virtual_key))
    if _annotations(pod).get(INJECTED) != version:
        patch += _set_annotation(pod, INJECTED, version)
    outcome = "injected" if not injected_before else "updated" if patch else "unchanged"
    return Injection(outcome, patch, _key_warnings(spec, settings))


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = pod.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else {}


def _list_of_objects(value: Any) -> TypeGuard[list[Mapping[str, Any]]]:
    return isinstance(value, list) and all(isinstance(item, Mapping) for item in value)


def _objects(parent: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """parent[key] if it is a list of objects, else nothing (the API server validates shapes later)."""
    value = parent.get(key)
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _has_sidecar(spec: Mapping[str, Any]) -> bool:
    return any(c.get("name") == SIDECAR_NAME for kind in ("initContainers", "containers")
               for c in _objects(spec, kind))


def _cannot_inject(spec: Mapping[str, Any], settings: SidecarSettings) -> str | None:
    """Why this pod cannot take the sidecar (it would break the pod, or the proxy), if it cannot."""
    if spec.get("initContainers") is not None and not _list_of_objects(spec.get("initContainers")):
        return "its initContainers is not a list of containers"
    if spec.get("volumes") is not None and not _list_of_objects(spec.get("volumes")):
        return "its volumes is not a list of volumes"
    if _has_sidecar(spec):
        return None  # injected before: only what is missing is added
    if spec.get("hostNetwork") is True:
        return (f"it uses the host's network, where port {settings.port} on 127.0.0.1 would be shared with "
                "every such pod on the node")
    taken = sorted({str(v.get("name")) for v in _objects(spec, "volumes")} & set(VOLUME_NAMES))
    if taken:
        return f"it already has a volume named {', '.join(taken)}"
    ports = {settings.port, settings.adminPort}
    for kind in ("initContainers", "containers"):
        for container in _objects(spec, kind):
            clash = ports & {port.get("containerPort") for port in _objects(container, "ports")}
            if clash:
                return f"container {container.get('name')} declares port {min(clash)}, which the sidecar needs"
    return None


def _add_sidecar(spec: Mapping[str, Any], settings: SidecarSettings, namespace: str) -> list[Operation]:
    kind = "initContainers" if settings.mode == "Native" else "containers"
    # Appended: the pod's own init containers keep their order; app containers start after it.
    patch = [*_append(spec, kind, [proxy_container(settings, namespace)]),
             *_append(spec, "volumes", proxy_volumes(settings))]
    if not spec.get("serviceAccountName"):
        # The sidecar's token is projected for the pod's service account, which must be named; the
        # ServiceAccount admission plugin names "default" before webhooks run, unless it is disabled.
        patch.append({"op": "add", "path": "/spec/serviceAccountName", "value": "default"})
    return patch


def _append(spec: Mapping[str, Any], key: str, items: list[dict[str, Any]]) -> list[Operation]:
    if spec.get(key) is None:
        return [{"op": "add", "path": f"/spec/{key}", "value": items}]
    return [{"op": "add", "path": f"/spec/{key}/-", "value": item} for item in items]


def _app_environment(spec: Mapping[str, Any], wanted: list[dict[str, Any]]) -> list[Operation]:
    """Each app container gets `wanted`: added where missing, replaced where it says otherwise."""
    patch: list[Operation] = []
    for index, container in enumerate(_objects(spec, "containers")):
        if container.get("name") == SIDECAR_NAME:
            continue
        path = f"/spec/containers/{index}/env"
        env = container.get("env")
        if not _list_of_objects(env):
            patch.append({"op": "add" if env is None else "replace", "path": path, "value": wanted})
            continue
        positions = {entry.get("name"): position for position, entry in enumerate(env)}
        for variable in wanted:
            position = positions.get(variable["name"])
            if position is None:
                patch.append({"op": "add", "path": f"{path}/-", "value": variable})
            elif env[position] != variable:
                patch.append({"op": "replace", "path": f"{path}/{position}", "value": variable})
    return patch


def _set_annotation(pod: Mapping[str, Any], key: str, value: str) -> list[Operation]:
    metadata = pod.get("metadata")
    if not isinstance(metadata, Mapping):
        return [{"op": "add", "path": "/metadata", "value": {"annotations": {key: value}}}]
    if not isinstance(metadata.get("annotations"), Mapping):
        return [{"op": "add", "path": "/metadata/annotations", "value": {key: value}}]
    return [{"op": "add", "path": f"/metadata/annotations/{_pointer(key)}", "value": value}]


def _pointer(token: str) -> str:
    """RFC 6901: `~` and `/` escaped in a JSON pointer segment."""
    return token.replace("~", "~0").replace("/", "~1")


def _key_warnings(spec: Mapping[str, Any], settings: SidecarSettings) -> list[str]:
    """The organisation's key belongs to the sidecar alone: say so when an app container reads it."""
    secret = settings.upstreamKeySecret.name
    volumes = {str(v.get("name")) for v in _objects(spec, "volumes")
               if isinstance(v.get("secret"), Mapping) and v["secret"].get("secretName") == secret}
    readers = []
    for kind in ("initContainers", "containers"):
        for container in _objects(spec, kind):
            if container.get("name") == SIDECAR_NAME:
                continue
            if _reads_secret(container, secret, volumes):
                readers.append(str(container.get("name")))
    return [f"spendgate: container {name} reads Secret {secret}, the organisation's Anthropic key; only the "
            f"sidecar should (give the app a virtual key in {API_KEY_ENV} instead, see docs/injection.md)"
            for name in readers]


def _reads_secret(container: Mapping[str, Any], secret: str, volumes: set[str]) -> bool:
    if any(mount.get("name") in volumes for mount in _objects(container, "volumeMounts")):
        return True
    sources = [entry["valueFrom"].get("secretKeyRef") for entry in _objects(container, "env")
               if isinstance(entry.get("valueFrom"), Mapping)]
    sources += [entry.get("secretRef") for entry in _objects(container, "envFrom")]
    return any(isinstance(source, Mapping) and source.get("name") == secret for source in sources)
