"""The anchor: a plain reverse proxy, raw ASGI on uvicorn (uvloop, httptools) + an aiohttp client.

It does what any gateway must do and nothing more: read the request body, forward method, path,
query, headers and body to the upstream over a pooled keep-alive aiohttp session, and stream the
response status, headers and body back as the bytes arrive. No parsing, no accounting: every
gateway's cost is measured against this.

    python bench/bare_passthrough.py --upstream http://127.0.0.1:18080 --port 18081
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import uvicorn

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                        b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length"})
RESPONSE_SKIP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


async def read_body(receive: Receive) -> bytes:
    first = await receive()
    body: bytes = first.get("body", b"")
    if not first.get("more_body"):
        return body
    parts = [body]
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


def forward_headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"] if name not in HOP_BY_HOP}


def response_headers(response: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1"))
               for name, value in response.headers.items() if name.lower() not in RESPONSE_SKIP]
    if response.content_length is not None:
        headers.append((b"content-length", str(response.content_length).encode()))
    return headers


class Passthrough:
    """The ASGI application; the aiohttp session is created on lifespan startup."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            await self.proxy(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
                self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                     skip_auto_headers=("User-Agent", "Accept-Encoding"))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.session is not None
        body = await read_body(receive)
        url = self.upstream + scope["path"]
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        async with self.session.request(scope["method"], url, data=body, headers=forward_headers(scope)) as response:
            await send({"type": "http.response.start", "status": response.status,
                        "headers": response_headers(response)})
            async for data in response.content.iter_any():
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18081)
    args = parser.parse_args()
    uvicorn.run(Passthrough(args.upstream), host=args.host, port=args.port, loop="uvloop", http="httptools",
                lifespan="on", access_log=False, log_level="warning", backlog=2048)


if __name__ == "__main__":
    main()
