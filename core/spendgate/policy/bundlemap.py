"""The policy bundle as a ConfigMap: the operator writes it (one per target namespace, same content
everywhere); the proxies read it, from a mounted volume or through the API.

The document is the canonical JSON of spendgate.policy.bundle, under the key `bundle.json`. A
ConfigMap holds at most 1 MiB, so a bundle larger than MAX_DATA_BYTES is stored gzip-compressed
under `binaryData["bundle.json.gz"]` instead (measured: 1,000 budgets, 50 cost centers and 1,000
keys make 490 KB of JSON, 56 KB compressed; the compressed form reaches the limit at roughly ten
times that). Beyond that the operator refuses to write and keeps the last good bundle.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Mapping
from typing import Any

from spendgate.policy.bundle import SignedBundle, dumps

NAME = "spendgate-bundle"
PLAIN_KEY = "bundle.json"
GZIP_KEY = "bundle.json.gz"  # when the plain form would not fit in a ConfigMap
HASH_ANNOTATION = "spendgate.io/content-hash"
VERSION_ANNOTATION = "spendgate.io/bundle-version"
LABELS = {
    "app.kubernetes.io/name": "spendgate",
    "app.kubernetes.io/component": "policy-bundle",
    "app.kubernetes.io/managed-by": "spendgate-operator",
}
CONFIGMAP_LIMIT = 1024 * 1024  # the API server's limit on a ConfigMap's data + binaryData
MAX_DATA_BYTES = CONFIGMAP_LIMIT - 64 * 1024  # headroom for keys and metadata


class BundleTooLarge(ValueError):
    pass


def render(signed: SignedBundle, namespace: str) -> dict[str, Any]:
    """The ConfigMap manifest for one namespace. Raises BundleTooLarge if even gzip does not fit."""
    document = dumps(signed)
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": NAME,
            "namespace": namespace,
            "labels": dict(LABELS),
            "annotations": {HASH_ANNOTATION: signed.contentHash, VERSION_ANNOTATION: signed.version},
        },
    }
    if len(document) <= MAX_DATA_BYTES:
        manifest["data"] = {PLAIN_KEY: document.decode()}
        return manifest
    compressed = gzip.compress(document, compresslevel=9, mtime=0)  # mtime=0: same bundle, same bytes
    if len(compressed) > MAX_DATA_BYTES:
        raise BundleTooLarge(f"the bundle is {len(document)} bytes, {len(compressed)} compressed; a ConfigMap "
                             f"holds {MAX_DATA_BYTES} here: split the policies across clusters or drop members")
    manifest["binaryData"] = {GZIP_KEY: base64.b64encode(compressed).decode()}
    return manifest


def document(configmap: Mapping[str, Any]) -> bytes | None:
    """The bundle document a ConfigMap holds (plain or compressed), or None if it holds none."""
    plain = (configmap.get("data") or {}).get(PLAIN_KEY)
    if plain is not None:
        return str(plain).encode()
    packed = (configmap.get("binaryData") or {}).get(GZIP_KEY)
    return gzip.decompress(base64.b64decode(packed)) if packed is not None else None


def content_hash(configmap: Mapping[str, Any]) -> str | None:
    return ((configmap.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
