"""Reading what a non-streaming answer says about its cost, whatever shape the upstream sent it in.

The gateway relays the upstream's bytes untouched; these functions only read them. A Message
carries its `model` near the start and its `usage` near the end, so an answer too large to keep
whole (past `--max-response-buffer-mib`) is streamed through with only its head and tail kept,
and the usage is read from the tail. A compressed answer (the gateway asks for identity, but an
upstream may compress anyway) is inflated for reading, within a bound; an encoding it cannot read
(brotli, zstd) leaves the usage unread, and the caller flags it.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Final

import orjson

from spendgate.proxy.exchange import Exchange

# What is kept of an answer streamed through: the model is in the head, the usage in the tail.
HEAD_BYTES: Final = 4096
TAIL_BYTES: Final = 64 * 1024
# An inflated answer larger than this is not read (a compression bomb costs no memory).
MAX_INFLATED_BYTES: Final = 64 * 1024 * 1024
MAX_INFLATED_CHUNK: Final = 16 * 1024 * 1024
WBITS: Final = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}
_USAGE_KEY: Final = b'"usage"'
_MODEL_KEY: Final = b'"model"'


def content_encoding(headers: Any) -> str:
    return str(headers.get("content-encoding", "")).strip().lower()


def readable(body: bytes, encoding: str) -> bytes | None:
    """The body as JSON bytes to read: as is, inflated, or None when it cannot be read."""
    if encoding in ("", "identity"):
        return body
    wbits = WBITS.get(encoding)
    if wbits is None:
        return None
    inflater = zlib.decompressobj(wbits)
    try:
        inflated = inflater.decompress(body, MAX_INFLATED_BYTES + 1)
    except zlib.error:
        return None
    return inflated if len(inflated) <= MAX_INFLATED_BYTES and inflater.eof else None


def read_message(exchange: Exchange, body: bytes) -> None:
    """Usage, served model and refusal from a whole non-streaming Message body."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if not isinstance(message, dict):
        return
    usage, model = message.get("usage"), message.get("model")
    exchange.usage = usage if isinstance(usage, dict) else None
    exchange.served_model = model if isinstance(model, str) else None
    exchange.refused_before_output = message.get("stop_reason") == "refusal" and not message.get("content")


def read_head_and_tail(exchange: Exchange, head: bytes, tail: bytes) -> None:
    """Usage and model of a Message too large to keep whole: `"usage": {...}` is the last key the API
    writes, `"model": "..."` one of the first. Refusals are small, so they never come this way."""
    exchange.served_model = _value_after(head, _MODEL_KEY, str)
    exchange.usage = _value_after(tail, _USAGE_KEY, dict, last=True)


def _value_after(data: bytes, key: bytes, kind: type, last: bool = False) -> Any:
    at = data.rfind(key) if last else data.find(key)
    if at < 0:
        return None
    text = data[at + len(key):].decode("utf-8", "replace").lstrip()
    if not text.startswith(":"):
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[1:].lstrip())
    except ValueError:
        return None
    return value if isinstance(value, kind) else None


def error_type_of(body: bytes) -> str | None:
    """The `error.type` of an upstream error body, for the ledger; None if it is not Anthropic-shaped."""
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return str(error.get("type")) if isinstance(error, dict) else None


class Inflater:
    """A compressed event stream, inflated chunk by chunk for the scanner (the client gets the bytes
    as sent). Broken compression stops the reading, not the stream."""

    def __init__(self, encoding: str) -> None:
        self._inflater = zlib.decompressobj(WBITS[encoding])
        self.broken = False

    def feed(self, chunk: bytes) -> bytes:
        if self.broken:
            return b""
        try:
            inflated = self._inflater.decompress(chunk, MAX_INFLATED_CHUNK)
        except zlib.error:
            self.broken = True
            return b""
        if self._inflater.unconsumed_tail:  # one chunk inflating past the bound: a bomb, not a stream
            self.broken = True
        return inflated
