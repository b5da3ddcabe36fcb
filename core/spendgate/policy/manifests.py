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
    # Where each object's manifest is: (kind, namespace, name) -> (source, its YAML node), for file:line.
    origins: dict[tuple[str, str | None, str], tuple[str, yaml.Node]] = field(default_factory=dict)

    def extend(self, other: Loaded) -> None:
        self.objects.extend(other.objects)
        self.errors.extend(other.errors)
        self.origins.update(other.origins)

    def where(self, error: PolicyError) -> str | None:
        """`source:line` of the manifest (and of the field, where it can be found) an error is about."""
        found = self.origins.get((error.kind, error.namespace, error.name))
        if found is None:
            return None
        source, node = found
        return f"{source}:{line_of(node, error.field)}"


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
    return [document for document, _ in parse_nodes(text)]


def parse_nodes(text: str) -> list[tuple[Any, yaml.Node]]:
    """Each non-empty document with its YAML node (which knows the line of every key)."""
    loader = _BoundedLoader(text)
    try:
        found = []
        while loader.check_node():
            node = loader.get_node()
            document = loader.construct_document(node) if node is not None else None
            if node is not None and document is not None:
                found.append((document, node))
        return found
    finally:
        loader.dispose()


def load_text(text: str, source: str = "<input>") -> Loaded:
    loaded = Loaded()
    try:
        documents = parse_nodes(text)
    except yaml.YAMLError as error:
        reason = "TooComplex" if isinstance(error, ManifestTooComplex) else "InvalidYAML"
        loaded.errors.append(file_error(source, reason, str(error)))
        return loaded
    for document, node in _flatten_lists(documents):
        result = parse_object(document, source, node)
        if isinstance(result, PolicyError):
            loaded.errors.append(result)
        elif result is not None:
            loaded.objects.append(result)
            loaded.origins[(result.kind, result.metadata.namespace, result.metadata.name)] = (source, node)
    return loaded


def _flatten_lists(documents: Iterable[tuple[Any, yaml.Node]]) -> Iterable[tuple[Any, yaml.Node]]:
    """`kind: List` documents (kubectl get -o yaml) hold their objects in `items`."""
    for document, node in documents:
        if isinstance(document, dict) and document.get("kind") == "List":
            items = document.get("items")
            children = _child(node, "items")
            nodes = children.value if isinstance(children, yaml.SequenceNode) else []
            listed = items if isinstance(items, list) else [items]
            yield from ((item, nodes[index] if index < len(nodes) else node) for index, item in enumerate(listed))
        else:
            yield document, node


def _child(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        return next((value for name, value in node.value if getattr(name, "value", None) == key), None)
    if isinstance(node, yaml.SequenceNode) and key.isdigit() and int(key) < len(node.value):
        child: yaml.Node = node.value[int(key)]
        return child
    return None


def line_of(node: yaml.Node, field_path: str | None) -> int:
    """The line of `field_path` (e.g. spec.window.timeZone) in a manifest, or of the deepest part found."""
    for part in (field_path or "").replace("[", ".").replace("]", "").split("."):
        child = _child(node, part) if part else None
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1


def parse_object(document: Any, source: str = "<input>", node: yaml.Node | None = None
                 ) -> api.PolicyObject | PolicyError | None:
    """One manifest as an API object; None for documents of other API groups (kept out, not errors).
    With the document's YAML `node`, errors name `source:line` of the field at fault."""
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
                           f"{field_path}: {first['msg']} ({_at(source, node, field_path)})", field_path)
    broken = violations(parsed.spec)
    if broken:
        where = _at(source, node, broken[0].field)
        return PolicyError(str(kind), namespace, name, "InvalidSpec",
                           f"{broken[0].field}: {broken[0].message} ({where})", broken[0].field)
    return parsed


def _at(source: str, node: yaml.Node | None, field_path: str) -> str:
    return f"{source}:{line_of(node, field_path)}" if node is not None else source


def file_error(source: str, reason: str, message: str) -> PolicyError:
    return PolicyError("File", None, source, reason, message)
