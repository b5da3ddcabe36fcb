"""The side-channel SSE scanner: usage, model and stop reason from any chunking of the stream."""

from __future__ import annotations

from typing import Any

import pytest

from spendgate.proxy.sse import MAX_KEPT_DELTA_BYTES, StreamScanner
from spendgate.testing.upstream import (
    MID_STREAM_ERROR,
    THINKING,
    TOOL_USE,
    UTF8,
    WEB_SEARCH,
    Scenario,
    sse,
    stream_events,
)


def stream(scenario: Scenario) -> bytes:
    return b"".join(sse(event) for event in stream_events(scenario, "claude-opus-5-5", "msg_1"))


def scan(*chunks: bytes) -> StreamScanner:
    scanner = StreamScanner()
    for chunk in chunks:
        scanner.feed(chunk)
    return scanner


def summary(scanner: StreamScanner) -> tuple[Any, ...]:
    return (scanner.usage, scanner.model, scanner.stop_reason, scanner.generated_chars(), scanner.completed,
            scanner.error_type, scanner.billable_usage())


def test_reads_the_final_usage_of_a_tool_use_stream() -> None:
    scanner = scan(stream(TOOL_USE))
    assert scanner.model == "claude-opus-5-5"
    assert scanner.stop_reason == "tool_use"
    assert scanner.completed and scanner.final_usage_seen and scanner.content_started
    assert scanner.usage is not None and scanner.usage["output_tokens"] == 89
    assert scanner.usage["input_tokens"] == 472
    assert scanner.billable_usage() == (scanner.usage, False)


def test_merges_usage_that_grows_mid_stream() -> None:
    """Web search: message_start says 2,679 input, the final message_delta 10,682 and one search."""
    usage = scan(stream(WEB_SEARCH)).usage
    assert usage is not None
    assert (usage["input_tokens"], usage["output_tokens"], usage["server_tool_use"]) == (
        10682, 510, {"web_search_requests": 1})


@pytest.mark.parametrize("scenario", [TOOL_USE, THINKING, UTF8, WEB_SEARCH], ids=["tool", "thinking", "utf8", "web"])
def test_every_split_point_gives_the_same_result(scenario: Scenario) -> None:
    """Chunk boundaries anywhere: mid-line, mid-`data:`, between \\n and \\n, inside a UTF-8 character."""
    data = stream(scenario)
    whole = summary(scan(data))
    for cut in range(1, len(data)):
        assert summary(scan(data[:cut], data[cut:])) == whole, cut


def test_byte_by_byte() -> None:
    data = stream(UTF8)
    assert summary(scan(*(data[i:i + 1] for i in range(len(data))))) == summary(scan(data))


def test_crlf_line_endings_and_multi_line_data() -> None:
    data = (b'event: message_start\r\ndata: {"type":"message_start","message":{"model":"m",\r\n'
            b'data: "usage":{"input_tokens":7,"output_tokens":1}}}\r\n\r\n'
            b'event: message_delta\r\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
            b'"usage":{"output_tokens":9}}\r\n\r\n')
    scanner = scan(data)
    assert scanner.usage == {"input_tokens": 7, "output_tokens": 9}
    assert scanner.stop_reason == "end_turn"


def test_unknown_events_comments_and_garbage_are_ignored() -> None:
    data = (b": a comment\n\nevent: future_event\ndata: {\"type\":\"future_event\",\"x\":1}\n\n"
            b"data: not json\n\ndata: [1,2]\n\nid: 7\nretry: 10\n\n" + stream(TOOL_USE))
    assert summary(scan(data)) == summary(scan(stream(TOOL_USE)))


def test_unnamed_events_are_read_by_their_type() -> None:
    """An upstream that sends no `event:` lines is read from each event's JSON `type`."""
    unnamed = b"".join(line + b"\n" for line in stream(THINKING).split(b"\n") if not line.startswith(b"event:"))
    cut = unnamed.index(b'data: {"type":"message_delta"')
    assert summary(scan(unnamed)) == summary(scan(stream(THINKING)))
    assert scan(unnamed[:cut]).billable_usage() == scan(stream(THINKING)[:stream(THINKING).index(
        b"event: message_delta")]).billable_usage()


def test_a_garbled_delta_counts_nothing() -> None:
    data = stream(TOOL_USE)
    cut = data.index(b"event: message_delta")
    garbled = data[:cut] + b"event: content_block_delta\ndata: {oops\n\n"
    assert scan(garbled).billable_usage() == scan(data[:cut]).billable_usage()


def test_a_later_usage_only_delta_keeps_the_stop_reason() -> None:
    data = stream(TOOL_USE) + sse({"type": "message_delta", "delta": {"stop_reason": None},
                                   "usage": {"output_tokens": 95}})
    scanner = scan(data)
    assert (scanner.stop_reason, scanner.usage and scanner.usage["output_tokens"]) == ("tool_use", 95)


def test_mid_stream_error_keeps_the_usage_seen_so_far() -> None:
    scanner = scan(stream(MID_STREAM_ERROR))
    assert scanner.error_type == "overloaded_error"
    assert not scanner.completed and not scanner.final_usage_seen
    usage, estimated = scanner.billable_usage()
    assert estimated and usage is not None and usage["input_tokens"] == 42


def test_output_estimate_before_the_final_usage() -> None:
    """About four characters per token of text, thinking and tool input relayed so far (rounded up)."""
    data = stream(THINKING)
    cut = data.index(b"event: message_delta")
    usage, estimated = scan(data[:cut]).billable_usage()
    generated = sum(len(block.get("text", "") + block.get("thinking", "")) for block in THINKING.content)
    assert estimated and usage is not None
    assert usage["output_tokens"] == -(-generated // 4)


def test_nothing_to_bill_before_message_start() -> None:
    assert scan(b"event: ping\ndata: {\"type\":\"ping\"}\n\n").billable_usage() == (None, False)


def test_knows_whether_it_stopped_between_events() -> None:
    data = stream(TOOL_USE)
    assert scan(data).at_event_boundary
    assert not scan(data[:10]).at_event_boundary
    assert not scan(data[:data.index(b"\n\n") + 1]).at_event_boundary


def test_a_long_stream_keeps_little_and_counts_every_delta() -> None:
    """A coding turn's thousands of deltas: the scanner holds at most MAX_KEPT_DELTA_BYTES of them at any
    time (a stream's memory does not grow with its length), and the floor estimate still counts them all."""
    text = "    return self._partial + chunk if self._partial else chunk  # é, \"quoted\"\n"
    start = sse({"type": "message_start", "message": {"model": "claude-opus-5-5", "usage": {"input_tokens": 9,
                                                                                        "output_tokens": 1}}})
    delta = sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})
    scanner = StreamScanner()
    scanner.feed(start)
    kept_most = 0
    for _ in range(3000):
        scanner.feed(delta)
        kept_most = max(kept_most, scanner._kept_bytes)
    assert kept_most <= MAX_KEPT_DELTA_BYTES < 3000 * len(delta)
    assert scanner.generated_chars() == 3000 * len(text)
    usage, estimated = scanner.billable_usage()
    assert estimated and usage is not None and usage["output_tokens"] == -(-3000 * len(text) // 4)
