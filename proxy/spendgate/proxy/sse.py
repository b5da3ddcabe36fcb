"""Reads an Anthropic SSE stream on the side, incrementally, to learn what it costs.

The gateway relays every chunk to the client first, then feeds the same bytes here; nothing here
can change what the client receives. Chunks may split anywhere (mid-line, mid-UTF-8 sequence):
only complete lines are kept, and only complete events are decoded. Events the scanner does not
know, or cannot parse, are ignored, as a client must tolerate new event types.

What it keeps: the usage of `message_start` merged with each cumulative `message_delta`
(spendgate.logic.pricing.merge_delta_usage), the served model, the stop reason, a mid-stream `error`
event's type, and the generated deltas since the last usage, for the floor estimate used when a
stream ends before its final usage (about four characters per token, as Anthropic's gateway does).
Only the few events that carry these are decoded; the `event:` line each event starts with says which.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Final

import orjson

from spendgate.logic.pricing import merge_delta_usage
from spendgate.proxy.errors import sse_error_event

CHARS_PER_TOKEN: Final = 4
# Bounds on what the scanner keeps: an event that never ends is dropped past MAX_EVENT_BYTES (usage
# events are tiny), and kept deltas are counted and released past MAX_KEPT_DELTA_BYTES. The latter
# is what a stream costs in memory for its whole length (a coding turn streams 100-300 KB of deltas,
# times a thousand concurrent sessions); decoding past it costs about 1 us a delta.
MAX_EVENT_BYTES: Final = 16 * 1024 * 1024
MAX_KEPT_DELTA_BYTES: Final = 64 * 1024
# The fields of each delta type that carry generated output (all billed as output tokens).
GENERATED_FIELDS: Final = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}
# The API names every event on an `event:` line first, so most events are told apart by a prefix.
DELTA: Final = b"event: content_block_delta\n"
BLOCK_START: Final = b"event: content_block_start\n"
MESSAGE_STOP: Final = b"event: message_stop\n"
SKIPPED: Final = (b"event: ping\n", b"event: content_block_stop\n")


class EventUsage(ABC):
    """What a stream of Anthropic events says about its cost, whatever framing carried the events.

    Subclasses cut their framing into events: a `content_block_delta` is kept undecoded (`_keep`), any
    other event is read from its JSON (`_read`); `_event_json` decodes a kept one if need be.
    """

    __slots__ = ("_counted_chars", "_deltas", "_kept_bytes", "completed", "content_started", "error_type",
                 "final_usage_seen", "model", "stop_reason", "usage")

    def __init__(self) -> None:
        # Delta events, kept undecoded: they only matter if the stream ends before its final usage,
        # and decoding every one of them would be most of the scanner's cost.
        self._deltas: list[bytes] = []
        self._kept_bytes = 0
        self._counted_chars = 0  # generated characters of deltas already decoded and released
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.stop_reason: str | None = None
        self.error_type: str | None = None
        self.content_started = False
        self.final_usage_seen = False
        self.completed = False

    @staticmethod
    def _event_json(event: bytes) -> dict[str, Any]:
        """A kept event's JSON object; {} for anything else."""
        return _json_object(event)

    @abstractmethod
    def feed(self, chunk: bytes) -> None:
        """The next bytes of the stream, split anywhere."""

    @property
    @abstractmethod
    def at_event_boundary(self) -> bool:
        """True when no event is half-received, so another event can be appended cleanly."""

    @abstractmethod
    def failure_bytes(self, error_type: str, message: str) -> bytes:
        """What ends a stream the upstream broke off, in this framing."""

    @property
    def refused_before_output(self) -> bool:
        return self.stop_reason == "refusal" and not self.content_started

    def _keep(self, event: bytes) -> None:
        self._deltas.append(event)
        self._kept_bytes += len(event)
        if self._kept_bytes > MAX_KEPT_DELTA_BYTES:
            self._counted_chars += sum(_generated(self._event_json(kept)) for kept in self._deltas)
            self._deltas.clear()
            self._kept_bytes = 0

    def generated_chars(self) -> int:
        """Characters of text, thinking and tool input streamed since the last usage update."""
        return self._counted_chars + sum(_generated(self._event_json(event)) for event in self._deltas)

    def billable_usage(self) -> tuple[dict[str, Any] | None, bool]:
        """The usage to bill and whether it is an estimate (the stream ended before its final usage)."""
        if self.usage is None or self.final_usage_seen:
            return self.usage, False
        estimate = -(-self.generated_chars() // CHARS_PER_TOKEN)
        reported = self.usage.get("output_tokens")
        output = max(reported if type(reported) is int else 0, estimate)
        return {**self.usage, "output_tokens": output}, True

    def _read(self, event: bytes, decoded: dict[str, Any]) -> None:
        kind = decoded.get("type")
        if kind == "content_block_delta":  # an upstream that does not name its events
            self._keep(event)
        elif kind == "content_block_start":
            self.content_started = True
        elif kind == "message_start":
            self._start(decoded.get("message"))
        elif kind == "message_delta":
            self._delta(decoded)
        elif kind == "message_stop":
            self.completed = True
        elif kind == "error":
            error = decoded.get("error")
            self.error_type = str(error.get("type")) if isinstance(error, dict) else "error"

    def _start(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        usage = message.get("usage")
        self.usage = dict(usage) if isinstance(usage, dict) else {}
        model = message.get("model")
        self.model = model if isinstance(model, str) else None

    def _delta(self, event: dict[str, Any]) -> None:
        delta = event.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason") is not None:
            self.stop_reason = str(delta["stop_reason"])  # a later usage-only delta must not clear it
        usage = event.get("usage")
        if isinstance(usage, dict):
            if self.usage is None:
                self.usage = {}
            merge_delta_usage(self.usage, usage)
            self.final_usage_seen = True
            self._deltas.clear()  # the reported output covers them
            self._kept_bytes = self._counted_chars = 0


class StreamScanner(EventUsage):
    """An SSE stream of the Messages API (Anthropic, Vertex AI)."""

    __slots__ = ("_partial", "_skipping")

    def __init__(self) -> None:
        super().__init__()
        self._partial = b""  # an incomplete event carried over to the next chunk
        self._skipping = False  # inside an event too large to keep: drop bytes until its end

    @staticmethod
    def _event_json(event: bytes) -> dict[str, Any]:
        return _decode(event)

    def failure_bytes(self, error_type: str, message: str) -> bytes:
        """An `error` event telling the client the stream broke; a half-sent event is ended first."""
        closing = b"" if self.at_event_boundary else b"\n\n"
        return closing + sse_error_event(error_type, message)

    def feed(self, chunk: bytes) -> None:
        buffer = self._partial + chunk if self._partial else chunk
        if b"\r" in buffer:  # CRLF line ends; a lone \r at the end is completed by the next chunk
            buffer = buffer.replace(b"\r\n", b"\n")
        events = buffer.split(b"\n\n")
        self._partial = events.pop()
        if self._skipping and events:  # the oversized event ends here
            events.pop(0)
            self._skipping = False
        if len(self._partial) > MAX_EVENT_BYTES:
            self._partial, self._skipping = b"", True
        for event in events:
            if event.startswith(DELTA):
                self._keep(event)
            elif event.startswith(BLOCK_START):
                self.content_started = True
            elif event.startswith(MESSAGE_STOP):
                self.completed = True
            elif not event.startswith(SKIPPED):
                self._read(event, _decode(event))

    @property
    def at_event_boundary(self) -> bool:
        return not self._partial


def _decode(event: bytes) -> dict[str, Any]:
    """An SSE event's data as a JSON object; {} for comments, other fields, or data that is not one."""
    data = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
    if not data:
        return {}
    return _json_object(data[0] if len(data) == 1 else b"\n".join(data))


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _generated(event: dict[str, Any]) -> int:
    delta = event.get("delta")
    if not isinstance(delta, dict):
        return 0
    field = GENERATED_FIELDS.get(str(delta.get("type")))
    text = delta.get(field) if field else None
    return len(text) if isinstance(text, str) else 0
