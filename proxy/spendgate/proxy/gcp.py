"""The organisation's Google credentials on requests to Vertex AI: an OAuth access token.

google-auth's default credentials: a service-account file (GOOGLE_APPLICATION_CREDENTIALS), workload
identity federation, or the metadata server (GKE workload identity). The token is fetched before
the gateway serves (no token, no start) and refreshed off the event loop five minutes before it
expires. Imported only by a gateway started with --vertex-upstream (google-auth is not free to import).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Final

import google.auth
import google.auth.transport.requests
from google.auth.credentials import Credentials

logger = logging.getLogger("spendgate.proxy")

SCOPES: Final = ("https://www.googleapis.com/auth/cloud-platform",)
# Refresh a token this long before it expires (Google's tokens last an hour).
REFRESH_MARGIN_SECONDS: Final = 300.0
CHECK_SECONDS: Final = 30.0


class GoogleToken:
    """The organisation's Google access token on each request, kept fresh by a background task."""

    def __init__(self, credentials: Credentials | None = None) -> None:
        if credentials is None:
            credentials, _ = google.auth.default(scopes=list(SCOPES))
        self._credentials = credentials
        self._refresh()  # at start: no token, no serving (the caller turns the error into a start-up error)

    def __call__(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> None:
        headers.append(("authorization", f"Bearer {self._credentials.token}"))

    def _refresh(self) -> None:
        self._credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]

    def _expires_soon(self) -> bool:
        expiry: datetime | None = self._credentials.expiry  # naive UTC, or None for tokens without one
        if expiry is None:
            return False
        return expiry.replace(tzinfo=UTC).timestamp() - time.time() < REFRESH_MARGIN_SECONDS

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            if not self._expires_soon():
                continue
            try:
                await asyncio.to_thread(self._refresh)
            except Exception as error:  # keep the current token until it expires; Google says so then
                logger.warning("could not refresh the Google access token (%s: %s); retrying in %.0f s",
                               type(error).__name__, error, CHECK_SECONDS)
