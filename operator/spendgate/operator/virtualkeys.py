"""Virtual keys as Kubernetes Secrets: the developer's plaintext key stays in the Secret, only its
SHA-256 reaches the bundle.

A key Secret carries the label `spendgate.io/virtual-key: "true"` and three data fields:
`key` (the plaintext, so the developer can fetch it with kubectl), `developer` and `costCenter`.
The annotation `spendgate.io/revoked: "true"` revokes it while keeping it listed, so the proxy
answers "revoked" rather than "unknown key". Error messages never quote the key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from spendgate.adapters.keysfile import key_hash
from spendgate.policy.bundle import KeyEntry
from spendgate.policy.errors import PolicyError

LABEL = "spendgate.io/virtual-key"
REVOKED_ANNOTATION = "spendgate.io/revoked"
KEY_FIELD, DEVELOPER_FIELD, COST_CENTER_FIELD = "key", "developer", "costCenter"
KIND = "VirtualKey"


def key_entry(secret: Mapping[str, Any]) -> KeyEntry | PolicyError:
    """The bundle's record of one key Secret, or what is wrong with the Secret."""
    metadata = secret.get("metadata") or {}
    name, namespace = str(metadata.get("name", "")), metadata.get("namespace")
    fields: dict[str, str] = {}
    for field in (KEY_FIELD, DEVELOPER_FIELD, COST_CENTER_FIELD):
        value = _decoded(secret.get("data") or {}, field)
        if not value:
            return PolicyError(KIND, namespace, name, "MissingField",
                               f"Secret {namespace}/{name} needs a non-empty data field {field!r}", f"data.{field}")
        fields[field] = value
    revoked = (metadata.get("annotations") or {}).get(REVOKED_ANNOTATION) == "true"
    return KeyEntry(hash=key_hash(fields[KEY_FIELD]), name=name, developer=fields[DEVELOPER_FIELD],
                    costCenter=fields[COST_CENTER_FIELD], revoked=revoked)


def _decoded(data: Mapping[str, Any], field: str) -> str:
    """A data field as text; an undecodable value counts as missing (and is never echoed)."""
    try:
        return base64.b64decode(str(data.get(field) or ""), validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        return ""
