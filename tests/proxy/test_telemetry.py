"""OpenTelemetry export against a real OpenTelemetry Collector on loopback.

The collector is built from the Go module proxy (hack/build-control-plane.sh otelcol: the OTLP
receiver and the file exporter) and writes what it received as OTLP JSON, which is what is checked:
the GenAI attributes and spendgate's of a streaming and a non-streaming request, a span parented to
the client's traceparent (forwarded upstream unchanged), the GenAI metrics, and that a collector that
is down changes nothing for the client.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from cluster.controlplane import binary_paths
from proxy.proxy_harness import Keys, StartGateway
from spendgate.proxy.telemetry import TelemetryConfig
from spendgate.testing.upstream import TEXT, MockUpstream

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Collector:
    endpoint: str
    traces: Path
    metrics: Path

    def spans(self) -> list[dict[str, Any]]:
        return [span for document in _documents(self.traces) for resource in document["resourceSpans"]
                for scope in resource["scopeSpans"] for span in scope["spans"]]

    def metric_points(self, name: str) -> list[dict[str, Any]]:
        """The latest export's points of a metric (they are cumulative)."""
        points: list[dict[str, Any]] = []
        for document in list(_documents(self.metrics))[-1:]:
            for resource in document["resourceMetrics"]:
                for scope in resource["scopeMetrics"]:
                    for metric in scope["metrics"]:
                        if metric["name"] == name:
                            data = metric.get("histogram") or metric.get("sum") or {}
                            points.extend(data.get("dataPoints", []))
        return points


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)


CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{port}
exporters:
  file/traces:
    path: {traces}
    flush_interval: 50ms
  file/metrics:
    path: {metrics}
    flush_interval: 50ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file/traces]
    metrics:
      receivers: [otlp]
      exporters: [file/metrics]
