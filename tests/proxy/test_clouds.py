"""Claude on Amazon Bedrock and Google Vertex AI through the gateway, with the official SDK's own clients.

The upstream speaks each cloud's wire format and checks its credentials as the cloud does (a SigV4
signature recomputed with botocore's signer; a Google access token it issued itself to google-auth,
for a JWT signed with a service account's key): a request the gateway signed wrongly would fail.
The developer presents the virtual key as Claude Code does on these clouds (a bearer token:
AWS_BEARER_TOKEN_BEDROCK, or the Vertex access token with CLAUDE_CODE_SKIP_VERTEX_AUTH), or as a
custom header beside the client's own SigV4 signature, which the gateway drops and replaces.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from genai_prices import Usage, calc_price

from proxy.proxy_harness import Keys, Running, StartGateway, assert_anthropic_error
from spendgate.adapters.journal import SpendJournal
from spendgate.logic.tracker import SpendTracker
from spendgate.proxy.aws import SigV4Signer
from spendgate.proxy.enforce import BudgetAdmission
from spendgate.proxy.gcp import GoogleToken
from spendgate.proxy.server import CloudUpstream
from spendgate.testing.clouds import AwsAccount, GoogleIssuer
from spendgate.testing.upstream import SCENARIOS, TEXT, Failure, MockUpstream, Reply

REGION = "us-east-1"
ACCOUNT = AwsAccount("TEST-ORGANISATION-KEY-ID", "organisation-secret-key-not-real", REGION, "org-session-token")
BEDROCK_MODEL = "us.anthropic.claude-opus-5-5-v1:0"
VERTEX_MODEL = "claude-opus-5-5"
PROJECT = "acme-ai"
SERVICE_ACCOUNT = "spendgate-gateway@acme-ai.iam.gserviceaccount.com"
DOLLAR_BUDGET = """
apiVersion: spendgate.io/v1alpha1
kind: Budget
metadata: {name: alice-dollar, namespace: ai-budgets}
spec:
  costCenter: platform
  scope: {kind: Developer, name: alice}
  limitUSD: "1.00"
  window: {period: Daily, timeZone: Europe/Berlin}
