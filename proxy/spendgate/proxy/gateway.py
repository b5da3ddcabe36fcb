"""The gateway: what Claude Code reaches through ANTHROPIC_BASE_URL. The hot path, top to bottom:

1. route         a provider's path (Anthropic /v1/, Bedrock, Vertex AI); the endpoint decides what is
                 parsed and priced
2. authenticate  the virtual key's SHA-256 -> developer and cost center, or 401
3. read body     bounded (413 past the limit), read once
4. attribute     the model, stream and metadata read from the JSON body (messages, count_tokens),
                 the conversation skipped, not built; tags from the headers
5. admit         Admission decides: forward, reroute to another model, or reject   <- enforcement
6. forward       to the provider's upstream, the client's credential swapped for the organisation's
7. relay         an event stream chunk by chunk as it arrives, scanned on the side for usage;
                 any other response of /v1/messages whole (it is small and carries the usage)
8. settle        price, ledger, metrics, spend sink; only then does the response complete

Plain ASGI on purpose: a framework's routing and request objects cost more than this whole path
(DESIGN.md section 4). Nothing here rewrites a byte the upstream sends; the request body (or, where
the path names the model, the path) is rewritten only when admission reroutes it to another model.
What differs between Anthropic, Amazon Bedrock and Google Vertex AI is in providers.py, bedrock.py
and vertex.py: routes, credentials, the stream's framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from time import perf_counter
from typing import Any, Final

import aiohttp
import msgspec
import orjson

from spendgate.logic.pricing import PriceBook
from spendgate.proxy.admission import Admission, AdmissionRequest, Endpoint, Reject, Reroute, with_model
from spendgate.proxy.asgi import RawHeaders, Receive, Scope, Send
from spendgate.proxy.attribution import TAG_HEADERS, attribute, credential, identify
from spendgate.proxy.bundles import ActiveBundle, BundleHolder
from spendgate.proxy.errors import ProxyError, error_body, new_request_id
from spendgate.proxy.exchange import (
    ESTIMATED,
    INTERNAL_ERROR,
    NO_USAGE,
    REROUTE_UNMAPPED,
    SCAN_FAILED,
    USAGE_UNREADABLE,
    Exchange,
    Outcome,
)
from spendgate.proxy.message import (
    HEAD_BYTES,
    TAIL_BYTES,
    WBITS,
    Inflater,
    content_encoding,
    error_type_of,
    read_head_and_tail,
    read_message,
    readable,
)
from spendgate.proxy.providers import Provider, Route
from spendgate.proxy.settle import Settler
from spendgate.proxy.sse import EventUsage
from spendgate.proxy.upstream import Upstream

logger = logging.getLogger("spendgate.proxy")

# Never forwarded upstream: hop-by-hop headers, the ones aiohttp sets itself, the client's credential.
REQUEST_DROPPED: Final = frozenset({
    b"host", b"content-length", b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade", b"expect", b"x-api-key",
    b"authorization",
})
# Never relayed to the client: hop-by-hop headers (the ASGI server frames the response itself).
RESPONSE_DROPPED: Final = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade",
})
OWN_HEADER_PREFIX: Final = b"x-spendgate-"  # our tags, for the ledger only; not the upstream's business
PARSED: Final = frozenset({Endpoint.MESSAGES, Endpoint.COUNT_TOKENS})
JSON_HEADERS: Final = [(b"content-type", b"application/json")]
END: Final = {"type": "http.response.body", "body": b"", "more_body": False}
# A body that stopped arriving: the connection's framing is lost. (A 413 keeps the connection: the
# client may still be sending, and closing under it would reset the answer away.)
BODY_LEFT_UNREAD: Final = frozenset({408})
CLIENT_CLOSED_REQUEST: Final = 499  # the ledger's status for a client that left before any answer


@dataclass(slots=True)
class Inbound:
    """The client's headers, read in one pass: what goes upstream, and what the proxy itself needs."""

    forward: list[tuple[str, str]] = field(default_factory=list)
    api_key: bytes | None = None
    authorization: bytes | None = None
    content_length: bytes | None = None
    tags: dict[bytes, bytes] = field(default_factory=dict)
    traceparent: bytes | None = None  # forwarded too: the client's trace goes on upstream unchanged
    tracestate: bytes | None = None


