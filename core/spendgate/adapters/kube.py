"""Kubernetes API calls for the operator and the proxies, async over aiohttp.

The operator writes through `request` (kopf does its watching); the proxies also `watch` Budgets
and their bundle ConfigMap. Credentials come from the same kubeconfig or in-cluster service
account that kopf logs in with (kubernetes.config resolves them, including token refresh).
Errors surface as KubeError with the API's status code; nothing here retries, callers decide
(a 409 Conflict usually means "wait for the watch to bring the newer object").
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import kubernetes

from spendgate.api.v1alpha1 import GROUP, VERSION

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)
WATCH_SECONDS = 300  # the server ends a watch after this; we then resume from the last version
WATCH_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=WATCH_SECONDS + 30)
LISTED = "LISTED"  # watch(): a full listing, which replaces whatever the caller knew


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


def load_configuration(kubeconfig: Path | None, context: str | None) -> kubernetes.client.Configuration:
    """An explicit kubeconfig, else the in-cluster service account, else the default kubeconfig."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return configuration
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig) if kubeconfig else None, context=context, client_configuration=configuration)
    return configuration


def bearer_token(configuration: kubernetes.client.Configuration) -> str | None:
    """The current token (the in-cluster loader refreshes it through this call)."""
    header = (configuration.get_api_key_with_prefix("BearerToken")
              or configuration.get_api_key_with_prefix("authorization"))
    return str(header).split(" ", 1)[-1] if header else None


def custom_path(plural: str, namespace: str | None = None, name: str | None = None,
                subresource: str | None = None) -> str:
    return _path(f"/apis/{GROUP}/{VERSION}", plural, namespace, name, subresource)


def core_path(plural: str, namespace: str | None = None, name: str | None = None) -> str:
    return _path("/api/v1", plural, namespace, name, None)


def _path(prefix: str, plural: str, namespace: str | None, name: str | None, subresource: str | None) -> str:
    parts = [prefix]
    if namespace:
        parts.append(f"namespaces/{quote(namespace)}")
    parts.append(plural)
    if name:
        parts.append(quote(name))
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


@dataclass
class _Cursor:
    version: str  # the resource version a watch resumes from; empty: list again


class Kube:
    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self.configuration = configuration
        self._session: aiohttp.ClientSession | None = None

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                      accept: str = "application/json", query: dict[str, str] | None = None) -> dict[str, Any]:
        headers = {"Accept": accept, "Content-Type": content_type}
        token = bearer_token(self.configuration)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body)
        async with self._client().request(method, self.configuration.host + path, data=data, headers=headers,
                                          params=query) as response:
            text = await response.text()
            if response.status >= 400:
                raise _error(response.status, text)
            result: dict[str, Any] = json.loads(text) if text else {}
            return result

    async def watch(self, path: str, query: dict[str, str] | None = None
                    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """List, then follow: yields (LISTED, all objects) and then (ADDED|MODIFIED|DELETED, [object]).

        When the server says the resource version is too old (410 Gone), it lists again, so a
        caller that replaces its state on LISTED never misses a deletion.
        """
        while True:
            listing = await self.request("GET", path, query=query)
            cursor = _Cursor(str(listing["metadata"]["resourceVersion"]))
            yield LISTED, list(listing.get("items") or [])
            while cursor.version:
                async for event in self._follow(path, query or {}, cursor):
                    yield event

    async def _follow(self, path: str, query: dict[str, str], cursor: _Cursor
                      ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """One watch request, event by event; leaves the cursor empty when only a new list will do."""
        params = {**query, "watch": "1", "resourceVersion": cursor.version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(WATCH_SECONDS)}
        headers = {"Accept": "application/json"}
        token = bearer_token(self.configuration)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self._client().get(self.configuration.host + path, params=params, headers=headers,
                                      timeout=WATCH_TIMEOUT) as response:
            if response.status >= 400:
                raise _error(response.status, await response.text())
            async for line in response.content:
                event = json.loads(line)
                kind, item = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    cursor.version = "" if item.get("code") == 410 else cursor.version
                    return
                cursor.version = str((item.get("metadata") or {}).get("resourceVersion") or cursor.version)
                if kind != "BOOKMARK":
                    yield kind, [item]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl_context(), limit=16)
            self._session = aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT)
        return self._session

    def _ssl_context(self) -> ssl.SSLContext | bool:
        configuration = self.configuration
        if not configuration.host.startswith("https"):
            return False
        if not configuration.verify_ssl:
            return False
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file and configuration.key_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        return context


def _error(status: int, text: str) -> KubeError:
    try:
        payload = json.loads(text)
        return KubeError(status, str(payload.get("reason", "")), str(payload.get("message", text)))
    except (json.JSONDecodeError, AttributeError):
        return KubeError(status, "", text[:500])


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns `old` into `new` (removed keys become null)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch
