"""The connection to the upstream API: one pooled aiohttp session, the organisation's key injected.

aiohttp was measured several times faster than httpx on this path (DESIGN.md section 4). The
session adds nothing of its own: no default Accept/Accept-Encoding/User-Agent/Content-Type
(the client's pass through), no cookies kept between clients, no decompression (compressed
bytes pass through untouched), no redirects followed (a redirect goes back to the client).
"""

from __future__ import annotations

import aiohttp
from yarl import URL

from spendgate.proxy.errors import ProxyError

# Headers aiohttp would otherwise add on its own when the client did not send them.
NOT_ADDED = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class Upstream:
    def __init__(self, base_url: str, api_key: str, connect_timeout: float, read_timeout: float) -> None:
        self._base = base_url.rstrip("/")
        self._host = URL(self._base).host or self._base
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None

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
        already gone from `headers`; the upstream key goes in here and nowhere else.
        """
        assert self._session is not None, "Upstream.start() first"
        headers.append(("x-api-key", self._api_key))
        try:
            return await self._session.request(method, URL(self._base + target, encoded=True), headers=headers,
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

