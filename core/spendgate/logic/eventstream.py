"""AWS event-stream framing (`application/vnd.amazon.eventstream`), decoded incrementally.

Amazon Bedrock's InvokeModelWithResponseStream answers in this binary framing, not SSE. Each frame:

    total length (u32) | headers length (u32) | CRC-32 of those 8 bytes (u32)
    headers: name length (u8), name, value type (u8), value (strings: u16 length, bytes)
    payload
    CRC-32 of everything before it (u32)

all integers big-endian. A chunk frame's headers say `:message-type: event`, `:event-type: chunk`, and
its payload is JSON whose `bytes` field is the base64 of one Anthropic streaming event; an error
frame says `:message-type: exception` and `:exception-type: <name>`, with `{"message": ...}`.

`FrameDecoder.feed` takes bytes split anywhere and returns the frames completed so far; nothing is
decoded twice and at most one incomplete frame is kept. A frame that cannot be one (a length out of
bounds, a CRC mismatch, a malformed header) raises EventStreamError: the framing is then lost for
good, since nothing marks where the next frame would start. Pure: no I/O.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

PRELUDE: Final = struct.Struct(">III")
CRC: Final = struct.Struct(">I")
PRELUDE_BYTES: Final = PRELUDE.size  # 12
MIN_FRAME_BYTES: Final = PRELUDE_BYTES + CRC.size  # 16: no headers, no payload
# The limits AWS documents for a frame (and botocore enforces): 128 KiB of headers, 16 MiB of payload.
MAX_HEADERS_BYTES: Final = 128 * 1024
MAX_FRAME_BYTES: Final = MIN_FRAME_BYTES + MAX_HEADERS_BYTES + 16 * 1024 * 1024
STRING: Final = 7
# Fixed-size header value types: bool true/false, byte, short, int, long, timestamp, uuid.
FIXED_SIZES: Final = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
BYTES: Final = 6


class EventStreamError(ValueError):
    """Bytes that are not AWS event-stream framing; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Frame:
    headers: dict[str, str]  # string-valued headers (the ones event streams use); others are skipped
    payload: bytes

    @property
    def message_type(self) -> str:
        return self.headers.get(":message-type", "")


class FrameDecoder:
    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    @property
    def at_frame_boundary(self) -> bool:
        """True when no frame is half-received, so another frame can be appended cleanly."""
        return not self._buffer

    def feed(self, chunk: bytes) -> list[Frame]:
        buffer = self._buffer + chunk if self._buffer else chunk
        frames: list[Frame] = []
        start = 0
        while len(buffer) - start >= PRELUDE_BYTES:
            total, headers_length, prelude_crc = PRELUDE.unpack_from(buffer, start)
            if zlib.crc32(buffer[start:start + 8]) != prelude_crc:
                raise EventStreamError("prelude checksum mismatch")
            if not MIN_FRAME_BYTES + headers_length <= total <= MAX_FRAME_BYTES or headers_length > MAX_HEADERS_BYTES:
                raise EventStreamError(f"frame length {total} with {headers_length} header bytes is out of bounds")
            if len(buffer) - start < total:
                break
            end = start + total
            (message_crc,) = CRC.unpack_from(buffer, end - CRC.size)
            if zlib.crc32(buffer[start:end - CRC.size]) != message_crc:
                raise EventStreamError("message checksum mismatch")
            headers_end = start + PRELUDE_BYTES + headers_length
            frames.append(Frame(_headers(buffer[start + PRELUDE_BYTES:headers_end]),
                                buffer[headers_end:end - CRC.size]))
            start = end
        self._buffer = buffer[start:]
        return frames


def _headers(data: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    at = 0
    try:
        while at < len(data):
            name_length = data[at]
            name = data[at + 1:at + 1 + name_length].decode("utf-8")
            kind = data[at + 1 + name_length]
            at += 2 + name_length
            if kind in (STRING, BYTES):
                (size,) = struct.unpack_from(">H", data, at)
                value = data[at + 2:at + 2 + size]
                if len(value) != size:
                    raise EventStreamError("a header value runs past the headers")
                if kind == STRING:
                    headers[name] = value.decode("utf-8")
                at += 2 + size
            elif kind in FIXED_SIZES:
                at += FIXED_SIZES[kind]
            else:
                raise EventStreamError(f"unknown header value type {kind}")
    except (IndexError, struct.error, UnicodeDecodeError) as error:
        raise EventStreamError(f"malformed headers ({error})") from None
    if at != len(data):
        raise EventStreamError("a header value runs past the headers")
    return headers


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One frame with string headers (what the test upstream sends, and how a broken stream is ended)."""
    encoded = b"".join(_string_header(name, value) for name, value in headers.items())
    total = MIN_FRAME_BYTES + len(encoded) + len(payload)
    prelude = struct.pack(">II", total, len(encoded))
    body = prelude + CRC.pack(zlib.crc32(prelude)) + encoded + payload
    return body + CRC.pack(zlib.crc32(body))


def _string_header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
    return bytes([len(raw_name)]) + raw_name + bytes([STRING]) + struct.pack(">H", len(raw_value)) + raw_value


def exception_frame(exception_type: str, message_json: bytes) -> bytes:
    """The frame Bedrock ends a failed stream with (the SDKs raise it as an error)."""
    return encode_frame({":message-type": "exception", ":exception-type": exception_type,
                         ":content-type": "application/json"}, message_json)
