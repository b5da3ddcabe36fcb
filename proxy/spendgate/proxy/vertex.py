"""Claude on Google Vertex AI (rawPredict): its routes and its Google credentials.

Claude Code with `CLAUDE_CODE_USE_VERTEX=1` and `ANTHROPIC_VERTEX_BASE_URL` pointing at the gateway
(and the anthropic SDK's `AnthropicVertex(base_url=...)`) sends

    POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:rawPredict
    POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:streamRawPredict
    POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/count-tokens:rawPredict

with the Messages body minus `model`, plus `anthropic_version` (`stream: true` on the streaming one).
The answers are the Messages API's own: a Message, or its SSE events. The gateway forwards path and
body as received with the organisation's Google access token (gcp.py).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Final

from spendgate.logic.pricing import PriceBook
from spendgate.proxy.admission import Endpoint
from spendgate.proxy.errors import ProxyError
from spendgate.proxy.providers import SSE, Provider, Route, known
from spendgate.proxy.sse import EventUsage, StreamScanner

PREFIX: Final = b"/v1/projects/"
PATH: Final = re.compile(rb"/v1/projects/[a-z0-9-]+/locations/[a-z0-9-]+/publishers/anthropic/models/"
                         rb"([A-Za-z0-9._@-]+):(rawPredict|streamRawPredict)")
COUNT_TOKENS: Final = b"count-tokens"


class Vertex(Provider):
    name = "gcp.vertex_ai"
    prices = "google"
    flag = "--vertex-upstream"
    # The client's own Google headers: its quota project is not the organisation's.
    dropped = frozenset({b"x-goog-user-project"})

    @property
    def title(self) -> str:
        return "Google Vertex AI"

    def route(self, method: str, raw_path: bytes) -> Route | None:
        if not raw_path.startswith(PREFIX):
            return None
        found = PATH.fullmatch(raw_path)
        if found is None or method.upper() != "POST":
            raise ProxyError("not_found_error", "the gateway serves POST .../publishers/anthropic/models/"
                                                "{model}:rawPredict and :streamRawPredict of Vertex AI")
        model, operation = found.groups()
        if model == COUNT_TOKENS:
            return Route(Endpoint.COUNT_TOKENS, None, False)
        return Route(Endpoint.MESSAGES, model.decode("ascii"), operation == b"streamRawPredict")

    def target(self, raw_path: str, route: Route, model: str) -> str:
        head, _, tail = raw_path.rpartition("/")
        return f"{head}/{model}:{tail.rsplit(':', 1)[1]}"

    def scanner(self, content_type: str) -> EventUsage | None:
        return StreamScanner() if content_type.startswith(SSE) else None

    def model_for(self, target: str, requested: str, prices: PriceBook, day: date) -> str | None:
        """The cascade model's own id (Vertex names Claude models as Anthropic does, with an optional
        `@date`), if Vertex's prices know it."""
        return target if known(prices, target, day) else None
