"""Policy manifests (the same YAML a user would `kubectl apply`) as API objects. Pure: text in,
objects and errors out; spendgate.adapters.policyfiles reads them from disk.

Each document is parsed and validated exactly as the API server would: schema constraints by
pydantic, cross-field rules by CEL (spendgate.api.validation). A bad document becomes a
PolicyError naming the source, the object and the field; the good documents are still returned.

YAML is read with limits an API server would also want: nesting deeper than MAX_DEPTH and YAML
aliases are refused (an alias-expansion "billion laughs" document is tiny on disk and explodes in
every later step), so no manifest can exhaust the recursion limit, memory or CPU of its reader.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from pydantic import ValidationError

from spendgate.api import v1alpha1 as api
from spendgate.api.validation import violations
from spendgate.policy.errors import PolicyError

KINDS: dict[str, type[api.CostCenter | api.Budget | api.RoutingPolicy]] = {
    "CostCenter": api.CostCenter,
    "Budget": api.Budget,
    "RoutingPolicy": api.RoutingPolicy,
}
DEFAULT_NAMESPACE: Final = "default"
# Our manifests nest about 8 levels; 64 leaves room for any sane document and none for abuse.
MAX_DEPTH: Final = 64


@dataclass
class Loaded:
    objects: list[api.PolicyObject] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)


class ManifestTooComplex(yaml.YAMLError):
    """Nesting past MAX_DEPTH, or an alias."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases and nesting past MAX_DEPTH while it composes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise ManifestTooComplex(f"YAML aliases are not allowed in policy manifests ({self._where()})")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ManifestTooComplex(f"nested deeper than {MAX_DEPTH} levels ({self._where()})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _where(self) -> str:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        return f"line {event.start_mark.line + 1}" if event.start_mark else "position unknown"


def parse_documents(text: str) -> list[Any]:
    """Every non-empty YAML document of `text`; raises yaml.YAMLError (ManifestTooComplex included)."""
    loader = _BoundedLoader(text)
    try:
        documents = []
        while loader.check_data():  # type: ignore[no-untyped-call]
            document = loader.get_data()
            if document is not None:
                documents.append(document)
        return documents
    finally:
        loader.dispose()


def load_text(text: str, source: str = "<input>") -> Loaded:
    loaded = Loaded()
    try:
        documents = parse_documents(text)
    except yaml.YAMLError as error:
        reason = "TooComplex" if isinstance(error, ManifestTooComplex) else "InvalidYAML"
        loaded.errors.append(file_error(source, reason, str(error)))
        return loaded
    for document in _flatten_lists(documents):
        result = parse_object(document, source)
        if isinstance(result, PolicyError):
            loaded.errors.append(result)
        elif result is not None:
            loaded.objects.append(result)
    return loaded


def _flatten_lists(documents: Iterable[Any]) -> Iterable[Any]:
    """`kind: List` documents (kubectl get -o yaml) hold their objects in `items`."""
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "List":
            items = document.get("items")
            yield from items if isinstance(items, list) else [items]
        else:
            yield document


def parse_object(document: Any, source: str = "<input>") -> api.PolicyObject | PolicyError | None:
    """One manifest as an API object; None for documents of other API groups (kept out, not errors)."""
    if not isinstance(document, dict):
        return file_error(source, "InvalidManifest", "a manifest must be a YAML mapping")
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if not (isinstance(api_version, str) and api_version.startswith(api.GROUP + "/")):
        return None
    metadata: dict[str, Any] = document["metadata"] if isinstance(document.get("metadata"), dict) else {}
    name = str(metadata.get("name", "<unnamed>"))
    namespace = None if kind == "CostCenter" else str(metadata.get("namespace") or DEFAULT_NAMESPACE)
    if api_version != api.API_VERSION:
        return PolicyError(str(kind), namespace, name, "UnsupportedVersion",
                           f"apiVersion {api_version} is not served; use {api.API_VERSION} ({source})",
                           "apiVersion")
    if kind == "VirtualKeyList":  # the standalone keys file may sit beside the policies
        return None
    model = KINDS.get(str(kind))
    if model is None:
        return PolicyError(str(kind), namespace, name, "UnknownKind",
                           f"kind {kind!r} is not one of {', '.join(KINDS)} ({source})", "kind")
    if namespace is not None:
        document = {**document, "metadata": {**metadata, "namespace": namespace}}
    try:
        parsed = model.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        field_path = ".".join(str(part) for part in first["loc"])
        return PolicyError(str(kind), namespace, name, "InvalidSpec",
                           f"{field_path}: {first['msg']} ({source})", field_path)
    broken = violations(parsed.spec)
    if broken:
        return PolicyError(str(kind), namespace, name, "InvalidSpec",
                           f"{broken[0].field}: {broken[0].message} ({source})", broken[0].field)
    return parsed


def file_error(source: str, reason: str, message: str) -> PolicyError:
    return PolicyError("File", None, source, reason, message)
