"""The admin port: /livez, /readyz (with the bundle's version and the last load error), /metrics.

Separate from the client port, so metrics and health are never reachable with a virtual key
and never compete with client traffic. Plain ASGI: three fixed routes need no framework, and
importing one would cost start-up time and memory (DESIGN.md section 4: ready in 1 s, 80 MB).
"""

from __future__ import annotations

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from spendgate.proxy.asgi import Receive, Scope, Send, respond
from spendgate.proxy.bundles import BundleHolder
from spendgate.proxy.metrics import ProxyMetrics

JSON = [(b"content-type", b"application/json")]
TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


class AdminApp:
    def __init__(self, bundles: BundleHolder, metrics: ProxyMetrics) -> None:
        self._bundles = bundles
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/livez":
            await respond(send, 200, TEXT, b"ok\n")
        elif path == "/readyz":
            await respond(send, 200, JSON, self.readiness())
        elif path == "/metrics":
            await respond(send, 200, [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                          generate_latest(self._metrics.registry))
        else:
            await respond(send, 404, TEXT, b"not found: /livez, /readyz, /metrics\n")

    def readiness(self) -> bytes:
        """Ready whenever a bundle is in force; a refused newer bundle is reported, not fatal."""
        current = self._bundles.current
        return orjson.dumps({
            "ready": True,
            "bundle": {"version": current.version, "contentHash": current.signed.contentHash,
                       "loadedAt": current.loaded_at},
            "lastLoadError": self._bundles.last_error,
            "lastLoadErrorAt": self._bundles.last_error_at,
        }, option=orjson.OPT_UTC_Z)
