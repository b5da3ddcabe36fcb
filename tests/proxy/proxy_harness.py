"""Helpers shared by the proxy tests (importable, unlike conftest.py): a running proxy, request bodies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from spendgate.proxy.server import Proxy

# A made-up upstream key: tests check it reaches the upstream and nothing else.
UPSTREAM_KEY = "test-upstream-secret-7f3a9c1e-not-a-real-key"


@dataclass(frozen=True)
class Keys:
    """Plaintext virtual keys, as `spendgate keys create` printed them."""

    alice: str  # developer alice, cost center platform
    bob: str  # developer bob, cost center engineering
    revoked: str  # mallory's key, revoked
    file: Path


@dataclass
class Running:
    proxy: Proxy
    ledger_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.admin_port}"

    def ledger(self) -> list[dict[str, Any]]:
        self.proxy.ledger.flush()
        if not self.ledger_path.exists():
            return []
        return [orjson.loads(line) for line in self.ledger_path.read_bytes().splitlines()]

    def client(self, key: str | None, **headers: str) -> httpx.AsyncClient:
        auth = {"x-api-key": key} if key is not None else {}
        return httpx.AsyncClient(base_url=self.url, timeout=10,
                                 headers={"anthropic-version": "2023-06-01", **auth, **headers})

    async def metrics(self) -> str:
        async with httpx.AsyncClient(base_url=self.admin_url) as admin:
            return (await admin.get("/metrics")).text


StartGateway = Callable[..., Awaitable[Running]]


class Clock:
    """Monotonic time that a test can move forward (the SDK's and Claude Code's waits stay real)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def message_request(stream: bool = False, model: str = "claude-opus-5-5", **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 1024, "stream": stream,
            "messages": [{"role": "user", "content": "Run the tests."}], **extra}


def assert_anthropic_error(response: httpx.Response, status: int, error_type: str) -> str:
    """The proxy's own errors: Anthropic's envelope, matching status, request-id header = body. Returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["request_id"] == response.headers["request-id"]
    assert body["request_id"].startswith("req_proxy_")
    message: str = body["error"]["message"]
    assert message
    return message


async def wait_for_ledger(running: Running, count: int) -> list[dict[str, Any]]:
    """The ledger once it has `count` lines (a request settled after its client left, say)."""
    for _ in range(500):
        lines = running.ledger()
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.01)
    raise AssertionError(f"the ledger has {len(running.ledger())} lines, expected {count}")


async def raw_exchange(gateway: Running, data: bytes, wait: float = 2.0) -> bytes:
    """Send raw bytes on a fresh connection and read until the gateway closes it (or `wait` passes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.proxy.port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), wait)
    except TimeoutError:
        return b""
    finally:
        writer.close()


def status_and_body(answer: bytes) -> tuple[int, dict[str, object]]:
    """The status and JSON body of one raw HTTP/1.1 answer (chunked or not)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        chunks, rest = [], body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            length = int(size, 16)
            if length == 0:
                break
            chunks.append(rest[:length])
            rest = rest[length + 2:]
        body = b"".join(chunks)
    return int(head.split()[1]), orjson.loads(body)
