"""The connection to an upstream API: one pooled aiohttp session, the organisation's credential injected.

aiohttp was measured several times faster than httpx on this path (DESIGN.md section 4). The
session adds nothing of its own: no default Accept/Accept-Encoding/User-Agent/Content-Type
(the client's pass through), no cookies kept between clients, no decompression (compressed
bytes pass through untouched), no redirects followed (a redirect goes back to the client).
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from yarl import URL

from spendgate.proxy.errors import ProxyError

# Headers aiohttp would otherwise add on its own when the client did not send them.
NOT_ADDED = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")

# Adds the organisation's credential to a request about to go upstream: (method, url, headers, body).
Authenticate = Callable[[str, str, list[tuple[str, str]], bytes], None]


def api_key(key: str) -> Authenticate:
    """The Anthropic API's credential: the organisation's key as x-api-key."""

    def add(method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> None:
        headers.append(("x-api-key", key))

    return add


class Upstream:
    def __init__(self, base_url: str, authenticate: Authenticate, connect_timeout: float, read_timeout: float) -> None:
        self._base = base_url.rstrip("/")
        base = URL(self._base)
        self._host = base.host or self._base
        self.address = (self._host, base.port or 443)  # server.address / server.port, for telemetry
        self._authenticate = authenticate
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return self._base

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=NOT_ADDED,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def open(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
                   ) -> aiohttp.ClientResponse:
        """Send the request; the response's headers are in, its body is still to read.

        `target` is the raw path and query as the client sent them. The client's credential is
        already gone from `headers`; the organisation's goes in here and nowhere else.
        """
        assert self._session is not None, "Upstream.start() first"
        url = self._base + target
        self._authenticate(method, url, headers, body)
        try:
            return await self._session.request(method, URL(url, encoded=True), headers=headers,
                                               data=body or None, allow_redirects=False)
        except TimeoutError as error:
            raise self.timed_out() from error
        except aiohttp.ClientError as error:
            raise self.unreachable(error) from error

    def timed_out(self) -> ProxyError:
        return ProxyError("timeout_error", f"upstream {self._host} did not answer within {self._read_timeout:g}s")

    def unreachable(self, error: BaseException) -> ProxyError:
        # The exception's class, never its text: it can quote request details.
        return ProxyError("api_error", f"upstream {self._host} unreachable ({type(error).__name__})")

    def broke_off(self, error: BaseException) -> ProxyError:
        return ProxyError("api_error",
                          f"connection to upstream {self._host} lost mid-response ({type(error).__name__})")

