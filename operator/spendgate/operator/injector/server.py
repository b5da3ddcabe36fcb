"""The HTTPS webhook and the admin port, thin on purpose: `review.answer` does the work.

Two webhook paths, because an AdmissionReview carries no namespace labels: the chart sends pods of
namespaces labelled for injection to /inject/namespace, and opted-in pods elsewhere to /inject/pod.
The admin port (plain HTTP, like the proxy's) serves /livez, /readyz and /metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from time import perf_counter

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from spendgate.operator.injector.metrics import InjectorMetrics
from spendgate.operator.injector.review import ReviewError, answer
from spendgate.operator.injector.settings import SidecarSettings

logger = logging.getLogger("spendgate.injector")

WEBHOOKS = {"/inject/namespace": True, "/inject/pod": False}  # path -> the namespace opted in
MAX_REVIEW_BYTES = 16 * 1024 * 1024  # far above any pod; the API server caps objects at 3 MiB


def webhook_app(settings: SidecarSettings, version: str, metrics: InjectorMetrics) -> web.Application:
    async def review(request: web.Request) -> web.Response:
        started = perf_counter()
        webhook = request.path.rsplit("/", 1)[-1]
        try:
            result = answer(await request.read(), settings, WEBHOOKS[request.path], version)
        except ReviewError as error:
            metrics.admissions.labels(webhook, "bad-review").inc()
            logger.warning("refused a request to %s: %s", request.path, error)
            return web.Response(status=400, text=f"{error}\n")
        response = web.json_response(result.review, dumps=json.dumps)
        metrics.admissions.labels(webhook, result.outcome).inc()
        metrics.latency.labels(webhook).observe(perf_counter() - started)
        return response

    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app.add_routes([web.post(path, review) for path in WEBHOOKS])
    return app


def admin_app(metrics: InjectorMetrics, not_ready: Callable[[], str | None]) -> web.Application:
    """`not_ready()` says why the injector cannot answer the API server yet, or None when it can."""

    async def livez(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reason = not_ready()
        return web.json_response({"ready": reason is None, **({"reason": reason} if reason else {})},
                                 status=503 if reason else 200)

    async def scrape(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.add_routes([web.get("/livez", livez), web.get("/readyz", readyz), web.get("/metrics", scrape)])
    return app
