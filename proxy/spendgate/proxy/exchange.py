"""One request's facts, collected along the hot path and settled once at its end."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from spendgate.proxy.admission import FORWARD, Decision, Endpoint
from spendgate.proxy.attribution import Attribution, Identity

# Flags the proxy adds to the pricing's own (spendgate.logic.pricing); docs/ledger.md lists them all.
ESTIMATED: Final = "estimated"  # the cost is an estimate: a stream ended before its final usage, or see below
NO_USAGE: Final = "no_usage"  # the response ended before any usage arrived: nothing could be priced
USAGE_MISSING: Final = "usage_missing"  # a success without readable usage: billed at the admission estimate
USAGE_UNREADABLE: Final = "usage_unreadable"  # compressed in a way we cannot read, or too large to keep whole
INTERRUPTED: Final = "interrupted"  # the proxy stopped mid-request; settled at its estimate on restart
# A settlement step failed; the step is named, the request still has its line and released its hold.
PRICING_FAILED: Final = "pricing_failed"
METRICS_FAILED: Final = "metrics_failed"
SCAN_FAILED: Final = "scan_failed"  # the stream scanner broke: the stream went on, usage as far as read
JOURNAL_FAILED: Final = "journal_failed"  # the start line could not be journaled: not SIGKILL-safe
INTERNAL_ERROR: Final = "internal_error"  # a gateway bug ended the request (logged with its traceback)
# A downgrade on Bedrock or Vertex found no id of the cascade model that provider's prices know: forwarded as asked.
REROUTE_UNMAPPED: Final = "reroute_unmapped"

_BOOT: Final = secrets.token_hex(6)  # exchange ids are unique across restarts and proxies without coordination
_sequence = itertools.count(1)


def new_exchange_id() -> str:
    """The gateway's own id of a request: in its ledger line and its journal lines."""
    return f"xg_{_BOOT}_{next(_sequence):x}"


class Outcome(StrEnum):
    OK = "ok"
    INTERRUPTED = "interrupted"  # the proxy was killed while the request was in flight (settled on restart)
    UPSTREAM_ERROR = "upstream_error"  # the upstream answered with an error status or a mid-stream error event
    UPSTREAM_FAILED = "upstream_failed"  # unreachable, timed out, or the connection broke
    CLIENT_DISCONNECTED = "client_disconnected"
    REJECTED = "rejected"  # refused by admission
    PROXY_ERROR = "proxy_error"  # refused by the proxy: bad request, unknown key, body too large, unknown path


@dataclass(slots=True)
class Exchange:
    received_at: datetime  # aware, UTC
    started: float  # perf_counter() at arrival
    method: str
    path: str
    id: str = field(default_factory=new_exchange_id)
    settled: bool = False  # settle runs exactly once, whatever path the request takes
    endpoint: Endpoint | None = None
    bundle_version: str = ""
    provider: str = "anthropic"  # gen_ai.provider.name of the route: anthropic, aws.bedrock, gcp.vertex_ai
    traceparent: bytes | None = None  # the client's W3C trace context (forwarded unchanged; telemetry continues it)
    tracestate: bytes | None = None
    request_id: str = ""
    identity: Identity | None = None  # from the key, as soon as it is checked
    attribution: Attribution | None = None  # identity and tags, once the body is read
    requested_model: str | None = None
    model_in_path: bool = False  # Bedrock and Vertex: the path's model id is what is priced (it says the region)
    forwarded_model: str | None = None
    served_model: str | None = None
    stream: bool = False
    request_bytes: int | None = None  # the body's size, once read (admission's input-token estimate)
    decision: Decision = FORWARD
    admitted: bool = False  # admission let it through (forward or reroute): the spend sink will hear of it
    status: int = 0
    outcome: Outcome = Outcome.OK
    error_type: str | None = None
    usage: dict[str, Any] | None = None
    refused_before_output: bool = False
    flags: set[str] = field(default_factory=set)
    upstream_sent: float | None = None  # perf_counter() when the request went upstream
    upstream_done: float | None = None  # ... when its response was in hand (headers, or the whole body)
    first_byte: float | None = None  # ... when the client's response started
    finished: float | None = None  # ... when it was settled

    @property
    def upstream_seconds(self) -> float | None:
        """How long the upstream took to answer (headers of a stream, the whole body otherwise)."""
        if self.upstream_sent is None or self.upstream_done is None:
            return None
        return self.upstream_done - self.upstream_sent

    @property
    def added_seconds(self) -> float | None:
        """The proxy's own share of the time to the client's first byte: all but the upstream's wait."""
        if self.first_byte is None:
            return None
        return self.first_byte - self.started - (self.upstream_seconds or 0.0)

    @property
    def total_seconds(self) -> float | None:
        return self.finished - self.started if self.finished is not None else None

    @property
    def model(self) -> str | None:
        """The model to price: the response's, else the one sent upstream. On Bedrock and Vertex the id in
        the path (its geography prefix says which price applies), not the response's plain model name."""
        if self.model_in_path:
            return self.forwarded_model or self.requested_model
        return self.served_model or self.forwarded_model or self.requested_model
