"""Read policy manifests (the same YAML a user would `kubectl apply`) into API objects.

Each document is parsed and validated exactly as the API server would: schema constraints by
pydantic, cross-field rules by CEL (spendgate.api.validation). A bad document becomes a
PolicyError naming the file, the object and the field; the good documents are still returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from spendgate.adapters.keysfile import read_keys_file
from spendgate.api import v1alpha1 as api
from spendgate.api.validation import violations
from spendgate.policy.compiler import CompileResult, compile_policies
from spendgate.policy.errors import PolicyError

KINDS: dict[str, type[api.CostCenter | api.Budget | api.RoutingPolicy]] = {
    "CostCenter": api.CostCenter,
    "Budget": api.Budget,
    "RoutingPolicy": api.RoutingPolicy,
}
DEFAULT_NAMESPACE = "default"


@dataclass
class Loaded:
    objects: list[api.PolicyObject] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)


def load_directory(directory: Path) -> Loaded:
    """Every *.yaml / *.yml / *.json manifest below `directory`, in a stable order."""
    if not directory.is_dir():
        return Loaded(errors=[_file_error(directory, "NotADirectory", "policy directory does not exist")])
    paths = sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
    loaded = Loaded()
    for path in paths:
        part = load_text(path.read_text(), source=str(path))
        loaded.objects.extend(part.objects)
        loaded.errors.extend(part.errors)
    return loaded


def load_text(text: str, source: str = "<input>") -> Loaded:
    loaded = Loaded()
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        loaded.errors.append(_file_error(Path(source), "InvalidYAML", str(error)))
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
            yield from document.get("items") or []
        else:
            yield document


def parse_object(document: Any, source: str = "<input>") -> api.PolicyObject | PolicyError | None:
    """One manifest as an API object; None for documents of other API groups (kept out, not errors)."""
    if not isinstance(document, dict):
        return _file_error(Path(source), "InvalidManifest", "a manifest must be a YAML mapping")
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


def _file_error(path: Path, reason: str, message: str) -> PolicyError:
    return PolicyError("File", None, str(path), reason, message)


def compile_directory(policies: Path, keys_file: Path | None = None) -> CompileResult:
    """Standalone mode and the CLI: a directory of manifests (+ a keys file) -> bundle and errors."""
    loaded = load_directory(policies)
    keys = read_keys_file(keys_file).keys if keys_file else []
    result = compile_policies(loaded.objects, keys)
    return CompileResult(bundle=result.bundle, errors=sorted([*loaded.errors, *result.errors]))
