"""A local upstream that speaks the Anthropic wire format, for tests and demos.

It answers `POST /v1/messages` (a Message, or its SSE event stream when the body asks for
`"stream": true`), `POST /v1/messages/count_tokens`, `GET /v1/models[/id]`, and echoes any other
path. One scenario definition (content blocks + usage) gives both shapes, built the way the API
builds them: text in `text_delta`s, tool input in `input_json_delta`s, thinking in
`thinking_delta`s then a `signature_delta`, server tool results as a start/stop pair, usage in
`message_start` and the cumulative `message_delta`.

What each request gets, first match wins: a reply queued with `enqueue()`; the named scenario in
the `x-mock-scenario` header (see SCENARIOS); the default (`text`). `x-mock-delay-ms` sets a delay
before each chunk. Replies can also fail on purpose: an error status, a mid-stream `error` event,
a connection reset or a hang after N events, a hang before any answer, or chunks re-split at an
arbitrary size (mid-line, mid-UTF-8). Every request is recorded with its headers and body.

    python -m spendgate.testing.upstream --port 18080
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import itertools
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from aiohttp import web

from spendgate.testing.clouds import (
    BEDROCK_PATH,
    VERTEX_PATH,
    AwsAccount,
    GoogleIssuer,
    bedrock_chunk,
    bedrock_forbidden,
    sigv4_problem,
    vertex_unauthenticated,
    with_invocation_metrics,
)

DEFAULT_MODEL = "claude-opus-5-5"
PIECE = 12  # characters per delta when text or JSON is streamed


class Failure(StrEnum):
    RESET = "reset"  # abort the connection after `fail_after` events
    HANG = "hang"  # stop sending (but keep the connection) after `fail_after` events
    HANG_BEFORE_HEADERS = "hang_before_headers"  # never answer at all


@dataclass(frozen=True)
class Scenario:
    """One assistant turn: its content blocks (as in a non-streaming Message) and its usage."""

    content: tuple[dict[str, Any], ...]
    usage: dict[str, Any]  # the final usage, as the non-streaming Message carries it
    stop_reason: str = "end_turn"
    start_usage: dict[str, Any] | None = None  # message_start's usage; default: final usage, 1 output token
    delta_usage: dict[str, Any] | None = None  # message_delta's; default: the final output_tokens only
    error_after: int | None = None  # end the stream with an overloaded `error` event after this many events


@dataclass(frozen=True)
class Reply:
    """How to answer one request."""

    scenario: Scenario | None = None
    status: int = 200
    body: bytes | None = None  # a raw body, sent as is (any status), instead of the scenario's
    content_type: str = "application/json"  # of a raw body
    headers: tuple[tuple[str, str], ...] = ()
    chunk_delay: float = 0.0
    chunk_size: int | None = None  # re-split the stream into pieces of this many bytes
    fail: Failure | None = None
    fail_after: int = 0
    gate: asyncio.Event | None = None  # hold the stream after `fail_after` events until this is set
    delay: float = 0.0  # seconds before answering at all (headers included)


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    sent: bytearray = field(default_factory=bytearray)  # the response body bytes, as written so far

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    def header_names(self) -> set[str]:
        return {key.lower() for key, _ in self.headers}

    def json(self) -> Any:
        return json.loads(self.body)


def _usage(input_tokens: int, output_tokens: int, cache_5m: int = 0, cache_1h: int = 0, cache_read: int = 0
           ) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_5m + cache_1h,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": cache_5m, "ephemeral_1h_input_tokens": cache_1h},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


TEXT = Scenario(content=({"type": "text", "text": "Done. The tests pass, and the lint is clean."},),
                usage=_usage(42, 15, cache_5m=100, cache_read=2000))
TOOL_USE = Scenario(
    content=({"type": "text", "text": "Okay, let me check the weather for San Francisco, CA:"},
             {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
              "input": {"location": "San Francisco, CA", "unit": "fahrenheit"}}),
    usage=_usage(472, 89), stop_reason="tool_use")
THINKING = Scenario(
    content=({"type": "thinking", "thinking": "The user wants a haiku. Five, seven, five syllables.",
              "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
             {"type": "text", "text": "Autumn moonlight / a worm digs silently / into the chestnut."}),
    usage=_usage(80, 120))
CACHE = Scenario(content=({"type": "text", "text": "Cached context reused."},),
                 usage=_usage(50, 30, cache_5m=1500, cache_1h=2500, cache_read=120000))
WEB_SEARCH = Scenario(
    content=({"type": "server_tool_use", "id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB", "name": "web_search",
              "input": {"query": "weather NYC today"}},
             {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_014hJH82Qum7Td6UV8gDXThB",
              "content": [{"type": "web_search_result", "title": "Weather", "url": "https://example.com/nyc",
                           "encrypted_content": "Ev0DCioIAhgC", "page_age": None}]},
             {"type": "text", "text": "It is sunny in New York today."}),
    usage={**_usage(10682, 510), "server_tool_use": {"web_search_requests": 1}},
    start_usage=_usage(2679, 3),
    delta_usage={"input_tokens": 10682, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                 "output_tokens": 510, "server_tool_use": {"web_search_requests": 1}})
# Non-ASCII text, re-split every 3 bytes: chunk boundaries fall mid-line and mid-UTF-8 character.
UTF8 = Scenario(content=({"type": "text", "text": "Grüße aus Köln — 東京からこんにちは 🚀 ✓"},), usage=_usage(30, 25))
MID_STREAM_ERROR = replace(TEXT, error_after=5)
REFUSAL = Scenario(content=(), usage=_usage(120, 0), stop_reason="refusal")


def error_json(error_type: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message},
                       "request_id": "req_mock_error"}).encode()


SCENARIOS: dict[str, Reply] = {
    "text": Reply(TEXT),
    "tool_use": Reply(TOOL_USE),
    "thinking": Reply(THINKING),
    "cache": Reply(CACHE),
    "web_search": Reply(WEB_SEARCH),
    "utf8_split": Reply(UTF8, chunk_size=3),
    "refusal": Reply(REFUSAL),
    "mid_stream_error": Reply(MID_STREAM_ERROR),
    "overloaded": Reply(status=529, body=error_json("overloaded_error", "Overloaded")),
    "rate_limited": Reply(status=429, body=error_json("rate_limit_error", "Number of requests has exceeded your "
                                                      "per-minute rate limit"), headers=(("retry-after", "17"),)),
    "bad_request": Reply(status=400, body=error_json("invalid_request_error", "messages: Field required")),
    "server_error": Reply(status=500, body=error_json("api_error", "Internal server error")),
    "reset": Reply(TEXT, fail=Failure.RESET, fail_after=4),
    "hang": Reply(TEXT, fail=Failure.HANG_BEFORE_HEADERS),
    "hang_mid_stream": Reply(TEXT, fail=Failure.HANG, fail_after=4),
}


def _pieces(text: str) -> Iterator[str]:
    for start in range(0, len(text), PIECE):
        yield text[start:start + PIECE]


def _block_events(index: int, block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The start / delta... / stop events that stream one content block."""
    kind = block["type"]
    if kind == "text":
        yield {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
        for piece in _pieces(block["text"]):
            yield {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
    elif kind in ("tool_use", "server_tool_use"):
        yield {"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}}
        for piece in ["", *_pieces(json.dumps(block["input"]))]:
            yield {"type": "content_block_delta", "index": index,
                   "delta": {"type": "input_json_delta", "partial_json": piece}}
    elif kind == "thinking":
        yield {"type": "content_block_start", "index": index,
               "content_block": {"type": "thinking", "thinking": "", "signature": ""}}
        for piece in _pieces(block["thinking"]):
            yield {"type": "content_block_delta", "index": index,
                   "delta": {"type": "thinking_delta", "thinking": piece}}
        yield {"type": "content_block_delta", "index": index,
               "delta": {"type": "signature_delta", "signature": block["signature"]}}
    else:  # server tool results and other whole blocks arrive in their start event
        yield {"type": "content_block_start", "index": index, "content_block": block}
    yield {"type": "content_block_stop", "index": index}


def stream_events(scenario: Scenario, model: str, message_id: str) -> list[dict[str, Any]]:
    start_usage = scenario.start_usage or {**scenario.usage, "output_tokens": 1}
    message: dict[str, Any] = {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": message}]
    for index, block in enumerate(scenario.content):
        events.extend(_block_events(index, block))
        if index == 0:
            events.append({"type": "ping"})
    delta_usage = scenario.delta_usage or {"output_tokens": scenario.usage["output_tokens"]}
    events.append({"type": "message_delta", "delta": {"stop_reason": scenario.stop_reason, "stop_sequence": None},
                   "usage": delta_usage})
    events.append({"type": "message_stop"})
    if scenario.error_after is not None:
        events = [*events[:scenario.error_after],
                  {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    return events


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()


def message_json(scenario: Scenario, model: str, message_id: str) -> bytes:
    return json.dumps({"id": message_id, "type": "message", "role": "assistant", "model": model,
                       "content": list(scenario.content), "stop_reason": scenario.stop_reason,
                       "stop_sequence": None, "usage": scenario.usage}).encode()


MODELS = [{"id": model, "type": "model", "display_name": model.replace("-", " ").title(),
           "created_at": "2026-10-01T00:00:00Z"} for model in ("claude-opus-5-5", "claude-sonnet-5-5",
                                                                 "claude-haiku-5-5")]


@dataclass
class MockUpstream:
    requests: list[Received] = field(default_factory=list)
    default: Reply = field(default_factory=lambda: SCENARIOS["text"])
    _queue: deque[Reply] = field(default_factory=deque)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    port: int = 0
    # The clouds' front doors (clouds.py): answered only when their credentials are given to check.
    aws: AwsAccount | None = None
    google: GoogleIssuer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def enqueue(self, *replies: Reply) -> None:
        self._queue.extend(replies)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a hung reply ends when the proxy hangs up on it.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if self.google is not None:
            self.google.token_uri = f"{self.url}/token"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        received = Received(request.method, request.path, request.query_string, list(request.headers.items()), body)
        self.requests.append(received)
        request_id = f"req_mock_{next(self._ids):06d}"
        headers = {"request-id": request_id, "anthropic-organization-id": "org-mock",
                   "anthropic-ratelimit-requests-limit": "4000", "anthropic-ratelimit-requests-remaining": "3999",
                   "anthropic-ratelimit-requests-reset": "2026-11-24T00:00:01Z"}
        if self.google is not None and request.path == "/token" and request.method == "POST":
            status, answer = self.google.grant(body)
            return web.json_response(answer, status=status)
        bedrock = BEDROCK_PATH.fullmatch(request.path)
        if bedrock is not None and self.aws is not None:
            return await self._bedrock(request, received, bedrock["model"], bedrock["operation"])
        vertex = VERTEX_PATH.fullmatch(request.path)
        if vertex is not None and self.google is not None:
            return await self._vertex(request, received, vertex["model"], vertex["operation"], headers)
        if request.path == "/v1/messages" and request.method == "POST":
            return await self._messages(request, received, headers)
        if request.path == "/v1/messages/count_tokens":
            return web.json_response({"input_tokens": max(1, len(body) // 4)}, headers=headers)
        if request.path == "/v1/models":
            return web.json_response({"data": MODELS, "has_more": False, "first_id": MODELS[0]["id"],
                                      "last_id": MODELS[-1]["id"]}, headers=headers)
        if request.path.startswith("/v1/models/"):
            return web.json_response(MODELS[0] | {"id": request.path.rsplit("/", 1)[1]}, headers=headers)
        echo = json.dumps({"method": request.method, "path": request.path, "query": request.query_string}).encode()
        if request.headers.get("x-mock-gzip"):  # a compressed answer the proxy must pass through untouched
            return web.Response(body=gzip.compress(echo), headers={**headers, "content-encoding": "gzip",
                                                                   "content-type": "application/json"})
        return web.Response(body=echo, content_type="application/json", headers=headers)

    async def _bedrock(self, request: web.Request, received: Received, model: str, operation: str
                       ) -> web.StreamResponse:
        assert self.aws is not None
        lowered = {name.lower(): value for name, value in request.headers.items()}
        problem = sigv4_problem(self.aws, request.method, request.host, request.raw_path, lowered, received.body)
        headers = {"x-amzn-requestid": f"mock-{next(self._ids):06d}"}
        if problem is not None:
            return web.Response(status=403, body=bedrock_forbidden(problem), content_type="application/json",
                                headers={**headers, "x-amzn-errortype": "InvalidSignatureException"})
        if operation == "count-tokens":
            return web.json_response({"inputTokens": max(1, len(received.body) // 4)}, headers=headers)
        reply = self._reply_for(request)
        if reply.status != 200 or reply.scenario is None:
            return web.Response(status=reply.status, body=reply.body or b"", headers=headers,
                                content_type=reply.content_type)
        message_id = "msg_bdrk_" + hashlib.sha256(received.body).hexdigest()[:24]
        if operation == "invoke":
            return web.Response(body=message_json(reply.scenario, model, message_id), headers=headers,
                                content_type="application/json")
        events = [with_invocation_metrics(event, reply.scenario.usage)
                  for event in stream_events(reply.scenario, model, message_id)]
        response = web.StreamResponse(headers={**headers, "content-type": "application/vnd.amazon.eventstream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        frames = [bedrock_chunk(event) for event in events]
        data = b"".join(frames)
        chunks = frames if reply.chunk_size is None else [data[at:at + reply.chunk_size]
                                                         for at in range(0, len(data), reply.chunk_size)]
        for sent, chunk in enumerate(chunks):
            if sent == reply.fail_after and reply.fail is not None:
                await _fail(request, reply.fail)
                return response
            await response.write(chunk)
            received.sent += chunk
        await response.write_eof()
        return response

    async def _vertex(self, request: web.Request, received: Received, model: str, operation: str,
                      headers: dict[str, str]) -> web.StreamResponse:
        assert self.google is not None
        problem = self.google.problem(request.headers.get("authorization", ""))
        if problem is not None:
            return web.Response(status=401, body=vertex_unauthenticated(problem), content_type="application/json")
        if model == "count-tokens":
            return web.json_response({"input_tokens": max(1, len(received.body) // 4)}, headers=headers)
        reply = self._reply_for(request)
        if reply.status != 200 or reply.scenario is None:
            return web.Response(status=reply.status, body=reply.body or b"", headers=headers,
                                content_type=reply.content_type)
        message_id = "msg_vrtx_" + hashlib.sha256(received.body).hexdigest()[:24]
        if operation == "streamRawPredict":
            return await self._stream(request, received, reply, stream_events(reply.scenario, model, message_id),
                                      headers)
        return web.Response(body=message_json(reply.scenario, model, message_id), headers=headers,
                            content_type="application/json")

    def _reply_for(self, request: web.Request) -> Reply:
        reply = self._queue.popleft() if self._queue else SCENARIOS.get(
            request.headers.get("x-mock-scenario", ""), self.default)
        delay = request.headers.get("x-mock-delay-ms")
        return replace(reply, chunk_delay=int(delay) / 1000) if delay else reply

    async def _messages(self, request: web.Request, received: Received, headers: dict[str, str]
                        ) -> web.StreamResponse:
        reply = self._reply_for(request)
        if reply.fail is Failure.HANG_BEFORE_HEADERS:
            await asyncio.Event().wait()
        await asyncio.sleep(reply.delay)
        headers.update(reply.headers)
        if reply.status != 200 or reply.scenario is None:
            received.sent += reply.body or b""
            return web.Response(status=reply.status, body=reply.body or b"", headers=headers,
                                content_type=reply.content_type)
        parsed = received.json() if received.body else {}
        model = parsed.get("model") or DEFAULT_MODEL
        # The same request gets the same message id, so a reply through a proxy can be compared with a direct one.
        message_id = "msg_mock_" + hashlib.sha256(received.body).hexdigest()[:24]
        if parsed.get("stream") is True:
            events = stream_events(reply.scenario, model, message_id)
            return await self._stream(request, received, reply, events, headers)
        message = message_json(reply.scenario, model, message_id)
        if reply.fail is not None:
            return await self._broken_message(request, received, reply.fail, message, headers)
        received.sent += message
        return web.Response(body=message, headers=headers, content_type="application/json")

    async def _broken_message(self, request: web.Request, received: Received, failure: Failure, message: bytes,
                              headers: dict[str, str]) -> web.StreamResponse:
        """A non-streaming Message cut off halfway through its body."""
        response = web.StreamResponse(headers={**headers, "content-type": "application/json"})
        response.content_length = len(message)
        await response.prepare(request)
        half = message[:len(message) // 2]
        await response.write(half)
        received.sent += half
        await _fail(request, failure)
        return response

    async def _stream(self, request: web.Request, received: Received, reply: Reply, events: list[dict[str, Any]],
                      headers: dict[str, str]) -> web.StreamResponse:
        response = web.StreamResponse(headers={**headers, "content-type": "text/event-stream; charset=utf-8",
                                               "cache-control": "no-cache"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for sent, chunk in enumerate(_chunks(events, reply.chunk_size)):
            if sent == reply.fail_after and reply.gate is not None:
                await reply.gate.wait()
            if sent == reply.fail_after and reply.fail is not None:
                await _fail(request, reply.fail)
                return response
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            await response.write(chunk)
            received.sent += chunk
        await response.write_eof()
        return response


async def _fail(request: web.Request, failure: Failure) -> None:
    if failure is Failure.RESET:
        assert request.transport is not None
        request.transport.abort()
    else:
        await asyncio.Event().wait()


def _chunks(events: list[dict[str, Any]], size: int | None) -> list[bytes]:
    """One chunk per event, as the API sends them, or the same bytes cut every `size` bytes."""
    encoded = [sse(event) for event in events]
    if size is None:
        return encoded
    data = b"".join(encoded)
    return [data[start:start + size] for start in range(0, len(data), size)]


async def _serve(host: str, port: int) -> None:
    upstream = MockUpstream()
    await upstream.start(host=host, port=port)
    print(f"mock Anthropic upstream on http://{host}:{upstream.port} (scenarios: {', '.join(SCENARIOS)})",
          flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="A local Anthropic-wire upstream for tests and demos.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (in a pod: its IP)")
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
