"""Alert delivery: read each target's URL (or routing key) from its Secret, POST, retry with backoff.

Secrets stay secret: the URL is read at send time, used for one request and dropped; failures are
described by status code or exception type only, never by a message that could quote the URL.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from spendgate.adapters.kube import Kube, KubeError, core_path
from spendgate.api import v1alpha1 as api
from spendgate.operator.alerts import Delivery
from spendgate.operator.notify import AlertMessage, pagerduty_payload, slack_payload, webhook_payload

logger = logging.getLogger(__name__)

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_URL_FIELD = "eventsURL"  # optional second field of a PagerDuty Secret (a proxy or a test receiver)
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


class SecretProblem(Exception):
    """Why a target's Secret cannot be used; the message names the Secret, never its content."""


class Notifier:
    def __init__(self, kube: Kube, backoffs: Sequence[float] = (1.0, 4.0, 16.0), timeout: float = 10.0) -> None:
        self._kube = kube
        self._backoffs = tuple(backoffs)
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    @property
    def longest_delivery(self) -> float:
        """Seconds one target can take at most, every attempt timing out."""
        return sum(self._backoffs) + self._timeout * (len(self._backoffs) + 1)

    async def deliver(self, targets: Sequence[api.AlertTarget], message: AlertMessage) -> list[Delivery]:
        return list(await asyncio.gather(*(self._deliver_one(target, message) for target in targets)))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _deliver_one(self, target: api.AlertTarget, message: AlertMessage) -> Delivery:
        try:
            url, body = await self._request(target, message)
        except SecretProblem as unusable:
            return Delivery(target.name, False, str(unusable))
        problem, attempts = "not sent", 0
        for delay in (0.0, *self._backoffs):
            await asyncio.sleep(delay)
            attempts += 1
            problem, retry = await self._post(url, body)
            if not problem:
                logger.info("alert %s delivered to %s", message.dedupe_key, target.name)
                return Delivery(target.name, True, "delivered")
            if not retry:
                break
        logger.warning("alert %s not delivered to %s: %s after %d attempts", message.dedupe_key, target.name,
                       problem, attempts)
        return Delivery(target.name, False, f"{problem} after {attempts} attempt{'s' if attempts > 1 else ''}")

    async def _request(self, target: api.AlertTarget, message: AlertMessage) -> tuple[str, dict[str, Any]]:
        secret = await self._secret_data(target.secretRef)
        value = _field(secret, target.secretRef, target.secretRef.key)
        if target.type == api.AlertTargetType.PAGERDUTY:
            url = _decoded(secret[PAGERDUTY_URL_FIELD]) if PAGERDUTY_URL_FIELD in secret else PAGERDUTY_EVENTS_URL
            return url, pagerduty_payload(message, value)
        if not value.startswith(("https://", "http://")):
            raise SecretProblem(f"Secret {_name(target.secretRef)} key {target.secretRef.key!r} is not an http(s) URL")
        body = slack_payload(message) if target.type == api.AlertTargetType.SLACK else webhook_payload(message)
        return value, body

    async def _secret_data(self, ref: api.SecretKeyRef) -> dict[str, Any]:
        try:
            secret = await self._kube.request("GET", core_path("secrets", ref.namespace, ref.name))
        except KubeError as error:
            reason = {403: "the operator may not read it", 404: "it does not exist"}.get(error.status)
            reason = reason or f"HTTP {error.status}"
            raise SecretProblem(f"Secret {_name(ref)}: {reason}") from None
        data: dict[str, Any] = secret.get("data") or {}
        return data

    async def _post(self, url: str, body: dict[str, Any]) -> tuple[str, bool]:
        """("", _) when delivered, else (what went wrong, whether another attempt may help)."""
        try:
            response = await self._http().post(url, json=body)
        except httpx.HTTPError as error:
            return type(error).__name__, True
        if response.is_success:
            return "", False
        return f"HTTP {response.status_code}", response.status_code in RETRYABLE

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        return self._client


def _field(secret: dict[str, Any], ref: api.SecretKeyRef, key: str) -> str:
    if key not in secret:
        raise SecretProblem(f"Secret {_name(ref)} has no key {key!r}")
    return _decoded(secret[key])


def _decoded(value: Any) -> str:
    try:
        return base64.b64decode(str(value), validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        raise SecretProblem("a Secret value is not valid base64 text") from None


def _name(ref: api.SecretKeyRef) -> str:
    return f"{ref.namespace}/{ref.name}"