def read_headers(raw: Iterable[tuple[bytes, bytes]], identity_encoding: bool,
                 dropped: frozenset[bytes] = frozenset()) -> Inbound:
    """`dropped`: the provider's own credential headers (e.g. a client's SigV4 signature), never forwarded."""
    inbound = Inbound()
    listed: set[bytes] = set()  # headers the client's Connection header makes hop-by-hop
    for name, value in raw:
        if name in TAG_HEADERS:
            inbound.tags[name] = value
        elif name == b"traceparent":
            inbound.traceparent = value
        elif name == b"tracestate":
            inbound.tracestate = value
        if name in dropped:
            continue
        if name in REQUEST_DROPPED:
            if name == b"x-api-key":
                inbound.api_key = value
            elif name == b"authorization":
                inbound.authorization = value
            elif name == b"content-length":
                inbound.content_length = value
            elif name == b"connection":
                listed.update(token.strip().lower() for token in value.split(b","))
            continue
        if name.startswith(OWN_HEADER_PREFIX) or (identity_encoding and name == b"accept-encoding"):
            continue
        inbound.forward.append((name.decode("latin-1"), value.decode("latin-1")))
    if listed:
        inbound.forward = [(name, value) for name, value in inbound.forward if name.encode("latin-1") not in listed]
    if identity_encoding:  # the proxy reads usage from the body, so it must not arrive compressed
        inbound.forward.append(("accept-encoding", "identity"))
    return inbound


def declared_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ProxyError("invalid_request_error", "content-length is not a number") from None


@dataclass(frozen=True, slots=True)
class Leg:
    """Where an admitted request went: its provider, that provider's upstream, and its prices."""

    provider: Provider
    upstream: Upstream
    prices: PriceBook


class ClientGone(Exception):
    """The client disconnected before its request was read."""


async def read_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    if declared is not None and declared > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(limit: int) -> ProxyError:
    return ProxyError("request_too_large", f"request body is larger than the gateway's limit of {limit} bytes")


class RequestHead(msgspec.Struct):
    """What the gateway reads of a Messages request: three fields. The rest of the body (the
    conversation, often hundreds of KB) is checked to be JSON but never built into objects: that
    costs 175 us for a 400 KB turn where a full parse cost 295 us. Numbers in it are not bounded
    (JSON sets no bound; a full parse refused those beyond a double): the upstream judges them."""

    model: Any = None
    stream: Any = None
    metadata: Any = None


HEAD: Final = msgspec.json.Decoder(RequestHead)


def parse_head(body: bytes, model_in_body: bool = True) -> RequestHead:
    """The body's head; `model_in_body`: the body must name the model (the path does on Bedrock and Vertex)."""
    try:
        body.decode()  # the decoder does not check the UTF-8 of strings it skips (20 us for 400 KB)
        head = HEAD.decode(body)
    except (UnicodeDecodeError, msgspec.DecodeError):  # or a ValidationError: JSON, but not an object
        raise refusal(body) from None
    if model_in_body and (not isinstance(head.model, str) or not head.model):
        raise ProxyError("invalid_request_error", "model: a model id (string) is required")
    return head


def refusal(body: bytes) -> ProxyError:
    """Why a body the head decoder refused is refused, in orjson's words (line and column)."""
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as error:
        return ProxyError("invalid_request_error", f"request body is not valid JSON: {error}")
    return ProxyError("invalid_request_error", "request body must be a JSON object")


def user_id_of(head: RequestHead) -> Any:
    return head.metadata.get("user_id") if isinstance(head.metadata, dict) else None


def response_headers(raw: Iterable[tuple[bytes, bytes]], keep_length: bool) -> tuple[RawHeaders, bytes | None]:
    """The upstream's headers minus hop-by-hop ones, and its request-id if it sent one."""
    headers: RawHeaders = []
    request_id = None
    for name, value in raw:
        lowered = name.lower()
        if lowered in RESPONSE_DROPPED or (lowered == b"content-length" and not keep_length):
            continue
        if lowered == b"request-id":
            request_id = value
        headers.append((lowered, value))
    return headers, request_id


def content_type(response: aiohttp.ClientResponse) -> str:
    # The raw header, not response.content_type: that one parses the header's parameters every time.
    return str(response.headers.get("content-type", ""))


def encoded(headers: Iterable[tuple[str, str]]) -> RawHeaders:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


async def wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def abandon_upstream(response: aiohttp.ClientResponse, watcher: asyncio.Future[None]) -> None:
    """The client left mid-response: stop the upstream too (its pending read fails at once)."""
    if not watcher.cancelled():
        response.close()


