"""Claude on Amazon Bedrock (InvokeModel): its routes, its SigV4 signing, its event-stream usage.

Claude Code with `CLAUDE_CODE_USE_BEDROCK=1` and `ANTHROPIC_BEDROCK_BASE_URL` pointing at the gateway
(and the anthropic SDK's `AnthropicBedrock(base_url=...)`) sends

    POST /model/{model id}/invoke                        a Message, as JSON
    POST /model/{model id}/invoke-with-response-stream   the events, in AWS event-stream framing
    POST /model/{model id}/count-tokens                  (free)

with the Messages body minus `model` and `stream`, plus `anthropic_version`. The model id is in the
path: `us.anthropic.claude-...`, `global.anthropic.claude-...`, `anthropic.claude-...`, or an ARN (its
slash percent-encoded). The gateway forwards the path and the body as received, signed with SigV4
with the organisation's AWS credentials (aws.py).

The response stream is relayed byte for byte and read on the side by EventStreamScanner: each
chunk frame's payload is `{"bytes": "<base64 of one Anthropic event>"}`, read like an SSE event.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import date
from typing import Final
from urllib.parse import quote, unquote

import orjson

from spendgate.logic.eventstream import FrameDecoder, exception_frame
from spendgate.logic.pricing import PriceBook
from spendgate.proxy.admission import Endpoint
from spendgate.proxy.errors import ProxyError
from spendgate.proxy.providers import Provider, Route, known
from spendgate.proxy.sse import EventUsage

EVENT_STREAM: Final = "application/vnd.amazon.eventstream"
OPERATIONS: Final = {b"invoke": (Endpoint.MESSAGES, False), b"invoke-with-response-stream": (Endpoint.MESSAGES, True),
                     b"count-tokens": (Endpoint.COUNT_TOKENS, False)}
PATH: Final = re.compile(rb"/model/([^/]+)/([a-z-]+)/?")
# A model id's characters as a client sends them (ARNs percent-encode their slash), and once decoded.
MODEL_SEGMENT: Final = re.compile(rb"[A-Za-z0-9._:%-]+")
MODEL_ID: Final = re.compile(r"[A-Za-z0-9._:/-]+")
# A Bedrock id around the Anthropic model name: an ARN's or a geography's prefix, a version suffix.
ID_PARTS: Final = re.compile(r"(?P<prefix>(?:.*/)?(?:[a-z-]+\.)?anthropic\.)(?P<name>claude-[a-z0-9-]+?)"
                             r"(?P<suffix>-v\d+(?::\d+)?)?")
# The event types whose `bytes` the scanner keeps undecoded (see sse.EventUsage).
DELTA_PREFIX: Final = b'{"type":"content_block_delta"'


class Bedrock(Provider):
    name = "aws.bedrock"
    prices = "aws"
    flag = "--bedrock-upstream"
    # The client's own SigV4 signature and its parts: the gateway signs with the organisation's.
    dropped = frozenset({b"x-amz-date", b"x-amz-security-token", b"x-amz-content-sha256"})

    @property
    def title(self) -> str:
        return "Amazon Bedrock"

    def route(self, method: str, raw_path: bytes) -> Route | None:
        found = PATH.fullmatch(raw_path)
        if found is None:
            return None
        segment, operation = found.groups()
        if method.upper() != "POST" or operation not in OPERATIONS:
            raise ProxyError("not_found_error", "the gateway serves POST /model/{model}/invoke, "
                                                "/invoke-with-response-stream and /count-tokens of Amazon Bedrock")
        model = unquote(segment.decode("latin-1")) if MODEL_SEGMENT.fullmatch(segment) else ""
        if model in (".", "..") or not MODEL_ID.fullmatch(model):
            raise ProxyError("invalid_request_error", "the model id in the path is not a Bedrock model id")
        endpoint, stream = OPERATIONS[operation]
        return Route(endpoint, model, stream)

    def target(self, raw_path: str, route: Route, model: str) -> str:
        operation = raw_path.rstrip("/").rsplit("/", 1)[1]
        return f"/model/{quote(model, safe=':')}/{operation}"

    def scanner(self, content_type: str) -> EventUsage | None:
        return EventStreamScanner() if content_type.startswith(EVENT_STREAM) else None

    def model_for(self, target: str, requested: str, prices: PriceBook, day: date) -> str | None:
        """The requested id with the cascade model's name in place of its own (`us.anthropic.claude-opus-5-5-v1:0`
        -> `us.anthropic.claude-sonnet-5-5-v1:0`), if Bedrock's prices know the result."""
        parts = ID_PARTS.fullmatch(requested)
        if parts is None:
            return None
        candidate = f"{parts['prefix']}{target}{parts['suffix'] or ''}"
        return candidate if known(prices, candidate, day) else None


class EventStreamScanner(EventUsage):
    """Bedrock's response stream, read for usage: frames decoded incrementally, chunks' events handed on."""

    __slots__ = ("_frames",)

    def __init__(self) -> None:
        super().__init__()
        self._frames = FrameDecoder()

    @property
    def at_event_boundary(self) -> bool:
        return self._frames.at_frame_boundary

    def failure_bytes(self, error_type: str, message: str) -> bytes:
        """An exception frame (the SDKs raise it as the stream's error). A half-sent frame cannot be ended:
        the client's decoder fails on it either way, and the stream ends there."""
        if not self.at_event_boundary:
            return b""
        exception = "serviceUnavailableException" if error_type == "timeout_error" else "internalServerException"
        return exception_frame(exception, orjson.dumps({"message": message}))

    def feed(self, chunk: bytes) -> None:
        for frame in self._frames.feed(chunk):
            if frame.message_type == "exception":
                self.error_type = frame.headers.get(":exception-type", "exception")
            elif frame.message_type == "event" and frame.headers.get(":event-type") == "chunk":
                event = _chunk_event(frame.payload)
                if event is None:
                    continue
                if event.startswith(DELTA_PREFIX):
                    self._keep(event)
                else:
                    self._read(event, self._event_json(event))


def _chunk_event(payload: bytes) -> bytes | None:
    """The Anthropic event a chunk frame carries (`{"bytes": "<base64>"}`), or None if it carries none."""
    try:
        encoded = orjson.loads(payload).get("bytes")
        return base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
    except (orjson.JSONDecodeError, AttributeError, binascii.Error):
        return None
