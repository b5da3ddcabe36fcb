"""Reads an Anthropic SSE stream on the side, incrementally, to learn what it costs.

The gateway relays every chunk to the client first, then feeds the same bytes here; nothing here
can change what the client receives. Chunks may split anywhere (mid-line, mid-UTF-8 sequence):
only complete lines are kept, and only complete events are decoded. Events the scanner does not
know, or cannot parse, are ignored, as a client must tolerate new event types.

What it keeps: the usage of `message_start` merged with each cumulative `message_delta`
(spendgate.pricing.merge_delta_usage), the served model, the stop reason, a mid-stream `error`
event's type, and the characters of generated text seen so far, for the floor estimate used when
a stream ends before its final usage (about four characters per token, as Anthropic's gateway does).
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from spendgate.pricing import merge_delta_usage

CHARS_PER_TOKEN: Final = 4
# The fields of each delta type that carry generated output (all billed as output tokens).
GENERATED_FIELDS: Final = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}


class StreamScanner:
    __slots__ = ("_data", "_partial", "completed", "content_started", "error_type", "final_usage_seen", "model",
                 "output_chars", "stop_reason", "usage")

    def __init__(self) -> None:
        self._partial = b""  # an incomplete line carried over to the next chunk
        self._data: list[bytes] = []  # data lines of the event being read
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.stop_reason: str | None = None
        self.error_type: str | None = None
        self.output_chars = 0
        self.content_started = False
        self.final_usage_seen = False
        self.completed = False

    def feed(self, chunk: bytes) -> None:
        if self._partial:
            chunk = self._partial + chunk
        lines = chunk.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                self._data.append(line[5:])  # JSON tolerates the leading space and a trailing \r
            elif (not line or line == b"\r") and self._data:
                self._dispatch()

    @property
    def at_event_boundary(self) -> bool:
        """True when no event is half-received, so another event can be appended cleanly."""
        return not self._partial and not self._data

    @property
    def refused_before_output(self) -> bool:
        return self.stop_reason == "refusal" and not self.content_started

    def billable_usage(self) -> tuple[dict[str, Any] | None, bool]:
        """The usage to bill and whether it is an estimate (the stream ended before its final usage)."""
        if self.usage is None or self.final_usage_seen:
            return self.usage, False
        estimate = -(-self.output_chars // CHARS_PER_TOKEN)
        reported = self.usage.get("output_tokens")
        output = max(reported if type(reported) is int else 0, estimate)
        return {**self.usage, "output_tokens": output}, True

    def _dispatch(self) -> None:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data = []
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "content_block_delta":
            self._count_generated(event.get("delta"))
        elif kind == "content_block_start":
            self.content_started = True
        elif kind == "message_start":
            self._start(event.get("message"))
        elif kind == "message_delta":
            self._delta(event)
        elif kind == "message_stop":
            self.completed = True
        elif kind == "error":
            error = event.get("error")
            self.error_type = str(error.get("type")) if isinstance(error, dict) else "error"

    def _count_generated(self, delta: Any) -> None:
        if not isinstance(delta, dict):
            return
        field = GENERATED_FIELDS.get(str(delta.get("type")))
        text = delta.get(field) if field else None
        if isinstance(text, str):
            self.output_chars += len(text)

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
