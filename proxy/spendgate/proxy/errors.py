"""Errors the proxy itself raises, in Anthropic's shape, so every client renders them as it would the API's.

`{"type":"error","error":{"type":...,"message":...},"request_id":...}` with the matching status
and a `request-id` header. Messages name the problem and never carry a key, a header value or
a stack trace. Upstream errors are never wrapped: they pass through with their own status and body.
"""

from __future__ import annotations

import secrets

import orjson

# The status each error type goes with, as the Messages API uses them.
STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "billing_error": 429,
    "api_error": 502,  # the proxy raises it when the upstream is unreachable: a bad gateway
    "timeout_error": 504,
    "overloaded_error": 529,
}


class ProxyError(Exception):
    """Stops the request: the client gets this error, the ledger records it."""

    def __init__(self, error_type: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status if status is not None else STATUS[error_type]


def new_request_id() -> str:
    """For responses the upstream did not answer (or answered without one)."""
    return "req_proxy_" + secrets.token_hex(12)


def error_body(error_type: str, message: str, request_id: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message},
                         "request_id": request_id})


def sse_error_event(error_type: str, message: str) -> bytes:
    """How a stream that already answered 200 reports a failure: an SSE `error` event, as the API does."""
    data = orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})
    return b"event: error\ndata: " + data + b"\n\n"
