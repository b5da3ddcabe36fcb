"""The policy bundle as a ConfigMap: the operator writes it (one per target namespace, same content
everywhere); the proxies read it, from a mounted volume or through the API.

The document is the canonical JSON of spendgate.policy.bundle, under the key `bundle.json`; the key
`report-namespace` names the namespace the operator folds SpendReports from, so a proxy reading the
ConfigMap (a sidecar's copy included) knows where to report without a flag that could disagree. A
ConfigMap holds at most 1 MiB, so a bundle larger than MAX_DATA_BYTES is stored gzip-compressed
under `binaryData["bundle.json.gz"]` instead (measured: 1,000 budgets, 50 cost centers and 1,000
keys make 490 KB of JSON, 56 KB compressed; the compressed form reaches the limit at roughly ten
times that). Beyond that the operator refuses to write and keeps the last good bundle.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from collections.abc import Mapping
from typing import Any

from spendgate.policy.bundle import BundleError, SignedBundle, dumps

NAME = "spendgate-bundle"
PLAIN_KEY = "bundle.json"
GZIP_KEY = "bundle.json.gz"  # when the plain form would not fit in a ConfigMap
REPORT_NAMESPACE_KEY = "report-namespace"
HASH_ANNOTATION = "spendgate.io/content-hash"
VERSION_ANNOTATION = "spendgate.io/bundle-version"
LABELS = {
    "app.kubernetes.io/name": "spendgate",
    "app.kubernetes.io/component": "policy-bundle",
    "app.kubernetes.io/managed-by": "spendgate-operator",
}
CONFIGMAP_LIMIT = 1024 * 1024  # the API server's limit on a ConfigMap's data + binaryData
# The largest bundle document a reader accepts, compressed or not (20,000 budgets make ~10 MB).
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
MAX_DATA_BYTES = CONFIGMAP_LIMIT - 64 * 1024  # headroom for keys and metadata


class BundleTooLarge(ValueError):
    pass


def render(signed: SignedBundle, namespace: str, report_namespace: str | None = None) -> dict[str, Any]:
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
    where = {REPORT_NAMESPACE_KEY: report_namespace} if report_namespace else {}
    if len(document) <= MAX_DATA_BYTES:
        manifest["data"] = {PLAIN_KEY: document.decode(), **where}
        return manifest
    compressed = gzip.compress(document, compresslevel=9, mtime=0)  # mtime=0: same bundle, same bytes
    if len(compressed) > MAX_DATA_BYTES:
        raise BundleTooLarge(f"the bundle is {len(document)} bytes, {len(compressed)} compressed; a ConfigMap "
                             f"holds {MAX_DATA_BYTES} here: split the policies across clusters or drop members")
    manifest["binaryData"] = {GZIP_KEY: base64.b64encode(compressed).decode()}
    if where:
        manifest["data"] = where
    return manifest


def document(configmap: Mapping[str, Any]) -> bytes | None:
    """The bundle document a ConfigMap holds (plain or compressed), or None if it holds none.

    Raises BundleError when the compressed form is not base64 or not a complete gzip stream."""
    data, binary = configmap.get("data"), configmap.get("binaryData")
    plain = data.get(PLAIN_KEY) if isinstance(data, Mapping) else None
    if plain is not None:
        return str(plain).encode()
    packed = binary.get(GZIP_KEY) if isinstance(binary, Mapping) else None
    if packed is None:
        return None
    try:
        compressed = base64.b64decode(str(packed), validate=True)
    except binascii.Error as error:
        raise BundleError(f"binaryData[{GZIP_KEY}] is not base64: {error}") from None
    return gunzip(compressed, MAX_DOCUMENT_BYTES)


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress one gzip stream of at most `limit` bytes; anything else is a BundleError.

    Bounded, so a small "gzip bomb" cannot take the reader's memory; strict, so a truncated
    stream is refused rather than read as a shorter document."""
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as error:
        raise BundleError(f"the compressed bundle is corrupt ({error})") from None
    if len(out) > limit:
        raise BundleError(f"the compressed bundle expands past the limit of {limit // (1024 * 1024)} MiB")
    if not inflater.eof:
        raise BundleError("the compressed bundle is truncated (the gzip stream ends early)")
    return out


def report_namespace(configmap: Mapping[str, Any]) -> str | None:
    return (configmap.get("data") or {}).get(REPORT_NAMESPACE_KEY)


def content_hash(configmap: Mapping[str, Any]) -> str | None:
    return ((configmap.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
