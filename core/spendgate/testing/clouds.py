"""The cloud side of the test upstream: Amazon Bedrock's and Vertex AI's wire formats, and their checks.

MockUpstream (upstream.py) answers Bedrock's InvokeModel paths (a Message, or the events in AWS
event-stream framing) and Vertex AI's rawPredict paths (a Message, or SSE) when it is given the
credentials to check, and refuses requests that do not carry them, as the clouds do:

- Bedrock: the SigV4 signature is recomputed with botocore's own signer from the request as received
  (the signed headers, the raw path, the body) and the known secret; a mismatch, another key id,
  region or service, or a stale X-Amz-Date is a 403 InvalidSignatureException.
- Vertex AI: the bearer token must be one this server issued at its token endpoint (POST /token),
  which is where a service-account file's `token_uri` points in tests: google-auth sends it a JWT
  signed with the account's private key, checked here with google-auth's own verifier against
  the account's public certificate.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qs

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from google.auth import jwt

from spendgate.logic.eventstream import encode_frame

BEDROCK_PATH: Final = re.compile(r"/model/(?P<model>[^/]+)/(?P<operation>invoke|invoke-with-response-stream|"
                                 r"count-tokens)")
VERTEX_PATH: Final = re.compile(r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/anthropic/"
                                r"models/(?P<model>[^/:]+):(?P<operation>rawPredict|streamRawPredict)")
AUTHORIZATION: Final = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
                                  r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
                                  r"Signature=(?P<signature>[0-9a-f]{64})")
MAX_SKEW_SECONDS: Final = 300
CLOUD_PLATFORM: Final = "https://www.googleapis.com/auth/cloud-platform"
# google-auth addresses a service account's assertion to Google's endpoint, wherever token_uri sends it.
ASSERTION_AUDIENCE: Final = "https://oauth2.googleapis.com/token"


@dataclass(frozen=True)
class AwsAccount:
    access_key: str
    secret_key: str
    region: str
    session_token: str | None = None


def sigv4_problem(account: AwsAccount, method: str, host: str, raw_path: str, headers: dict[str, str],
                  body: bytes) -> str | None:
    """Why the request's SigV4 signature is not the account's, or None when it is. `headers` lower-cased."""
    found = AUTHORIZATION.fullmatch(headers.get("authorization", ""))
    if found is None:
        return "missing or malformed SigV4 Authorization header"
    if found["key"] != account.access_key:
        return f"unknown access key {found['key']}"
    if (found["region"], found["service"]) != (account.region, "bedrock"):
        return f"signed for {found['region']}/{found['service']}, not {account.region}/bedrock"
    stamp = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "missing or malformed X-Amz-Date"
    if abs(time.time() - signed_at.timestamp()) > MAX_SKEW_SECONDS or found["date"] != stamp[:8]:
        return "the signature is stale"
    if account.session_token is not None and headers.get("x-amz-security-token") != account.session_token:
        return "missing or wrong X-Amz-Security-Token"
    names = found["signed"].split(";")
    if "host" not in names or any(name not in headers for name in names):
        return "a signed header is missing"
    request = AWSRequest(method=method, url=f"http://{host}{raw_path}", data=body,
                         headers={name: headers[name] for name in names})
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(account.access_key, account.secret_key, account.session_token), "bedrock",
                       account.region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return None if hmac.compare_digest(expected, found["signature"]) else "signature mismatch"


def bedrock_chunk(event: dict[str, Any]) -> bytes:
    """One streamed Anthropic event as Bedrock frames it: base64 JSON in a chunk event (with its padding)."""
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    payload = json.dumps({"bytes": base64.b64encode(data).decode(), "p": "abcdefghijklmnopqrstuvwxyzABCDEF"[
        :len(data) % 32]}).encode()
    return encode_frame({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
                        payload)


def with_invocation_metrics(event: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """Bedrock adds its own counts to the final message_stop."""
    if event.get("type") != "message_stop":
        return event
    return {**event, "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": usage.get("input_tokens", 0), "outputTokenCount": usage.get("output_tokens", 0),
        "invocationLatency": 120, "firstByteLatency": 40}}


@dataclass
class GoogleIssuer:
    """The OAuth token endpoint google-auth's service-account credentials call, and the tokens it issued."""

    account_email: str
    certificate_pem: bytes  # the account's public certificate (google-auth verifies RS256 against it)
    token_uri: str = ""  # where the service-account file sends its grants (set once the server has its port)
    issued: set[str] = field(default_factory=set)

    def grant(self, form: bytes) -> tuple[int, dict[str, Any]]:
        fields = {name: values[0] for name, values in parse_qs(form.decode()).items()}
        if fields.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {"error": "unsupported_grant_type"}
        try:
            claims = jwt.decode(fields.get("assertion", ""), certs=self.certificate_pem,  # type: ignore[no-untyped-call]
                                audience=ASSERTION_AUDIENCE)
        except ValueError as error:
            return 400, {"error": "invalid_grant", "error_description": str(error)}
        if claims.get("iss") != self.account_email or CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
            return 400, {"error": "invalid_scope"}
        token = "ya29.mock-" + secrets.token_urlsafe(24)
        self.issued.add(token)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def problem(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token not in self.issued:
            return "Request had invalid authentication credentials. Expected OAuth 2 access token."
        return None


def vertex_unauthenticated(message: str) -> bytes:
    return json.dumps({"error": {"code": 401, "message": message, "status": "UNAUTHENTICATED"}}).encode()


def bedrock_forbidden(message: str) -> bytes:
    return json.dumps({"message": message}).encode()
