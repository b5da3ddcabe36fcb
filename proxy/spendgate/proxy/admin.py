"""The admin port: /livez, /readyz (with the bundle's version and the last load error), /metrics,
and /budgets (every budget as `kubectl get budgets` would show it, from this proxy's view of spend).

Separate from the client port, so metrics and health are never reachable with a virtual key
and never compete with client traffic. Plain ASGI: three fixed routes need no framework, and
importing one would cost start-up time and memory (DESIGN.md section 4: ready in 1 s, 80 MB).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from spendgate.proxy.asgi import Receive, Scope, Send, respond
from spendgate.proxy.budgetviews import BudgetReader, views_json
from spendgate.proxy.bundles import BundleHolder
from spendgate.proxy.metrics import ProxyMetrics

JSON = [(b"content-type", b"application/json")]
TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


@dataclass
class Health:
    """What /readyz and /livez report beyond the bundle: background tasks that ended unexpectedly."""

    stopped: dict[str, str] = field(default_factory=dict)  # task name -> why it ended
    stopping: bool = False


class AdminApp:
    def __init__(self, bundles: BundleHolder, metrics: ProxyMetrics, health: Health,
                 budgets: BudgetReader | None = None) -> None:
        self._bundles = bundles
        self._metrics = metrics
        self._health = health
        self._budgets = budgets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/livez":
            broken = self._health.stopped
            await respond(send, 503 if broken else 200, TEXT,
                          b"ok\n" if not broken else f"stopped: {', '.join(broken)}\n".encode())
        elif path == "/readyz":
            ready, body = self.readiness()
            await respond(send, 200 if ready else 503, JSON, body)
        elif path == "/metrics":
            await respond(send, 200, [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                          generate_latest(self._metrics.registry))
        elif path == "/budgets" and self._budgets is not None:
            views = self._budgets.all_budgets(self._bundles.current.signed, datetime.now(UTC))
            await respond(send, 200, JSON, views_json(views))
        else:
            routes = "/livez, /readyz, /metrics" + (", /budgets" if self._budgets is not None else "")
            await respond(send, 404, TEXT, f"not found: {routes}\n".encode())

    def readiness(self) -> tuple[bool, bytes]:
        """Ready whenever a bundle is in force and every background task runs. A refused newer bundle
        is reported (with how long the source has been ahead of what is loaded), not fatal: the
        last good bundle keeps serving."""
        current, bundles = self._bundles.current, self._bundles
        ready = not self._health.stopped
        stale = bundles.stale_seconds()
        return ready, orjson.dumps({
            "ready": ready,
            "bundle": {"version": current.version, "contentHash": current.signed.contentHash,
                       "loadedAt": current.loaded_at},
            "lastLoadError": bundles.last_error,
            "lastLoadErrorAt": bundles.last_error_at,
            "staleSeconds": round(stale, 3),
            "stoppedTasks": self._health.stopped,
        }, option=orjson.OPT_UTC_Z)
