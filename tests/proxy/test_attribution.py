"""Attribution: identity from the key only; repository, branch, session, request class and agent as tags."""

from __future__ import annotations

import json

import pytest

from proxy.proxy_harness import Keys, Running, message_request
from spendgate.proxy.attribution import MAX_TAG_LENGTH, Identity, attribute, credential, session_from_user_id

ALICE = Identity(key_name="alice-laptop", developer="alice", cost_center="platform")
SESSION = "54c1eb09-4d5a-4f3b-9a52-0d7c2e1f9a11"


@pytest.mark.parametrize(("user_id", "expected"), [
    (json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": SESSION}), (SESSION, "metadata")),
    (f"user_{'a' * 64}_account__session_{SESSION}", (SESSION, "legacy-metadata")),
    ("an opaque id", None),
    ('{"not": "closed"', None),
    ('{"session_id": 7}', None),
    ("[]", None),
    (None, None),
    (42, None),
])
def test_session_from_metadata_user_id(user_id: object, expected: tuple[str, str] | None) -> None:
    assert session_from_user_id(user_id) == expected


def test_the_session_header_wins_over_metadata() -> None:
    tags = {b"x-claude-code-session-id": b"from-header"}
    attribution = attribute(ALICE, tags, json.dumps({"session_id": SESSION}))
    assert (attribution.session, attribution.session_source) == ("from-header", "header")


def test_tags_are_read_and_bounded() -> None:
    tags = {b"x-spendgate-repo": b"  org/app  ", b"x-spendgate-branch": b"feature/" + b"x" * 1000,
            b"x-claude-code-request-class": b"subagent", b"x-claude-code-agent-id": b"agent-7"}
    attribution = attribute(ALICE, tags, None)
    assert attribution.repo == "org/app"
    assert attribution.branch is not None and len(attribution.branch) == MAX_TAG_LENGTH
    assert (attribution.request_class, attribution.agent_id, attribution.session) == ("subagent", "agent-7", None)
    assert attribution.identity is ALICE


def test_credential_from_either_header() -> None:
    assert credential(b"sk-sg-a", b"Bearer sk-sg-b") == b"sk-sg-a"
    assert credential(None, b"bearer sk-sg-b ") == b"sk-sg-b"
    assert credential(None, b"Basic dXNlcjpwYXNz") is None
    assert credential(None, b"Bearer ") is None
    assert credential(b"", None) is None


async def test_the_ledger_attributes_each_request(gateway: Running, keys: Keys) -> None:
    headers = {"x-spendgate-repo": "org/payments", "x-spendgate-branch": "main", "x-claude-code-session-id": SESSION,
               "x-claude-code-request-class": "main", "x-claude-code-agent-id": "agent-1",
               # a client cannot move its spend with headers: identity comes from the key
               "x-spendgate-cost-center": "engineering", "x-spendgate-developer": "bob"}
    async with gateway.client(keys.alice, **headers) as client:
        await client.post("/v1/messages", json=message_request(stream=True))
    line = gateway.ledger()[-1]
    assert {field: line[field] for field in ("keyName", "developer", "costCenter", "repo", "branch", "session",
                                             "sessionSource", "requestClass", "agentId")} == {
        "keyName": "alice-laptop", "developer": "alice", "costCenter": "platform", "repo": "org/payments",
        "branch": "main", "session": SESSION, "sessionSource": "header", "requestClass": "main", "agentId": "agent-1"}


async def test_older_clients_are_attributed_by_metadata(gateway: Running, keys: Keys) -> None:
    user_id = f"user_{'a' * 64}_account__session_{SESSION}"
    async with gateway.client(keys.bob) as client:
        await client.post("/v1/messages", json=message_request(metadata={"user_id": user_id}))
    line = gateway.ledger()[-1]
    assert (line["developer"], line["costCenter"], line["session"], line["sessionSource"]) == (
        "bob", "engineering", SESSION, "legacy-metadata")
