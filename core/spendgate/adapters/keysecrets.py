"""Virtual keys as Kubernetes Secrets: the one definition of their format, read by the operator
(which compiles them into the bundle) and written by `spendgate keys ... --namespace`.

A key Secret carries the label `spendgate.io/virtual-key: "true"` and three data fields: `key`
(the plaintext, so the developer can fetch it with kubectl), `developer` and `costCenter`. The key
name in the bundle is the Secret's name. The annotation `spendgate.io/revoked: "true"` revokes it
while keeping it listed, so the proxy answers "revoked" rather than "unknown key".

Rotation keeps the old key working for a grace period: the Secret's `key` becomes the new key, the
old one moves to `previousKey`, and the annotation `spendgate.io/previous-key-expires-at` (RFC 3339)
says until when. The bundle then holds both hashes under the key's name, the old one with
`expiresAt`, and every proxy refuses it from that instant on, with nobody touching anything again.
Error messages never quote a key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from spendgate.adapters.keysfile import key_hash, new_key
from spendgate.logic.windows import rfc3339
from spendgate.policy.bundle import KeyEntry
from spendgate.policy.errors import PolicyError

LABEL = "spendgate.io/virtual-key"
REVOKED_ANNOTATION = "spendgate.io/revoked"
PREVIOUS_EXPIRES_ANNOTATION = "spendgate.io/previous-key-expires-at"
KEY_FIELD, DEVELOPER_FIELD, COST_CENTER_FIELD = "key", "developer", "costCenter"
PREVIOUS_KEY_FIELD = "previousKey"
KIND = "VirtualKey"


def key_entries(secret: Mapping[str, Any]) -> list[KeyEntry] | PolicyError:
    """The bundle's records of one key Secret (the key, and a rotated-out key in its grace period),
    or what is wrong with the Secret."""
    metadata = secret.get("metadata") or {}
    name, namespace = str(metadata.get("name", "")), metadata.get("namespace")
    data, annotations = secret.get("data") or {}, metadata.get("annotations") or {}
    fields: dict[str, str] = {}
    for field in (KEY_FIELD, DEVELOPER_FIELD, COST_CENTER_FIELD):
        value = _decoded(data, field)
        if not value:
            return _problem(namespace, name, "MissingField", f"needs a non-empty data field {field!r}", f"data.{field}")
        fields[field] = value
    revoked = annotations.get(REVOKED_ANNOTATION) == "true"
    current = KeyEntry(hash=key_hash(fields[KEY_FIELD]), name=name, developer=fields[DEVELOPER_FIELD],
                       costCenter=fields[COST_CENTER_FIELD], revoked=revoked)
    previous = _decoded(data, PREVIOUS_KEY_FIELD)
    if not previous:
        return [current]
    expires = _instant(annotations.get(PREVIOUS_EXPIRES_ANNOTATION))
    if expires is None:
        return _problem(namespace, name, "MissingExpiry",
                        f"has a {PREVIOUS_KEY_FIELD} but no RFC 3339 annotation {PREVIOUS_EXPIRES_ANNOTATION}",
                        f"metadata.annotations.{PREVIOUS_EXPIRES_ANNOTATION}")
    return [current, current.model_copy(update={"hash": key_hash(previous), "expiresAt": rfc3339(expires)})]


def _problem(namespace: str | None, name: str, reason: str, what: str, field: str) -> PolicyError:
    return PolicyError(KIND, namespace, name, reason, f"Secret {namespace}/{name} {what}", field)


def _decoded(data: Mapping[str, Any], field: str) -> str:
    """A data field as text; an undecodable value counts as missing (and is never echoed)."""
    try:
        return base64.b64decode(str(data.get(field) or ""), validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _instant(text: str | None) -> datetime | None:
    try:
        instant = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return instant if instant.tzinfo is not None else None


def _encoded(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def new_secret(namespace: str, name: str, developer: str, cost_center: str) -> tuple[dict[str, Any], str]:
    """A key Secret for a new key, and the key's plaintext."""
    plaintext = new_key()
    body = {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL: "true"}},
        "data": {KEY_FIELD: _encoded(plaintext), DEVELOPER_FIELD: _encoded(developer),
                 COST_CENTER_FIELD: _encoded(cost_center)},
    }
    return body, plaintext


def rotated(secret: Mapping[str, Any], grace: timedelta, now: datetime) -> tuple[dict[str, Any], str]:
    """The Secret with a new key, its old key kept until now + grace, and the new key's plaintext.
    A key rotated again within the grace period drops the oldest key at once."""
    plaintext = new_key()
    metadata = {key: value for key, value in (secret.get("metadata") or {}).items() if key != "managedFields"}
    data = dict(secret.get("data") or {})
    data[PREVIOUS_KEY_FIELD], data[KEY_FIELD] = data[KEY_FIELD], _encoded(plaintext)
    metadata["annotations"] = {**(metadata.get("annotations") or {}), PREVIOUS_EXPIRES_ANNOTATION: rfc3339(now + grace)}
    return {**secret, "metadata": metadata, "data": data}, plaintext
