"""A zero-delay Anthropic-wire upstream for the benchmark, as fast as Python goes.

An asyncio protocol on uvloop with httptools' C parser; every response is prebuilt bytes. Any
POST answers like `POST /v1/messages`: a canned non-streaming Message (usage with cache tokens),
or, when the body has `"stream":true` or `"stream": true` (a byte search), a canned SSE stream sent with chunked
transfer encoding, one chunk and one write per event, as the real API does. Keep-alive throughout.

The token counts are small on purpose: thousands of benchmark requests are priced by the gateway
and must not push the example budgets into Downgrade or Pause mid-run.

    python bench/mock_upstream.py --port 18080
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from typing import Any, cast

import httptools
import uvloop

MODEL = "claude-opus-5-5"
TEXT_DELTAS = 12

USAGE: dict[str, Any] = {
    "input_tokens": 6,
    "cache_creation_input_tokens": 4,
    "cache_read_input_tokens": 20,
    "cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 3,
    "service_tier": "standard",
}


def message_json() -> bytes:
    message = {
        "id": "msg_01BenchMockUpstream000000",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Done. The tests pass."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": USAGE,
    }
    return json.dumps(message, separators=(",", ":")).encode()


def sse_events() -> list[tuple[str, dict[str, Any]]]:
    start_usage = {**USAGE, "output_tokens": 1}
    start = {"id": "msg_01BenchMockUpstream000001", "type": "message", "role": "assistant", "model": MODEL,
             "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
    ]
    for number in range(TEXT_DELTAS):
        delta = {"type": "text_delta", "text": f"word{number} "}
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"input_tokens": USAGE["input_tokens"],
                                     "cache_creation_input_tokens": USAGE["cache_creation_input_tokens"],
                                     "cache_read_input_tokens": USAGE["cache_read_input_tokens"],
                                     "output_tokens": USAGE["output_tokens"]}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


# Each answer gets its own request id, as the API's do (a gateway's ledger is keyed on it): a
# fixed-width slot in the prepared bytes, filled from a counter.
REQUEST_ID_SLOT = b"req_bench_000000000000"
REQUEST_IDS = itertools.count(1)


def with_request_id(data: bytes) -> bytes:
    return data.replace(REQUEST_ID_SLOT, b"req_bench_%012d" % next(REQUEST_IDS), 1)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def non_stream_response() -> bytes:
    body = message_json()
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nrequest-id: " + REQUEST_ID_SLOT + b"\r\n"
            b"content-length: %d\r\n\r\n" % len(body))
    return head + body


def stream_writes() -> list[bytes]:
    """The streamed response as separate writes: head + first event, each further event, the last chunk.

    One write per event, as a real upstream sends them, so a gateway reads (and relays) the stream
    in several pieces rather than as one buffer."""
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
            b"request-id: " + REQUEST_ID_SLOT + b"\r\ntransfer-encoding: chunked\r\n\r\n")
    frames = [chunk(f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode())
              for name, data in sse_events()]
    frames[0] = head + frames[0]
    frames[-1] += b"0\r\n\r\n"
    return frames


def not_found_response() -> bytes:
    body = b'{"type":"error","error":{"type":"not_found_error","message":"Not found"}}'
    return b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(body), body)


def wants_stream(body: bytes) -> bool:
    return b'"stream":true' in body or b'"stream": true' in body


NON_STREAM = non_stream_response()
STREAM = stream_writes()
NOT_FOUND = not_found_response()


class MockProtocol(asyncio.Protocol):
    """One connection: parse requests with httptools, answer each when its body is complete."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports set TCP_NODELAY

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.parser.get_method() != b"POST":
            self.transport.write(NOT_FOUND)
            return
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        if wants_stream(body):
            self.transport.write(with_request_id(STREAM[0]))
            for write in STREAM[1:]:
                self.transport.write(write)
        else:
            self.transport.write(with_request_id(NON_STREAM))


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args()
    uvloop.install()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