"""


@pytest.fixture(scope="module")
def otelcol() -> Path:
    return binary_paths(["otelcol"])["otelcol"]


@pytest.fixture
async def collector(otelcol: Path, tmp_path: Path) -> AsyncIterator[Collector]:
    port = free_port()
    config = tmp_path / "otelcol.yaml"
    found = Collector(f"http://127.0.0.1:{port}", tmp_path / "traces.json", tmp_path / "metrics.json")
    config.write_text(CONFIG.format(port=port, traces=found.traces, metrics=found.metrics))
    process = subprocess.Popen([str(otelcol), f"--config=file:{config}"], stdout=subprocess.DEVNULL,
                               stderr=(tmp_path / "otelcol.log").open("wb"))
    try:
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert process.poll() is None, (tmp_path / "otelcol.log").read_text()
                await asyncio.sleep(0.05)
        yield found
    finally:
        process.terminate()
        process.wait(timeout=10)


def exporting_to(endpoint: str) -> TelemetryConfig:
    return TelemetryConfig(f"{endpoint}/v1/traces", f"{endpoint}/v1/metrics", delay_seconds=0.05,
                           metric_interval_seconds=0.2)


async def eventually(check: Any, seconds: float = 15.0) -> Any:
    for _ in range(int(seconds / 0.05)):
        found = check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("not exported in time")


def attributes(span: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for attribute in span["attributes"]:
        value = attribute["value"]
        kind, raw = next(iter(value.items()))
        values[attribute["key"]] = int(raw) if kind == "intValue" else (
            [next(iter(item.values())) for item in raw["values"]] if kind == "arrayValue" else raw)
    return values


async def test_spans_and_metrics_reach_a_real_collector(start_gateway: StartGateway, collector: Collector,
                                                        upstream: MockUpstream, keys: Keys) -> None:
    running = await start_gateway(telemetry=exporting_to(collector.endpoint))
    client = anthropic.AsyncAnthropic(api_key=keys.alice, base_url=running.url, max_retries=0,
                                      default_headers={"x-spendgate-repo": "acme/payments",
                                                       "x-claude-code-session-id": "session-1"})
    await client.messages.create(model="claude-opus-5-5", max_tokens=64, messages=[{"role": "user", "content": "a"}],
                                 extra_headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
    assert upstream.requests[-1].header("traceparent") == TRACEPARENT  # forwarded unchanged
    async with client.messages.stream(model="claude-opus-5-5", max_tokens=64,
                                      messages=[{"role": "user", "content": "b"}]) as stream:
        await stream.get_final_message()
    ledger = running.ledger()

    spans = await eventually(lambda: (found := collector.spans()) and len(found) >= 2 and found)
    parented = next(span for span in spans if span.get("parentSpanId"))
    fresh = next(span for span in spans if not span.get("parentSpanId"))
    assert (parented["traceId"], parented["parentSpanId"]) == (TRACE_ID, PARENT_SPAN)
    assert parented["traceState"] == "vendor=1"
    assert fresh["traceId"] != TRACE_ID
    for span, line, stream in ((parented, ledger[0], False), (fresh, ledger[1], True)):
        found = attributes(span)
        assert span["name"] == "chat claude-opus-5-5" and span["kind"] == 3  # CLIENT
        usage = TEXT.usage
        assert found["gen_ai.operation.name"] == "chat" and found["gen_ai.provider.name"] == "anthropic"
        assert found["gen_ai.request.model"] == found["gen_ai.response.model"] == "claude-opus-5-5"
        assert found["gen_ai.usage.input_tokens"] == (usage["input_tokens"] + usage["cache_creation_input_tokens"]
                                                      + usage["cache_read_input_tokens"])
        assert found["gen_ai.usage.output_tokens"] == usage["output_tokens"]
        assert found["gen_ai.usage.cache_read.input_tokens"] == usage["cache_read_input_tokens"]
        assert found["gen_ai.usage.cache_creation.input_tokens"] == usage["cache_creation_input_tokens"]
        assert found.get("gen_ai.request.stream", False) is stream
        assert found["spendgate.cost.usd"] == line["costUSD"] and Decimal(found["spendgate.cost.usd"]) > 0
        assert (found["spendgate.cost_center"], found["spendgate.developer"]) == ("platform", "alice")
        assert found["spendgate.repository"] == "acme/payments"
        assert found["spendgate.session"] == found["gen_ai.conversation.id"] == "session-1"
        assert found["spendgate.decision"] == "forward" and found["http.response.status_code"] == 200
        assert keys.alice not in json.dumps(span)

    tokens = await eventually(lambda: [point for point in collector.metric_points("gen_ai.client.token.usage")
                                       if int(point["count"]) == 2])
    by_type = {next(a["value"]["stringValue"] for a in point["attributes"] if a["key"] == "gen_ai.token.type"): point
               for point in tokens}
    assert int(by_type["output"]["count"]) == 2 and by_type["output"]["sum"] == 2 * TEXT.usage["output_tokens"]
    cost = await eventually(lambda: collector.metric_points("spendgate.cost"))
    assert cost[0]["asDouble"] == pytest.approx(float(sum(Decimal(line["costUSD"]) for line in ledger)))
    assert await eventually(lambda: collector.metric_points("gen_ai.client.operation.duration"))


async def test_a_collector_that_is_down_changes_nothing_for_clients(start_gateway: StartGateway, keys: Keys,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    plain = await start_gateway()
    down = await start_gateway(telemetry=exporting_to(f"http://127.0.0.1:{free_port()}"))
    answers = []
    for running in (plain, down):
        async with running.client(keys.alice) as client:
            response = await client.post("/v1/messages", json={
                "model": "claude-opus-5-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]})
            answers.append((response.status_code, response.json()["content"], response.json()["usage"]))
    assert answers[0] == answers[1]
    assert down.ledger()[-1]["costUSD"] == plain.ledger()[-1]["costUSD"]

    async def failures() -> str:
        async with httpx.AsyncClient(base_url=down.admin_url) as admin:
            text = (await admin.get("/metrics")).text
        return text if 'spendgate_telemetry_export_failures_total{signal="traces"} 1.0' in text else ""

    metrics = ""
    for _ in range(200):
        metrics = await failures()
        if metrics:
            break
        await asyncio.sleep(0.05)
    assert "spendgate_telemetry_dropped_total 1.0" in metrics
