"""The three front doors to Claude the gateway serves, each a small named piece of the same path.

A Provider knows, for its wire format: which requests are its own and what they are (`route`: the
endpoint, and the model and streaming when the path says them), which of the client's headers are
the client's own credentials for that cloud (dropped), where the model goes when admission
reroutes a request, how its event stream is read for usage (`scanner`), and which upstream, with
which of the organisation's credentials, serves it. Everything else (the virtual key, attribution,
admission, settle) is the gateway's, the same for all three: one budget covers spend through any.

- Anthropic: the Messages API under /v1/ (docs/proxy.md, "The request path").
- Amazon Bedrock (bedrock.py): POST /model/{model}/invoke and /invoke-with-response-stream.
- Google Vertex AI (vertex.py): POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{model}:rawPredict
  and :streamRawPredict.

A provider the gateway was not started with still claims its paths, and answers 404 naming the flag
that enables it (rather than letting /v1/projects/... reach the Anthropic API as a passthrough).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date
from typing import Final

from spendgate.logic.pricing import PriceBook, PriceSource
from spendgate.proxy.admission import Endpoint
from spendgate.proxy.errors import ProxyError
from spendgate.proxy.sse import EventUsage, StreamScanner
from spendgate.proxy.upstream import Upstream

SSE: Final = "text/event-stream"


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: Endpoint
    model: str | None = None  # the model the path names (Bedrock, Vertex); None: the body's `model`
    stream: bool | None = None  # streaming as the path says (Bedrock); None: the body's `stream`


class Provider(ABC):
    name: str  # gen_ai.provider.name
    prices: str  # the genai-prices provider whose ids and prices apply
    flag: str  # the flag that enables it
    dropped: frozenset[bytes] = frozenset()  # the client's own credentials for this cloud: never forwarded

    def __init__(self, upstream: Upstream | None) -> None:
        self.upstream = upstream  # None: not enabled on this gateway

    @abstractmethod
    def route(self, method: str, raw_path: bytes) -> Route | None:
        """The route if the path is this provider's, else None; a malformed one of its paths is a ProxyError."""

    @abstractmethod
    def target(self, raw_path: str, route: Route, model: str) -> str:
        """The upstream path with `model` in place of the one the client asked for."""

    @abstractmethod
    def scanner(self, content_type: str) -> EventUsage | None:
        """A usage scanner for a streamed answer of this content type; None for other content."""

    def serving(self) -> Upstream:
        if self.upstream is None:
            raise ProxyError("not_found_error", f"{self.title} is not enabled on this gateway (start it with "
                                                f"{self.flag})")
        return self.upstream

    @property
    def title(self) -> str:
        return type(self).__name__

    def model_for(self, target: str, requested: str, prices: PriceBook, day: date) -> str | None:
        """This provider's id for a cascade model (an Anthropic id), when admission reroutes a request that
        asked for `requested`; None when no id this provider's prices know can be formed (the request then
        goes as asked: a wrong id would fail the developer's turn)."""
        return target


class Anthropic(Provider):
    name = "anthropic"
    prices = "anthropic"
    flag = "--upstream and ANTHROPIC_API_KEY (or --upstream-key-file)"

    @property
    def title(self) -> str:
        return "The Anthropic API"

    def route(self, method: str, raw_path: bytes) -> Route | None:
        check_normalised(raw_path)
        endpoint = endpoint_for(method, raw_path.decode("latin-1"))
        return Route(endpoint) if endpoint is not None else None

    def target(self, raw_path: str, route: Route, model: str) -> str:
        return raw_path

    def scanner(self, content_type: str) -> EventUsage | None:
        return StreamScanner() if content_type.startswith(SSE) else None


def endpoint_for(method: str, path: str) -> Endpoint | None:
    """Routing on the path alone (Claude Code adds `?beta=true`); None outside /v1/.

    Case and a trailing slash do not matter here, whatever the upstream makes of them: a spelling
    the upstream might route to its Messages endpoint is priced as one."""
    method, path = method.upper(), path.lower().rstrip("/")
    if path == "/v1/messages" and method == "POST":
        return Endpoint.MESSAGES
    if path == "/v1/messages/count_tokens" and method == "POST":
        return Endpoint.COUNT_TOKENS
    if method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
        return Endpoint.MODELS
    return Endpoint.PASSTHROUGH if path.startswith("/v1/") else None


# What a normalised request path never holds: percent-encoding (no API path needs it; %2e%2e and
# %2f would hide dot segments and slashes), empty or dot segments, backslashes, parameters.
UNNORMALISED = re.compile(rb"%|//|\\|;|(^|/)\.\.?(/|$)")


def check_normalised(raw_path: bytes) -> None:
    """Refuse a path an upstream could normalise into another endpoint (/v1/models/../messages)."""
    if UNNORMALISED.search(raw_path):
        raise ProxyError("invalid_request_error", "the request path must be normalised: no percent-encoding, "
                         "dot segments, empty segments, backslashes or parameters")


def known(prices: PriceBook, model: str, day: date) -> bool:
    """Whether the provider's prices know `model` (not priced by the bundle's fallback)."""
    return prices.rates(model, day).source is not PriceSource.FALLBACK
