"""One ledger line as a typed record: every field checked, every failure named, parse and write inverse."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendgate.logic import ledgerrecord
from spendgate.logic.ledgerrecord import (
    LEDGER_V1,
    LedgerLineError,
    LedgerRecord,
    _Line,
    parse_line,
    parse_record,
    record_line,
)
from spendgate.logic.pricing import Tokens

LINE: dict[str, Any] = {
    "schemaVersion": "spendgate.io/ledger/v2", "time": "2026-11-24T09:12:03.481220Z",
    "requestId": "req_011CSHoEeqs5C35K2UUqR7Fy", "method": "POST", "path": "/v1/messages", "endpoint": "messages",
    "keyName": "alice-laptop", "developer": "alice", "costCenter": "platform", "repo": "org/payments",
    "branch": "main", "session": "54c1eb09-7f0e-4c2a-9a51-3d2f5b8e6a10", "sessionSource": "header",
    "requestClass": None, "agentId": None, "requestedModel": "claude-opus-5-5", "servedModel": "claude-sonnet-5-5",
    "pricedModel": "claude-sonnet-5-5", "priceSource": "genai-prices", "stream": True,
    "tokens": {"input": 42, "cacheWrite5m": 100, "cacheWrite1h": 0, "cacheRead": 2000, "output": 15,
               "webSearches": 0},
    "costUSD": "0.000684", "status": 200, "outcome": "ok", "errorType": None, "latencyMs": 1.708,
    "upstreamMs": 1.501, "addedMs": 0.158,
    "decision": {"action": "reroute", "reason": "reroute to claude-sonnet-5-5: ...", "model": "claude-sonnet-5-5"},
    "flags": [], "bundleVersion": "ff61bc82347b", "requestBytes": 1234, "exchangeId": "xg_3f9a1c2b4d5e_1a",
}


def line(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(LINE)
    data.update(changes)
    return data


def test_a_line_reads_as_typed_values() -> None:
    record = parse_record(line())
    assert record.time == datetime(2026, 11, 24, 9, 12, 3, 481220, tzinfo=UTC)
    assert record.cost == Decimal("0.000684")
    assert record.tokens == Tokens(input=42, cache_write_5m=100, cache_read=2000, output=15)
    assert record.request_bytes == 1234
    assert record.charged and record.forwarded_model == "claude-sonnet-5-5"


def test_write_is_the_inverse_of_read() -> None:
    written = orjson.loads(orjson.dumps(record_line(parse_record(line())), option=orjson.OPT_UTC_Z))
    assert written == LINE


def test_version_1_lines_are_read_without_request_bytes() -> None:
    old = line(schemaVersion=LEDGER_V1)
    del old["requestBytes"], old["exchangeId"]
    record = parse_record(old)
    assert record.request_bytes is None
    assert orjson.loads(orjson.dumps(record_line(record), option=orjson.OPT_UTC_Z)) == old


@pytest.mark.parametrize(("changes", "message"), [
    ({"schemaVersion": "spendgate.io/ledger/v9"}, "schemaVersion: 'spendgate.io/ledger/v9' is not one"),
    ({"costUSD": 0.000684}, "costUSD: must be a decimal string such as \"0.0125\", got the number 0.000684 "
                            "(a JSON number would lose cents)"),
    ({"costUSD": "-1"}, "costUSD: '-1' is not a non-negative decimal"),
    ({"costUSD": "1E+2"}, "costUSD: '1E+2' is not"),
    ({"time": "2026-11-24T09:12:03"}, "time: '2026-11-24T09:12:03' has no UTC offset"),
    ({"time": "yesterday"}, "time: 'yesterday' is not an RFC 3339 time"),
    ({"tokens": {"input": 1}}, "tokens.cacheWrite5m: missing"),
    ({"tokens": {**LINE["tokens"], "output": -3}}, "tokens.output: must be a non-negative integer, got the number -3"),
    ({"tokens": {**LINE["tokens"], "output": 1.5}}, "tokens.output: must be a non-negative integer"),
    ({"tokens": {**LINE["tokens"], "output": True}}, "tokens.output: must be a non-negative integer, got a boolean"),
    ({"decision": {"action": "reroute", "reason": "", "model": None}}, "decision.model: a reroute must name its model"),
    ({"decision": {"action": "maybe", "reason": "", "model": None}}, "decision.action: must be one of"),
    ({"outcome": "fine"}, "outcome: must be one of"),
    ({"developer": 7}, "developer: must be a string or null, got the number 7"),
    ({"status": "200"}, "status: must be a non-negative integer"),
    ({"flags": "estimated"}, "flags: must be a list of strings"),
    ({"requestBytes": "12"}, "requestBytes: must be a non-negative integer"),
    ({"latencyMs": "fast"}, "latencyMs: must be a non-negative number"),
])
def test_bad_values_are_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(LedgerLineError) as raised:
        parse_record(line(**changes))
    assert message in str(raised.value)


def test_a_missing_field_is_named() -> None:
    data = line()
    del data["servedModel"]
    with pytest.raises(LedgerLineError, match="servedModel: missing"):
        parse_record(data)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=5), children, max_size=3), max_leaves=8)


@given(field=st.sampled_from(sorted(LINE)), value=JSON_VALUES)
def test_any_value_in_any_field_is_a_record_or_a_named_error(field: str, value: Any) -> None:
    """A failure class, not examples: whatever a field holds, the reader answers with a record or a
    LedgerLineError that names the field, never another exception."""
    try:
        parse_record(line(**{field: value}))
    except LedgerLineError as error:
        assert str(error).startswith((field, "schemaVersion", f"{field}."))


@given(st.one_of(JSON_VALUES, st.lists(JSON_VALUES)))
def test_anything_that_is_not_an_object_is_refused(value: Any) -> None:
    if isinstance(value, dict):
        return
    with pytest.raises(LedgerLineError, match="a ledger line must be a JSON object"):
        parse_record(value)


def one_pass(raw: bytes) -> LedgerRecord | None:
    """What parse_line's one-pass reading makes of a line (None: it leaves the line to parse_record)."""
    try:
        return ledgerrecord._record_of(ledgerrecord._LINE_DECODER.decode(raw))
    except msgspec.MsgspecError:
        return None


