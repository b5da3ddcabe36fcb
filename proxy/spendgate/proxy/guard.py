"""The client port's defences against hostile or broken clients, below the ASGI app.

uvicorn's HTTP protocol (httptools) bounds none of these on its own, so this subclass does:
- a connection that does not complete its request headers within `header_timeout` (slowloris, or a
  socket opened and left idle) is answered 408 `timeout_error` and closed;
- request headers larger than MAX_HEADER_BYTES are answered 431 and the connection closed;
- past `max_connections` open client connections, a new one is answered at once with an
  Anthropic-shaped 503 `overloaded_error` (`retry-after: 1`, so SDKs back off and retry) and closed;
  the admin port is a separate server and keeps answering;
- an idle keep-alive connection is closed after `idle_timeout` (uvicorn's `timeout_keep_alive`);
- malformed HTTP gets an Anthropic-shaped 400 instead of uvicorn's plain text.
A slow request body is the gateway's to time out (it can answer and record it in the ledger).
These refusals happen before there is a request to attribute, so they have no ledger line; they are
counted in `spendgate_client_connections_refused_total{reason}`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from spendgate.proxy.errors import error_body, new_request_id
from spendgate.proxy.metrics import ProxyMetrics

MAX_HEADER_BYTES: Final = 64 * 1024
REASONS: Final = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large",
                  503: "Service Unavailable"}


@dataclass(frozen=True)
class ClientLimits:
    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    body_timeout: float = 60.0
    max_connections: int = 4096


def canned_response(status: int, error_type: str, message: str, retry: bool = False) -> bytes:
    """A complete HTTP/1.1 answer in Anthropic's error shape, written straight to the socket."""
    request_id = new_request_id()
    body = error_body(error_type, message, request_id)
    headers = [f"HTTP/1.1 {status} {REASONS[status]}", "content-type: application/json",
               f"content-length: {len(body)}", f"request-id: {request_id}", "connection: close"]
    if retry:
        headers += ["retry-after: 1", "x-should-retry: true"]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header deadlines, a header size bound and a connection cap."""

    limits: ClassVar[ClientLimits]
    metrics: ClassVar[ProxyMetrics]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._awaiting_headers = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "overloaded_error", "the gateway has reached its connection limit "
                         f"({self.limits.max_connections}); retry shortly", "connections", retry=True)
            return
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # Judged after the parser had the bytes: a chunk may carry the headers' end and a large body.
        if self._awaiting_headers and self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, "invalid_request_error", f"request headers exceed {MAX_HEADER_BYTES} bytes",
                         "header_size")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._awaiting_headers = True  # the next bytes start the next request (the idle timer covers the wait)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._header_bytes = 0
        self._cancel_header_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "invalid_request_error", f"malformed HTTP request: {msg}", "malformed")

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.limits.header_timeout, self._headers_too_slow)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self._awaiting_headers and (self.cycle is None or self.cycle.response_complete):
            self._refuse(408, "timeout_error", "request headers did not arrive within "
                         f"{self.limits.header_timeout:g} s", "header_timeout")

    def _refuse(self, status: int, error_type: str, message: str, reason: str, retry: bool = False) -> None:
        self.metrics.connections_refused.labels(reason).inc()
        self._cancel_header_deadline()
        if not self.transport.is_closing():
            self.transport.write(canned_response(status, error_type, message, retry))
            self.transport.close()


def guarded_protocol(limits: ClientLimits, metrics: ProxyMetrics) -> type[GuardedProtocol]:
    """The protocol class for one server, with its limits (uvicorn instantiates it per connection)."""
    return type("ClientPortProtocol", (GuardedProtocol,), {"limits": limits, "metrics": metrics})