class Gateway:
    def __init__(self, bundles: BundleHolder, providers: Sequence[Provider], admission: Admission, settler: Settler,
                 max_body_bytes: int, max_passthrough_body_bytes: int, max_buffered_response_bytes: int,
                 body_timeout: float) -> None:
        """`providers` in the order their paths are tried (Anthropic's /v1/ catch-all last)."""
        self._bundles = bundles
        self._providers = providers
        self._admission = admission
        self._settler = settler
        self._price_ids = {provider.name: provider.prices for provider in providers}
        self._limits = {endpoint: max_body_bytes if endpoint in PARSED else max_passthrough_body_bytes
                        for endpoint in Endpoint}
        self._max_buffered = max_buffered_response_bytes
        self._body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        exchange = Exchange(received_at=datetime.now(UTC), started=perf_counter(), method=scope["method"],
                            path=scope["path"])
        active = self._bundles.current
        exchange.bundle_version = active.version
        try:
            await self._handle(scope, receive, send, exchange, active)
        except ProxyError as error:
            await self._refuse(send, exchange, active, error)
        except ClientGone:
            exchange.status, exchange.outcome = CLIENT_CLOSED_REQUEST, Outcome.CLIENT_DISCONNECTED
            self._settler.settle(exchange, self._prices(exchange, active))
        except Exception:  # a bug: still an Anthropic-shaped answer, one ledger line, a clean end
            logger.exception("internal error on %s %s (%s)", exchange.method, exchange.path, exchange.id)
            exchange.flags.add(INTERNAL_ERROR)
            if exchange.first_byte is None:
                await self._refuse(send, exchange, active, ProxyError("api_error", "internal gateway error", 500))
            else:
                self._settler.settle(exchange, self._prices(exchange, active))  # once: a no-op if it had settled
                await self._end(send)

    @staticmethod
    async def _end(send: Send) -> None:
        """End a response that had started; the client may be gone already."""
        with contextlib.suppress(Exception):
            await send(END)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, exchange: Exchange,
                      active: ActiveBundle) -> None:
        provider, route = self._route(exchange.method, scope["raw_path"])  # 1. route
        endpoint = exchange.endpoint = route.endpoint
        exchange.provider = provider.name
        inbound = read_headers(scope["headers"], identity_encoding=endpoint is Endpoint.MESSAGES,
                               dropped=provider.dropped)
        exchange.traceparent, exchange.tracestate = inbound.traceparent, inbound.tracestate
        # 2. authenticate
        key = credential(inbound.api_key, inbound.authorization)
        identity = exchange.identity = identify(key, active.owners, active.keys, exchange.received_at)
        upstream = provider.serving()
        # 3. read the body; 4. attribute
        body = await self._read_body(receive, declared_length(inbound.content_length), self._limits[endpoint])
        exchange.request_bytes = len(body)
        head = parse_head(body, model_in_body=route.model is None) if endpoint in PARSED else None
        exchange.attribution = attribute(identity, inbound.tags, user_id_of(head) if head else None)
        if head is not None:
            exchange.requested_model = route.model or head.model
            exchange.model_in_path = route.model is not None
            exchange.stream = route.stream if route.stream is not None else head.stream is True

        # 5. admit: the enforcement seam
        prices = self._prices(exchange, active)
        decision = self._admission.admit(AdmissionRequest(
            endpoint=endpoint, attribution=exchange.attribution, model=exchange.requested_model,
            stream=exchange.stream, body_bytes=len(body), bundle=active.signed, prices=prices,
            now=exchange.received_at))
        exchange.decision = decision
        if isinstance(decision, Reject):
            raise ProxyError(decision.error_type, decision.message, decision.status)
        exchange.admitted = True
        target = scope["raw_path"].decode("latin-1")
        if isinstance(decision, Reroute) and head is not None:
            if route.model is None:
                body = with_model(orjson.loads(body), decision.model)
                exchange.forwarded_model = decision.model
            else:
                target = self._reroute_path(provider, route, target, decision.model, exchange, prices)

        # 6. forward (journaled as started first); 7. relay and 8. settle, both in the relay
        if endpoint is Endpoint.MESSAGES:
            self._settler.begin(exchange)
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        exchange.upstream_sent = perf_counter()
        response = await upstream.open(exchange.method, target, inbound.forward, body)
        del body  # a 400 KB turn need not stay in memory for the minutes its answer streams
        leg = Leg(provider, upstream, prices)
        try:
            scanner = provider.scanner(content_type(response)) if endpoint is Endpoint.MESSAGES else None
            if endpoint is Endpoint.MESSAGES and scanner is None:
                await self._relay_whole(send, response, exchange, leg)
            else:
                await self._relay_stream(receive, send, response, exchange, leg, scanner)
        finally:
            response.release()

    def _route(self, method: str, raw_path: bytes) -> tuple[Provider, Route]:
        for provider in self._providers:
            route = provider.route(method, raw_path)
            if route is not None:
                return provider, route
        path = raw_path.decode("latin-1")
        raise ProxyError("not_found_error", f"{path} is not served: the gateway serves the Anthropic API's /v1/, "
                                            "Amazon Bedrock's /model/ and Vertex AI's /v1/projects/ paths")

    def _prices(self, exchange: Exchange, active: ActiveBundle) -> PriceBook:
        return active.prices.for_provider(self._price_ids[exchange.provider])

    @staticmethod
    def _reroute_path(provider: Provider, route: Route, target: str, model: str, exchange: Exchange,
                      prices: PriceBook) -> str:
        """Bedrock and Vertex name the model in the path: a reroute goes there, as that provider's id."""
        assert route.model is not None
        mapped = provider.model_for(model, route.model, prices, exchange.received_at.date())
        if mapped is None:  # no id of the cascade model that this provider is known to serve: as asked
            exchange.flags.add(REROUTE_UNMAPPED)
            return target
        exchange.forwarded_model = mapped
        return provider.target(target, route, mapped)

    async def _read_body(self, receive: Receive, declared: int | None, limit: int) -> bytes:
        try:
            async with asyncio.timeout(self._body_timeout):
                return await read_body(receive, declared, limit)
        except TimeoutError:
            raise ProxyError("timeout_error", f"the request body did not arrive within {self._body_timeout:g} s "
                                              "(--client-body-timeout)", 408) from None

    async def _relay_whole(self, send: Send, response: aiohttp.ClientResponse, exchange: Exchange,
                           leg: Leg) -> None:
        """A non-streaming Message (or an error): read it, read its usage, settle, answer. One larger
        than the buffer limit is streamed through as it arrives, its usage read from its tail."""
        exchange.status = response.status
        kept: list[bytes] = []
        size = 0
        chunks = response.content.iter_any()
        try:
            async for chunk in chunks:
                kept.append(chunk)
                size += len(chunk)
                if size > self._max_buffered:
                    await self._relay_large(send, response, exchange, leg, b"".join(kept), chunks)
                    return
        except TimeoutError:
            raise leg.upstream.timed_out() from None
        except aiohttp.ClientError as error:
            raise leg.upstream.broke_off(error) from None
        exchange.upstream_done = perf_counter()
        body = b"".join(kept)
        self._read_answer(exchange, readable(body, content_encoding(response.headers)))
        await self._start(send, exchange, response, keep_length=True)
        self._settler.settle(exchange, leg.prices)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    @staticmethod
    def _read_answer(exchange: Exchange, body: bytes | None) -> None:
        if body is None:
            exchange.flags.add(USAGE_UNREADABLE)
        elif exchange.status == 200:
            read_message(exchange, body)
        if exchange.status != 200:
            exchange.outcome = Outcome.UPSTREAM_ERROR
            exchange.error_type = error_type_of(body) if body is not None else None

    async def _relay_large(self, send: Send, response: aiohttp.ClientResponse, exchange: Exchange,
                           leg: Leg, first: bytes, rest: Any) -> None:
        """Past the buffer limit: relay as it arrives, keeping only the head and the tail, and the
        last chunk back until the answer is settled."""
        exchange.upstream_done = perf_counter()
        await self._start(send, exchange, response, keep_length=True)
        head, tail, held = first[:HEAD_BYTES], first[-TAIL_BYTES:], first
        try:
            async for chunk in rest:
                await send({"type": "http.response.body", "body": held, "more_body": True})
                held, tail = chunk, (tail + chunk)[-TAIL_BYTES:]
        except TimeoutError:
            exchange.outcome, exchange.error_type = Outcome.UPSTREAM_FAILED, leg.upstream.timed_out().error_type
        except aiohttp.ClientError as error:
            exchange.outcome, exchange.error_type = Outcome.UPSTREAM_FAILED, leg.upstream.broke_off(error).error_type
        if content_encoding(response.headers) not in ("", "identity"):
            exchange.flags.add(USAGE_UNREADABLE)
        elif exchange.status == 200:
            read_head_and_tail(exchange, head, tail)
        else:
            exchange.outcome = Outcome.UPSTREAM_ERROR
        if exchange.status == 200 and exchange.usage is None and USAGE_UNREADABLE not in exchange.flags:
            exchange.flags.add(USAGE_UNREADABLE)
        self._settler.settle(exchange, leg.prices)
        await send({"type": "http.response.body", "body": held, "more_body": False})

    async def _relay_stream(self, receive: Receive, send: Send, response: aiohttp.ClientResponse,
                            exchange: Exchange, leg: Leg, scanner: EventUsage | None) -> None:
        """Relay chunk by chunk as they arrive; the event stream of a Message is also scanned for usage."""
        exchange.upstream_done = perf_counter()
        exchange.status = response.status
        if response.status >= 400:
            exchange.outcome = Outcome.UPSTREAM_ERROR
        inflater = self._inflater(exchange, response) if scanner is not None else None
        await self._start(send, exchange, response, keep_length=scanner is None)
        watcher = asyncio.ensure_future(wait_for_disconnect(receive))
        watcher.add_done_callback(partial(abandon_upstream, response))
        failure: ProxyError | None = None
        scanning = scanner is not None
        try:
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if scanning:
                    assert scanner is not None
                    scanning = self._scan(exchange, scanner, inflater.feed(chunk) if inflater else chunk)
        except TimeoutError:
            failure = leg.upstream.timed_out()
        except aiohttp.ClientError as error:
            failure = leg.upstream.broke_off(error)
        client_left = watcher.done()
        watcher.cancel()
        if client_left:
            exchange.outcome = Outcome.CLIENT_DISCONNECTED
        elif failure is not None:
            exchange.outcome, exchange.error_type = Outcome.UPSTREAM_FAILED, failure.error_type
            if scanner is not None:
                await send({"type": "http.response.body", "more_body": True,
                            "body": scanner.failure_bytes(failure.error_type, failure.message)})
        if scanner is not None:
            self._take_usage(exchange, scanner)
        self._settler.settle(exchange, leg.prices)
        await send(END)

    @staticmethod
    def _inflater(exchange: Exchange, response: aiohttp.ClientResponse) -> Inflater | None:
        encoding = content_encoding(response.headers)
        if encoding in ("", "identity"):
            return None
        if encoding in WBITS:
            return Inflater(encoding)
        exchange.flags.add(USAGE_UNREADABLE)
        return None

    @staticmethod
    def _scan(exchange: Exchange, scanner: EventUsage, data: bytes) -> bool:
        """Feed the side scanner; False once it broke: the stream goes on unscanned (flagged, logged),
        and is billed on the usage read so far."""
        try:
            scanner.feed(data)
        except Exception:
            logger.exception("the stream scanner failed on %s; relaying the rest unscanned", exchange.id)
            exchange.flags.add(SCAN_FAILED)
            return False
        return True

    @staticmethod
    def _take_usage(exchange: Exchange, scanner: EventUsage) -> None:
        usage, estimated = scanner.billable_usage()
        exchange.usage = usage
        exchange.served_model = scanner.model
        exchange.refused_before_output = scanner.refused_before_output
        if scanner.error_type is not None and exchange.outcome is Outcome.OK:
            exchange.outcome, exchange.error_type = Outcome.UPSTREAM_ERROR, scanner.error_type
        if usage is None:
            exchange.flags.add(NO_USAGE)
        elif estimated:
            exchange.flags.add(ESTIMATED)

    async def _start(self, send: Send, exchange: Exchange, response: aiohttp.ClientResponse,
                     keep_length: bool) -> None:
        headers, request_id = response_headers(response.raw_headers, keep_length)
        if request_id is None:
            exchange.request_id = new_request_id()
            headers.append((b"request-id", exchange.request_id.encode()))
        else:
            exchange.request_id = request_id.decode("latin-1")
        if exchange.decision.headers:
            headers.extend(encoded(exchange.decision.headers))
        exchange.first_byte = perf_counter()
        await send({"type": "http.response.start", "status": response.status, "headers": headers})

    async def _refuse(self, send: Send, exchange: Exchange, active: ActiveBundle, error: ProxyError) -> None:
        """Answer with the proxy's own Anthropic-shaped error; settle it like any other request."""
        exchange.request_id = exchange.request_id or new_request_id()
        exchange.status, exchange.error_type = error.status, error.error_type
        if isinstance(exchange.decision, Reject):
            exchange.outcome = Outcome.REJECTED
        elif exchange.upstream_sent is not None:
            exchange.outcome = Outcome.UPSTREAM_FAILED
        else:
            exchange.outcome = Outcome.PROXY_ERROR
        headers = [*JSON_HEADERS, (b"request-id", exchange.request_id.encode()), *encoded(exchange.decision.headers)]
        if error.status in BODY_LEFT_UNREAD:
            headers.append((b"connection", b"close"))
        exchange.first_byte = perf_counter()
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        self._settler.settle(exchange, self._prices(exchange, active))
        await send({"type": "http.response.body", "body": error_body(error.error_type, error.message,
                                                                       exchange.request_id), "more_body": False})