def careful(raw: bytes) -> LedgerRecord | str:
    try:
        return parse_record(orjson.loads(raw))
    except (orjson.JSONDecodeError, LedgerLineError) as error:
        return f"{type(error).__name__}: {error}"


def test_the_one_pass_reading_knows_every_field_writers_write() -> None:
    assert {field.encode_name for field in msgspec.structs.fields(_Line)} == set(LINE)


def test_lines_as_writers_write_them_take_the_one_pass_reading() -> None:
    old = line(schemaVersion=LEDGER_V1)
    del old["requestBytes"], old["exchangeId"]
    forward = line(tokens=None, decision={"action": "forward", "reason": "", "model": None}, latencyMs=3)
    for data in (line(), old, forward, line(time="2026-11-24T10:12:03.481220+01:00", flags=["estimated"])):
        raw = orjson.dumps(data)
        assert one_pass(raw) is not None and one_pass(raw) == careful(raw) == parse_line(raw)


def agree(raw: bytes) -> None:
    """parse_line gives what the careful reading gives: the same record, or the same error."""
    quick, expected = one_pass(raw), careful(raw)
    assert quick is None or quick == expected
    try:
        assert parse_line(raw) == expected
    except (orjson.JSONDecodeError, LedgerLineError) as error:
        assert f"{type(error).__name__}: {error}" == expected


BIG = st.sampled_from([2**63, 2**64 - 1, 2**64, 2**70, -1, -(2**64), 1.0, 0.5, 1e300])


@given(field=st.sampled_from(sorted(LINE)), value=JSON_VALUES | BIG)
def test_the_one_pass_reading_agrees_with_the_careful_one(field: str, value: Any) -> None:
    """Whatever a field holds (numbers past what orjson keeps as integers too), the one-pass reading gives the
    careful reader's record or leaves the line to it."""
    agree(json.dumps(line(**{field: value})).encode())


@given(part=st.sampled_from(["tokens", "decision"]), key=st.sampled_from(["input", "output", "webSearches", "action",
                                                                         "reason", "model", "extra"]),
       value=JSON_VALUES | BIG | st.sampled_from(["forward", "reroute", "reject", "claude-haiku-5-5", ""]))
def test_the_one_pass_reading_agrees_inside_tokens_and_decision(part: str, key: str, value: Any) -> None:
    data = line()
    data[part][key] = value
    agree(json.dumps(data).encode())


@given(at=st.integers(min_value=0), noise=st.sampled_from([b" ", b"\n", b"\xef\xbb\xbf", b",", b"}", b"\"",
                                                          b',"developer":"mallory"', b',"costUSD":"9"', b"\x00"]))
def test_the_one_pass_reading_agrees_on_damaged_bytes(at: int, noise: bytes) -> None:
    """Bytes added anywhere (a repeated key, a byte order mark, stray punctuation): still the careful answer."""
    raw = orjson.dumps(LINE)
    at %= len(raw) + 1
    agree(raw[:at] + noise + raw[at:])
