"""AWS event-stream framing: the incremental decoder against botocore's, for any chunking, and any corruption.

And Bedrock's stream read for usage (bedrock.EventStreamScanner): however the frames are split, the
usage, model and stop reason are those of the same events read as SSE.
"""

from __future__ import annotations

import base64
import itertools
import json

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.logic.eventstream import EventStreamError, Frame, FrameDecoder, encode_frame, exception_frame
from spendgate.proxy.bedrock import EventStreamScanner
from spendgate.proxy.sse import StreamScanner
from spendgate.testing.clouds import bedrock_chunk
from spendgate.testing.upstream import CACHE, THINKING, TOOL_USE, UTF8, WEB_SEARCH, sse, stream_events

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda name: len(name.encode()) < 256)
frames = st.lists(st.tuples(st.dictionaries(names, st.text(max_size=40), max_size=4), st.binary(max_size=300)),
                  min_size=1, max_size=8)


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cut % (len(data) + 1) for cut in cuts), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


def decode(chunks: list[bytes]) -> list[Frame]:
    decoder = FrameDecoder()
    found = [frame for chunk in chunks for frame in decoder.feed(chunk)]
    assert decoder.at_frame_boundary
    return found


@settings(max_examples=200)
@given(frames, st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_decodes_the_frames_botocore_decodes(sent: list[tuple[dict[str, str], bytes]],
                                                          cuts: list[int]) -> None:
    data = b"".join(encode_frame(headers, payload) for headers, payload in sent)
    decoded = decode(cut(data, cuts))
    assert [(frame.headers, frame.payload) for frame in decoded] == sent
    reference = EventStreamBuffer()
    reference.add_data(data)
    assert [(message.headers, message.payload) for message in reference] == sent


@settings(max_examples=200)
@given(frames, st.data())
def test_a_corrupted_byte_is_an_error_never_a_wrong_frame(sent: list[tuple[dict[str, str], bytes]],
                                                          data: st.DataObject) -> None:
    encoded = bytearray(b"".join(encode_frame(headers, payload) for headers, payload in sent))
    at = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    decoder = FrameDecoder()
    try:
        found = decoder.feed(bytes(encoded))
    except EventStreamError:
        return
    # A length byte that grew: the frame is still incomplete, nothing wrong was decoded yet.
    assert [(frame.headers, frame.payload) for frame in found] == sent[:len(found)]
    assert not decoder.at_frame_boundary


@pytest.mark.parametrize("data", [
    b"\x00\x00\x00\x05\x00\x00\x00\x00" + b"\x00" * 8,  # shorter than a frame can be
    b"\xff\xff\xff\xff\x00\x00\x00\x00" + b"\x00" * 8,  # longer than a frame may be
])
def test_impossible_lengths_are_refused(data: bytes) -> None:
    import struct
    import zlib
    prelude = data[:8] + struct.pack(">I", zlib.crc32(data[:8]))
    with pytest.raises(EventStreamError, match="out of bounds"):
        FrameDecoder().feed(prelude + data[12:])


def test_an_exception_frame_is_what_botocore_reads_as_one() -> None:
    reference = EventStreamBuffer()
    reference.add_data(exception_frame("internalServerException", b'{"message":"upstream lost"}'))
    message = next(iter(reference))
    assert message.headers[":message-type"] == "exception"
    assert message.headers[":exception-type"] == "internalServerException"
    assert json.loads(message.payload) == {"message": "upstream lost"}


SCENARIOS = [TOOL_USE, THINKING, CACHE, WEB_SEARCH, UTF8]


@settings(max_examples=100)
@given(st.integers(min_value=0, max_value=len(SCENARIOS) - 1), st.lists(st.integers(min_value=0), max_size=40))
def test_bedrock_usage_is_the_same_however_the_stream_is_split(index: int, cuts: list[int]) -> None:
    events = stream_events(SCENARIOS[index], "claude-opus-5-5", "msg_p")
    as_sse = StreamScanner()
    as_sse.feed(b"".join(sse(event) for event in events))
    scanner = EventStreamScanner()
    for chunk in cut(b"".join(bedrock_chunk(event) for event in events), cuts):
        scanner.feed(chunk)
    assert scanner.at_event_boundary
    assert scanner.billable_usage() == as_sse.billable_usage()
    assert (scanner.model, scanner.stop_reason, scanner.completed) == (as_sse.model, as_sse.stop_reason, True)


def test_a_bedrock_stream_cut_short_is_estimated_from_its_text() -> None:
    events = stream_events(UTF8, "claude-opus-5-5", "msg_p")
    scanner = EventStreamScanner()
    for event in events[:-2]:  # no message_delta, no message_stop
        scanner.feed(bedrock_chunk(event))
    usage, estimated = scanner.billable_usage()
    assert estimated and usage is not None and usage["output_tokens"] >= len(UTF8.content[0]["text"]) // 4


def test_exception_frames_and_unreadable_chunks() -> None:
    scanner = EventStreamScanner()
    scanner.feed(encode_frame({":message-type": "event", ":event-type": "chunk"}, b'{"bytes": "not base64!"}'))
    scanner.feed(encode_frame({":message-type": "event", ":event-type": "chunk"}, b"not json"))
    scanner.feed(encode_frame({":message-type": "event", ":event-type": "chunk"},
                              json.dumps({"bytes": base64.b64encode(b"[1, 2]").decode()}).encode()))
    assert scanner.usage is None and scanner.error_type is None
    scanner.feed(exception_frame("throttlingException", b'{"message":"slow down"}'))
    assert scanner.error_type == "throttlingException"
    with pytest.raises(EventStreamError):
        scanner.feed(b"\x00" * 16)
