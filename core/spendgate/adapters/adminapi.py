"""Fetching Anthropic's Admin API reports for a month, with an admin key from a file or a Kubernetes Secret.

The key is read when the command runs, used in the `x-api-key` header of these requests and dropped;
it is never logged, never part of an error (httpx's messages name the URL, never the headers), and
never written with the reports. The reports are fetched exactly as reconciliation needs them:

- cost_report: `bucket_width=1d`, `group_by[]=description` (model and token type per amount);
- usage_report/messages: `bucket_width=1d`, `group_by[]=api_key_id`, `model`, `service_tier`;

each from the month's first midnight to the next month's (or to now, for the current month), every
page followed through `next_page`, and returned as the JSON array of the pages (the form a saved
report file has), so a fetched report and a saved one are read by the same parser.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx

from spendgate.adapters.kube import Kube, KubeError, core_path, load_configuration
from spendgate.logic.usage import Month
from spendgate.logic.windows import rfc3339

ANTHROPIC_API: Final = "https://api.anthropic.com"
API_VERSION: Final = "2023-06-01"
COST_REPORT: Final = "/v1/organizations/cost_report"
USAGE_REPORT: Final = "/v1/organizations/usage_report/messages"
COST_GROUPS: Final = (("group_by[]", "description"),)
USAGE_GROUPS: Final = (("group_by[]", "api_key_id"), ("group_by[]", "model"), ("group_by[]", "service_tier"))
MAX_PAGES: Final = 100  # a month is at most two pages of 31 daily buckets; more means a loop
TIMEOUT: Final = httpx.Timeout(60.0, connect=10.0)


class AdminApiError(Exception):
    """The Admin API (or the key's source) refused or failed; the message never holds the key."""


def key_from_file(path: Path) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise AdminApiError(f"admin key file {path}: cannot be read ({type(error).__name__})") from None
    if not key:
        raise AdminApiError(f"admin key file {path} is empty")
    return key


def key_from_secret(reference: str, kubeconfig: Path | None = None) -> str:
    """`namespace/name` or `namespace/name:key` (default key `api-key`), from the current kubeconfig or in-cluster."""
    where, _, field = reference.partition(":")
    namespace, _, name = where.partition("/")
    if not namespace or not name:
        raise AdminApiError(f"--admin-key-secret {reference!r}: expected NAMESPACE/NAME or NAMESPACE/NAME:KEY")
    field = field or "api-key"
    try:
        secret = asyncio.run(_read_secret(namespace, name, kubeconfig))
    except KubeError as error:
        reasons = {403: "this identity may not read it", 404: "it does not exist"}
        reason = reasons.get(error.status, f"HTTP {error.status}")
        raise AdminApiError(f"Secret {namespace}/{name}: {reason}") from None
    data = secret.get("data") or {}
    if field not in data:
        present = ", ".join(sorted(data)) or "none"
        raise AdminApiError(f"Secret {namespace}/{name} has no key {field!r} (it has: {present})")
    try:
        key = base64.b64decode(data[field], validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        raise AdminApiError(f"Secret {namespace}/{name} key {field!r} is not base64-encoded UTF-8") from None
    if not key:
        raise AdminApiError(f"Secret {namespace}/{name} key {field!r} is empty")
    return key


async def _read_secret(namespace: str, name: str, kubeconfig: Path | None) -> dict[str, Any]:
    kube = Kube(load_configuration(kubeconfig, None))
    try:
        secret: dict[str, Any] = await kube.request("GET", core_path("secrets", namespace, name))
    finally:
        await kube.close()
    return secret


def fetch_reports(key: str, month: Month, base_url: str = ANTHROPIC_API, now: datetime | None = None
                  ) -> tuple[str, str]:
    """(cost report, usage report) for the month, each the JSON array of its pages."""
    end = min(month.end, now or datetime.now(UTC))
    window = (("starting_at", rfc3339(month.start)), ("ending_at", rfc3339(end)), ("bucket_width", "1d"),
              ("limit", "31"))
    headers = {"x-api-key": key, "anthropic-version": API_VERSION}
    with httpx.Client(base_url=base_url, headers=headers, timeout=TIMEOUT, follow_redirects=False) as client:
        cost = _pages(client, COST_REPORT, (*window, *COST_GROUPS))
        usage = _pages(client, USAGE_REPORT, (*window, *USAGE_GROUPS))
    return json.dumps(cost, indent=1), json.dumps(usage, indent=1)


def _pages(client: httpx.Client, path: str, query: tuple[tuple[str, str], ...]) -> list[Any]:
    pages: list[Any] = []
    page: str | None = None
    while len(pages) < MAX_PAGES:
        try:
            response = client.get(path, params=[*query, *((("page", page),) if page else ())])
        except httpx.HTTPError as error:
            raise AdminApiError(f"Admin API {path}: {type(error).__name__}: {error}") from None
        if response.status_code != 200:
            raise AdminApiError(f"Admin API {path}: HTTP {response.status_code} {_error_text(response)}")
        try:
            body = response.json()
        except ValueError:
            raise AdminApiError(f"Admin API {path}: the answer is not JSON") from None
        pages.append(body)
        page = body.get("next_page") if isinstance(body, dict) and body.get("has_more") else None
        if not page:
            return pages
    raise AdminApiError(f"Admin API {path}: more than {MAX_PAGES} pages (has_more never became false)")


def _error_text(response: httpx.Response) -> str:
    """The Anthropic error's type and message (the body names no key), else the first bytes of the body."""
    try:
        error = response.json().get("error", {})
        return f"{error.get('type', 'error')}: {error.get('message', '')}".strip()
    except (ValueError, AttributeError):
        return response.text[:200]
