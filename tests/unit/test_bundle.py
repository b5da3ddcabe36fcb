"""A bundle document is verified before anyone uses it; each defect gets a message that names it."""

from __future__ import annotations

import json

import pytest

from spendgate.policy.bundle import Bundle, BundleError, dumps, loads, sign


def document() -> dict[str, object]:
    data: dict[str, object] = json.loads(dumps(sign(Bundle())))
    return data


def test_round_trip() -> None:
    signed = sign(Bundle())
    assert loads(dumps(signed)) == signed
    assert len(signed.version) == 12


@pytest.mark.parametrize(("data", "words"), [
    (b"{not json", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (json.dumps({"contentHash": "x", "bundle": {"schemaVersion": "spendgate.io/bundle/v0"}}).encode(),
     "this proxy reads 'spendgate.io/bundle/v1'"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_malformed_documents(data: bytes, words: str) -> None:
    with pytest.raises(BundleError, match=words.replace("(", r"\(").replace(")", r"\)")):
        loads(data)


def test_tampered_content_is_refused() -> None:
    data = document()
    bundle = data["bundle"]
    assert isinstance(bundle, dict)
    bundle["defaultCascade"] = ["claude-opus-5-5"]
    with pytest.raises(BundleError, match="does not match its content"):
        loads(json.dumps(data))


def test_schema_violation_names_the_problem() -> None:
    data = document()
    bundle = data["bundle"]
    assert isinstance(bundle, dict)
    bundle["keys"] = [{"hash": "not-a-hash", "name": "k", "developer": "d", "costCenter": "c"}]
    with pytest.raises(BundleError, match="does not match the schema"):
        loads(json.dumps(data))
