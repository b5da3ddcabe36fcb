"""Kubernetes API calls for the operator and the proxies, async over aiohttp.

The operator writes through `request` (kopf does its watching); the proxies also `watch` Budgets
and their bundle ConfigMap. Credentials come from the same kubeconfig or in-cluster service
account that kopf logs in with (kubernetes.config resolves them, including token refresh).
Errors surface as KubeError with the API's status code; nothing here retries, callers decide
(a 409 Conflict usually means "wait for the watch to bring the newer object").

Nothing waits forever on a hung API server: every request has a deadline, and a watch that hears
nothing (no event, no bookmark, no end of its server-side timeout) for WATCH_SILENCE seconds is a
stalled connection and fails with a TimeoutError, so the caller notices and reconnects.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable
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
REQUEST_SECONDS = 30.0
# The server ends a watch after WATCH_SECONDS (a bookmark first); we then resume from the last version.
# So a healthy watch hears something at least that often, and one silent for WATCH_SILENCE has stalled.
WATCH_SECONDS = 60
WATCH_SILENCE = WATCH_SECONDS + 15
WATCH_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=WATCH_SILENCE)
LISTED = "LISTED"  # watch(): a full listing, which replaces whatever the caller knew
Contact = Callable[[], None]  # told whenever the API server answers a watch (listing, event, bookmark)


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
    def __init__(self, configuration: kubernetes.client.Configuration, request_seconds: float = REQUEST_SECONDS,
                 heard: Contact | None = None) -> None:
        """`heard` is told whenever the API server answers any watch of this client."""
        self.configuration = configuration
        self._timeout = aiohttp.ClientTimeout(total=request_seconds)
        self._heard = heard or _nobody
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

    async def watch(self, path: str, query: dict[str, str] | None = None, contact: Contact | None = None
                    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """List, then follow: yields (LISTED, all objects) and then (ADDED|MODIFIED|DELETED, [object]).

        When the server says the resource version is too old (410 Gone), it lists again, so a
        caller that replaces its state on LISTED never misses a deletion. `contact` is called
        whenever the server answers, bookmarks included: how a caller tells quiet from stalled.
        """
        def heard() -> None:
            self._heard()
            if contact is not None:
                contact()

        while True:
            listing = await self.request("GET", path, query=query)
            heard()
            cursor = _Cursor(str(listing["metadata"]["resourceVersion"]))
            yield LISTED, list(listing.get("items") or [])
            while cursor.version:
                async for event in self._follow(path, query or {}, cursor, heard):
                    yield event

    async def _follow(self, path: str, query: dict[str, str], cursor: _Cursor, heard: Contact
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
            heard()
            async for line in response.content:
                heard()
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
            # No pool limit: each watch holds a connection for its whole life (a proxy watches every
            # namespace of its bundle), and a capped pool would starve the reports behind them; the
            # callers bound their own concurrency (the operator's writes, one report at a time).
            connector = aiohttp.TCPConnector(ssl=self._ssl_context(), limit=0)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
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


def _nobody() -> None:
    pass


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
