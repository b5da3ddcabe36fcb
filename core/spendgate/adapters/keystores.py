"""Where `spendgate keys` keeps virtual keys: a standalone keys file, or key Secrets in a cluster.

Both offer the same four actions. A new or rotated key's plaintext is returned once, to be shown
once; what stays behind is the hash (keys file) or the Secret the operator reads (cluster).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import kubernetes

from spendgate.adapters import keysecrets, keysfile
from spendgate.adapters.kube import load_configuration
from spendgate.policy.bundle import KeyEntry
from spendgate.policy.errors import PolicyError


class KeyStoreError(Exception):
    """A key action that failed in the cluster; the message names the Secret and the reason."""


@dataclass(frozen=True)
class KeyInfo:
    """One row of `spendgate keys list`: never the key, only its hash."""

    name: str
    developer: str
    costCenter: str
    state: str  # active, revoked, expiring (a rotated-out key in its grace period), expired, invalid: ...
    hash: str
    expiresAt: str | None = None


def key_info(entry: KeyEntry, now: datetime) -> KeyInfo:
    if entry.revoked:
        state = "revoked"
    elif entry.expiresAt is None:
        state = "active"
    else:
        state = "expired" if entry.expired(now) else "expiring"
    return KeyInfo(entry.name, entry.developer, entry.costCenter, state, entry.hash, entry.expiresAt)


class KeyStore(Protocol):
    def describe(self) -> str: ...

    def create(self, name: str, developer: str, cost_center: str) -> str: ...

    def rotate(self, name: str, grace: timedelta, now: datetime) -> str: ...

    def revoke(self, name: str) -> None: ...

    def list(self, now: datetime) -> list[KeyInfo]: ...


@dataclass(frozen=True)
class FileKeys:
    path: Path

    def describe(self) -> str:
        return str(self.path)

    def create(self, name: str, developer: str, cost_center: str) -> str:
        return keysfile.create_key(self.path, name, developer, cost_center)

    def rotate(self, name: str, grace: timedelta, now: datetime) -> str:
        return keysfile.rotate_key(self.path, name, grace, now)

    def revoke(self, name: str) -> None:
        keysfile.revoke_key(self.path, name)

    def list(self, now: datetime) -> list[KeyInfo]:
        return [key_info(entry, now) for entry in keysfile.read_keys_file(self.path).keys]


class ClusterKeys:
    """Key Secrets in one namespace (the operator's), through the current kubeconfig or in-cluster.

    Updates carry the resourceVersion they were computed from, so two people rotating one key at
    once cannot both succeed: one gets a conflict and no key is printed for it."""

    def __init__(self, namespace: str, kubeconfig: Path | None = None, context: str | None = None) -> None:
        try:
            configuration = load_configuration(kubeconfig, context)
        except (kubernetes.config.ConfigException, OSError) as error:
            raise KeyStoreError(f"no Kubernetes credentials ({error}); pass --kubeconfig, or --keys-file for a "
                                "standalone keys file") from error
        self.namespace = namespace
        self._core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))

    def describe(self) -> str:
        return f"Secret in namespace {self.namespace}"

    def create(self, name: str, developer: str, cost_center: str) -> str:
        body, plaintext = keysecrets.new_secret(self.namespace, name, developer, cost_center)
        self._call(f"Secret {self.namespace}/{name} not created", self._core.create_namespaced_secret,
                   self.namespace, body)
        return plaintext

    def rotate(self, name: str, grace: timedelta, now: datetime) -> str:
        secret = self._key_secret(name)
        entries = keysecrets.key_entries(secret)
        if isinstance(entries, PolicyError):
            raise KeyStoreError(f"{entries.message}; fix or recreate it before rotating")
        if entries[0].revoked:
            raise KeyStoreError(f"key {self.namespace}/{name} is revoked; create a new key instead")
        body, plaintext = keysecrets.rotated(secret, grace, now)
        self._call(f"Secret {self.namespace}/{name} not rotated", self._core.replace_namespaced_secret,
                   name, self.namespace, body)
        return plaintext

    def revoke(self, name: str) -> None:
        secret = self._key_secret(name)
        patch = {"metadata": {"resourceVersion": secret["metadata"]["resourceVersion"],
                              "annotations": {keysecrets.REVOKED_ANNOTATION: "true"}}}
        self._call(f"Secret {self.namespace}/{name} not revoked", self._core.patch_namespaced_secret,
                   name, self.namespace, patch)

    def list(self, now: datetime) -> list[KeyInfo]:
        listing = self._call(f"key Secrets in {self.namespace} not listed", self._core.list_namespaced_secret,
                             self.namespace, label_selector=f"{keysecrets.LABEL}=true")
        rows = []
        for secret in self._plain(listing)["items"]:
            entries = keysecrets.key_entries(secret)
            if isinstance(entries, PolicyError):
                rows.append(KeyInfo(secret["metadata"]["name"], "", "", f"invalid: {entries.reason}", ""))
            else:
                rows.extend(key_info(entry, now) for entry in entries)
        return sorted(rows, key=lambda row: (row.name, row.state != "active", row.hash))

    def _key_secret(self, name: str) -> dict[str, Any]:
        secret = self._plain(self._call(f"Secret {self.namespace}/{name} not read",
                                        self._core.read_namespaced_secret, name, self.namespace))
        if (secret["metadata"].get("labels") or {}).get(keysecrets.LABEL) != "true":
            raise KeyStoreError(f"Secret {self.namespace}/{name} is not a virtual key "
                                f"(no label {keysecrets.LABEL}=true)")
        return secret

    def _plain(self, obj: Any) -> dict[str, Any]:
        plain: dict[str, Any] = self._core.api_client.sanitize_for_serialization(obj)
        return plain

    @staticmethod
    def _call(what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        """One API call; its failure becomes one line saying what did not happen and why."""
        try:
            return method(*args, **kwargs)
        except kubernetes.client.ApiException as error:
            raise KeyStoreError(f"{what}: {error.status} {error.reason}: {_message(error)}") from error
        except Exception as error:  # connection refused, TLS, DNS: urllib3's many errors
            raise KeyStoreError(f"{what}: {type(error).__name__}: {error}") from error


def _message(error: Any) -> str:
    try:
        return str(json.loads(error.body).get("message", ""))
    except (TypeError, ValueError, AttributeError):
        return ""