"""


def list_price(provider: str, model: str, usage: dict[str, Any]) -> Decimal:
    """The cost genai-prices gives directly (its own engine, not the gateway's cached rates)."""
    total_input = (usage["input_tokens"] + usage.get("cache_creation_input_tokens", 0)
                   + usage.get("cache_read_input_tokens", 0))
    price = calc_price(Usage(input_tokens=total_input, output_tokens=usage["output_tokens"],
                             cache_read_tokens=usage.get("cache_read_input_tokens", 0),
                             cache_write_tokens=usage.get("cache_creation_input_tokens", 0)),
                       model, provider_id=provider, genai_request_timestamp=datetime.now(UTC).replace(tzinfo=None))
    return Decimal(price.total_price)


@pytest.fixture
def organisation_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The organisation's AWS credentials, where botocore's chain finds them (and nothing else it could find)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCOUNT.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ACCOUNT.secret_key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", ACCOUNT.session_token or "")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def service_account(tmp_path: Path) -> tuple[Path, bytes]:
    """A Google service-account key file (a fresh RSA key) and its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps({"type": "service_account", "project_id": PROJECT, "private_key_id": "k1",
                                "private_key": private, "client_email": SERVICE_ACCOUNT, "client_id": "1",
                                "token_uri": "set below, once the token endpoint has its port"}))
    return path, public


@pytest.fixture
async def clouds(upstream: MockUpstream, organisation_aws: None, service_account: tuple[Path, bytes],
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[MockUpstream]:
    """The test upstream, answering as Bedrock and Vertex AI with their checks on."""
    path, public = service_account
    upstream.aws = ACCOUNT
    upstream.google = GoogleIssuer(SERVICE_ACCOUNT, public, token_uri=f"{upstream.url}/token")
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "token_uri": upstream.google.token_uri}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    yield upstream


async def cloud_settings(upstream: MockUpstream) -> dict[str, Any]:
    signer = SigV4Signer(REGION)
    token = await asyncio.to_thread(GoogleToken)  # its first token comes from the upstream, on this loop
    return {"bedrock": CloudUpstream(upstream.url, signer, signer.refresh_forever),
            "vertex": CloudUpstream(upstream.url, token, token.refresh_forever)}


@pytest.fixture
async def gateway(start_gateway: StartGateway, clouds: MockUpstream) -> Running:
    return await start_gateway(**await cloud_settings(clouds))


def bedrock_client(running: Running, key: str, **options: Any) -> anthropic.AsyncAnthropicBedrock:
    return anthropic.AsyncAnthropicBedrock(base_url=running.url, aws_region=REGION, max_retries=0,
                                           **({"api_key": key} | options))


def vertex_client(running: Running, key: str) -> anthropic.AsyncAnthropicVertex:
    return anthropic.AsyncAnthropicVertex(base_url=f"{running.url}/v1", region="us-east5", project_id=PROJECT,
                                          access_token=key, max_retries=0)


def last_line(running: Running) -> dict[str, Any]:
    return running.ledger()[-1]


async def test_bedrock_with_the_sdks_bedrock_client_streaming_and_not(gateway: Running, clouds: MockUpstream,
                                                                        keys: Keys) -> None:
    client = bedrock_client(gateway, keys.alice)
    message = await client.messages.create(model=BEDROCK_MODEL, max_tokens=256,
                                           messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == TEXT.content[0]["text"]  # type: ignore[union-attr]
    expected = list_price("aws", BEDROCK_MODEL, TEXT.usage)
    line = last_line(gateway)
    assert (line["path"], line["status"], line["developer"]) == (f"/model/{BEDROCK_MODEL}/invoke", 200, "alice")
    assert Decimal(line["costUSD"]) == expected > 0

    async with client.messages.stream(model=BEDROCK_MODEL, max_tokens=256,
                                      messages=[{"role": "user", "content": "hi"}]) as stream:
        final = await stream.get_final_message()
    assert final.usage.output_tokens == TEXT.usage["output_tokens"]
    streamed = last_line(gateway)
    assert streamed["path"] == f"/model/{BEDROCK_MODEL}/invoke-with-response-stream"
    assert Decimal(streamed["costUSD"]) == expected
    assert "estimated" not in streamed["flags"]
    received = clouds.requests[-1]
    assert received.header("x-amz-security-token") == ACCOUNT.session_token  # signed by the gateway
    assert keys.alice not in json.dumps(received.headers)  # the virtual key never goes upstream
    sent = json.loads(received.body)  # the body as the SDK sent it: the model is in the path
    assert "anthropic_version" in sent and "model" not in sent


async def test_bedrock_bytes_reach_the_client_unchanged(gateway: Running, clouds: MockUpstream, keys: Keys) -> None:
    """The event stream is relayed byte for byte, whatever its chunking."""
    clouds.enqueue(Reply(TEXT, chunk_size=7))
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.post(f"/model/{BEDROCK_MODEL}/invoke-with-response-stream", json={
            "anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}]}, headers={"authorization": f"Bearer {keys.alice}"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.amazon.eventstream"
    assert response.content == bytes(clouds.requests[-1].sent)
    assert Decimal(last_line(gateway)["costUSD"]) == list_price("aws", BEDROCK_MODEL, TEXT.usage)


async def test_a_clients_own_sigv4_signature_is_replaced(gateway: Running, clouds: MockUpstream, keys: Keys) -> None:
    """A Bedrock client that signs with a developer's AWS keys, the virtual key in a custom header
    (ANTHROPIC_CUSTOM_HEADERS): the developer's signature is dropped, the organisation's goes upstream."""
    client = bedrock_client(gateway, keys.alice, api_key=None, aws_access_key="TEST-DEVELOPER-KEY-ID",
                            aws_secret_key="developer-secret", default_headers={"x-api-key": keys.alice})
    await client.messages.create(model=BEDROCK_MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    authorization = clouds.requests[-1].header("authorization") or ""
    assert ACCOUNT.access_key in authorization and "TEST-DEVELOPER" not in authorization
    assert last_line(gateway)["developer"] == "alice"


async def test_vertex_with_the_sdks_vertex_client_streaming_and_not(gateway: Running, clouds: MockUpstream,
                                                                      keys: Keys) -> None:
    client = vertex_client(gateway, keys.bob)
    message = await client.messages.create(model=VERTEX_MODEL, max_tokens=256,
                                           messages=[{"role": "user", "content": "hi"}])
    assert message.usage.output_tokens == TEXT.usage["output_tokens"]
    expected = list_price("google", VERTEX_MODEL, TEXT.usage)
    line = last_line(gateway)
    assert line["developer"] == "bob" and line["path"].endswith(f"/models/{VERTEX_MODEL}:rawPredict")
    assert Decimal(line["costUSD"]) == expected > 0
    async with client.messages.stream(model=VERTEX_MODEL, max_tokens=256,
                                      messages=[{"role": "user", "content": "hi"}]) as stream:
        await stream.get_final_message()
    streamed = last_line(gateway)
    assert streamed["path"].endswith(":streamRawPredict") and Decimal(streamed["costUSD"]) == expected
    received = clouds.requests[-1]
    assert (received.header("authorization") or "").removeprefix("Bearer ") in clouds.google.issued  # type: ignore[union-attr]
    assert keys.bob not in json.dumps(received.headers)


async def test_one_budget_covers_all_three_providers(start_gateway: StartGateway, clouds: MockUpstream,
                                                     policies: Path, keys: Keys, tmp_path: Path) -> None:
    """alice's $1.00 budget: what she spends through Anthropic, Bedrock and Vertex AI all counts."""
    (policies / "40-dollar.yaml").write_text(DOLLAR_BUDGET)
    budgets = BudgetAdmission(SpendTracker(SpendJournal(tmp_path / "journal")))
    running = await start_gateway(admission=budgets, spend_sink=budgets, **await cloud_settings(clouds))
    anthropic_client = anthropic.AsyncAnthropic(api_key=keys.alice, base_url=running.url, max_retries=0)
    used: list[str] = []
    for call in (
        lambda: anthropic_client.messages.with_raw_response.create(
            model="claude-opus-5-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]),
        lambda: bedrock_client(running, keys.alice).messages.with_raw_response.create(
            model=BEDROCK_MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]),
        lambda: vertex_client(running, keys.alice).messages.with_raw_response.create(
            model=VERTEX_MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]),
        lambda: anthropic_client.messages.with_raw_response.create(
            model="claude-opus-5-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]),
    ):
        response = await call()
        used.append(response.headers["x-spendgate-budget-used"])
    spent = sum((Decimal(line["costUSD"]) for line in running.ledger()), Decimal(0))
    # Each answer reports the budget as it stood before it: the fourth sees the first three's spend.
    assert used[0] == "0.0%"
    first_three = sum((Decimal(line["costUSD"]) for line in running.ledger()[:3]), Decimal(0))
    assert used[3] == f"{first_three * 100:.1f}%"
    paths = [line["path"] for line in running.ledger()]
    assert paths[0] == paths[3] == "/v1/messages" and paths[1].startswith("/model/") and ":rawPredict" in paths[2]
    assert spent > first_three


async def test_wrong_organisation_credentials_are_refused_upstream(start_gateway: StartGateway, clouds: MockUpstream,
                                                                   keys: Keys,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks are real: a gateway signing with another secret gets the cloud's 403, passed through."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-organisations-secret")
    running = await start_gateway(**await cloud_settings(clouds))
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        await bedrock_client(running, keys.alice).messages.create(
            model=BEDROCK_MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert "signature mismatch" in str(refused.value)
    assert last_line(running)["status"] == 403


async def test_a_stream_cut_off_ends_with_an_exception_frame_and_is_billed(gateway: Running, clouds: MockUpstream,
                                                                          keys: Keys) -> None:
    clouds.enqueue(Reply(TEXT, fail=Failure.RESET, fail_after=4))
    client = bedrock_client(gateway, keys.alice)
    with pytest.raises(anthropic.APIError):
        async with client.messages.stream(model=BEDROCK_MODEL, max_tokens=64,
                                          messages=[{"role": "user", "content": "hi"}]) as stream:
            await stream.get_final_message()
    line = last_line(gateway)
    assert line["outcome"] == "upstream_failed" and "estimated" in line["flags"]
    assert Decimal(line["costUSD"]) > 0


async def test_without_a_provider_its_paths_say_how_to_enable_it(start_gateway: StartGateway, keys: Keys) -> None:
    running = await start_gateway()
    async with running.client(keys.alice) as client:
        bedrock = await client.post(f"/model/{BEDROCK_MODEL}/invoke", json={"max_tokens": 1, "messages": []})
        vertex = await client.post(f"/v1/projects/{PROJECT}/locations/us-east5/publishers/anthropic/models/"
                                   f"{VERTEX_MODEL}:rawPredict", json={"max_tokens": 1, "messages": []})
    assert "--bedrock-upstream" in assert_anthropic_error(bedrock, 404, "not_found_error")
    assert "--vertex-upstream" in assert_anthropic_error(vertex, 404, "not_found_error")


@pytest.mark.parametrize("path", ["/model/./invoke", "/model/a b/invoke", "/model/x/converse",
                                  f"/v1/projects/{PROJECT}/locations/l/publishers/anthropic/models/m:predict",
                                  f"/v1/projects/{PROJECT}/locations/l/publishers/google/models/m:rawPredict"])
async def test_malformed_cloud_paths_are_refused(gateway: Running, clouds: MockUpstream, keys: Keys,
                                                 path: str) -> None:
    seen = len(clouds.requests)
    async with gateway.client(keys.alice) as client:
        response = await client.post(path, json={"max_tokens": 1, "messages": []})
    assert response.status_code in (400, 404)
    assert response.json()["type"] == "error"
    assert len(clouds.requests) == seen  # nothing went upstream


async def test_unknown_scenarios_still_fail_closed(gateway: Running, clouds: MockUpstream, keys: Keys) -> None:
    """An upstream error on Bedrock passes through with its status and body."""
    clouds.enqueue(SCENARIOS["overloaded"])
    with pytest.raises(anthropic.APIStatusError) as failed:
        await bedrock_client(gateway, keys.alice).messages.create(
            model=BEDROCK_MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 529
    assert last_line(gateway)["outcome"] == "upstream_error"
