"""The gateway reads three fields of a request body without building the rest: for any body, it reads
what a full parse would, and refuses what a full parse would refuse, with the same words."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendgate.proxy.errors import ProxyError
from spendgate.proxy.gateway import parse_head

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)
FIELDS = st.fixed_dictionaries({}, optional={"model": JSON, "stream": JSON, "metadata": JSON, "messages": JSON})


@given(st.one_of(FIELDS, JSON))
def test_reads_what_a_full_parse_reads(document: Any) -> None:
    body = orjson.dumps(document)
    if not isinstance(document, dict):
        with pytest.raises(ProxyError, match="request body must be a JSON object"):
            parse_head(body, model_in_body=False)
        return
    head = parse_head(body, model_in_body=False)
    assert (head.model, head.stream, head.metadata) == (
        document.get("model"), document.get("stream"), document.get("metadata"))


@given(st.binary(max_size=64) | FIELDS.map(orjson.dumps).flatmap(
    lambda body: st.integers(0, len(body)).map(lambda cut: body[:cut] + b"\xff" + body[cut:])))
def test_any_bytes_are_read_as_json_or_refused_in_a_full_parse_s_words(body: bytes) -> None:
    try:
        head = parse_head(body, model_in_body=False)
    except ProxyError as refused:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            assert refused.message == f"request body is not valid JSON: {error}"
        else:
            assert not isinstance(document, dict) and refused.message == "request body must be a JSON object"
        return
    document = json.loads(body, parse_constant=refuse_constant)  # JSON as the standard has it
    assert isinstance(document, dict) and head.model == document.get("model")


def refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def test_a_body_without_a_model_is_refused_where_the_body_must_name_it() -> None:
    with pytest.raises(ProxyError, match="model: a model id"):
        parse_head(b'{"messages": []}')
    assert parse_head(b'{"messages": []}', model_in_body=False).model is None
