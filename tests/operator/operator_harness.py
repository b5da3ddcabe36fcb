"""Running the operator in-process against the suite's API server, with an injected clock, and a
local webhook receiver standing in for Slack and friends."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import kubernetes

from cluster.controlplane import ControlPlane
from spendgate.adapters.kube import Kube, load_configuration
from spendgate.adapters.reporter import SpendReporter
from spendgate.api.v1alpha1 import GROUP, VERSION, SpendReportSpec
from spendgate.logic.reportstate import ReportState
from spendgate.operator.config import OperatorConfig
from spendgate.operator.main import serve
from spendgate.operator.metrics import OperatorMetrics

T = TypeVar("T")
TEST_LABEL = "spendgate-test"
PLURALS = {"CostCenter": "costcenters", "Budget": "budgets", "RoutingPolicy": "routingpolicies",
           "SpendReport": "spendreports", "AuditLog": "auditlogs",
           "FleetSpend": "fleetspends"}



class Api:
    """Reads and writes for the tests, through the Python client (faster than kubectl per poll)."""

    def __init__(self, control_plane: ControlPlane) -> None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(control_plane.kubeconfig), client_configuration=configuration)
        self.client = kubernetes.client.ApiClient(configuration)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            if namespace is None:
                found = self.custom.get_cluster_custom_object(GROUP, VERSION, PLURALS[kind], name)
            else:
                found = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return None
            raise
        result: dict[str, Any] = found
        return result

    def status(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        found = self.get(kind, name, namespace) or {}
        status: dict[str, Any] = found.get("status") or {}
        return status

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.core.read_namespaced_config_map(name, namespace)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return None
            raise
        result: dict[str, Any] = self.client.sanitize_for_serialization(found)
        return result

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        listed = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        events: list[dict[str, Any]] = self.client.sanitize_for_serialization(listed)["items"]
        return events

    def create_secret(self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str] | None = None,
                      annotations: dict[str, str] | None = None) -> None:
        body = {"metadata": {"name": name, "namespace": namespace, "labels": labels or {},
                             "annotations": annotations or {}}, "stringData": data}
        self.core.create_namespaced_secret(namespace, body)



class ManualClock:
    """A clock tests move by hand; the reconciler looks at it every `longest_nap` seconds."""

    longest_nap = 0.05

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, instant: datetime) -> None:
        self._now = instant


class FakeProxy:
    """A proxy that only reports spend, through the real report protocol, driven synchronously."""

    def __init__(self, control_plane: ControlPlane, namespace: str, name: str) -> None:
        self.state = ReportState(name)
        self._configuration = load_configuration(control_plane.kubeconfig, None)
        self._namespace, self._name = namespace, name

    def spend(self, budget: str, window: str, usd: str, requests: int = 1) -> None:
        self.state.add(budget, window, Decimal(usd), requests)

    def report(self, now: datetime) -> bool:
        return self._run(lambda reporter: reporter.report(now))

    def resume(self) -> None:
        self._run(lambda reporter: reporter.resume())

    def send(self, expected_sequence: int, report: SpendReportSpec) -> None:
        self._run(lambda reporter: reporter.send(expected_sequence, report))

    def _run(self, action: Callable[[SpendReporter], Awaitable[T]]) -> T:
        async def run() -> T:
            kube = Kube(self._configuration)
            try:
                return await action(SpendReporter(kube, self._namespace, self._name, self.state))
            finally:
                await kube.close()

        return asyncio.run(run())


class OperatorThread:
    """One operator instance in its own thread and event loop: start, stop, start again."""

    def __init__(self, config: OperatorConfig, clock: ManualClock) -> None:
        self.config = config
        self.clock = clock
        self.metrics = OperatorMetrics()
        self.exit_code: int | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spendgate-operator", daemon=True)

    def start(self) -> OperatorThread:
        self._thread.start()
        assert self._started.wait(10), "operator thread did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "operator did not stop within 30s"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._started.set()
        self.exit_code = await serve(self.config, self.clock, self._stop, self.metrics)


@dataclass
class Received:
    path: str
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """Answers POSTs with the status planned for their path (default 200) and records them."""

    statuses: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer, in order
    received: list[Received] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.attempts[self.path] = receiver.attempts.get(self.path, 0) + 1
                planned = receiver.statuses.get(self.path) or [200]
                status = planned.pop(0) if len(planned) > 1 else planned[0]
                if status < 300:
                    receiver.received.append(Received(self.path, body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def at(self, path: str) -> list[dict[str, Any]]:
        return [r.body for r in self.received if r.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serving(receiver: WebhookReceiver) -> Iterator[WebhookReceiver]:
    try:
        yield receiver
    finally:
        receiver.close()


def manifests(*documents: dict[str, Any]) -> str:
    return "\n---\n".join(json.dumps(document) for document in documents)


def cost_center(name: str, run_id: str, parent: str | None = None, members: tuple[str, ...] = (),
                targets: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"code": f"CC-{name}", "members": list(members), "alertTargets": list(targets)}
    if parent:
        spec["parent"] = parent
    return {"apiVersion": "spendgate.io/v1alpha1", "kind": "CostCenter",
            "metadata": {"name": name, "labels": {TEST_LABEL: run_id}}, "spec": spec}


def budget(name: str, namespace: str, cost_center: str, limit: str = "100.00", period: str = "Daily",
           time_zone: str = "Europe/Berlin", scope: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    spec = {"costCenter": cost_center, "scope": scope or {"kind": "CostCenter"}, "limitUSD": limit,
            "window": {"period": period, "timeZone": time_zone}, **extra}
    return {"apiVersion": "spendgate.io/v1alpha1", "kind": "Budget",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def routing_policy(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "spendgate.io/v1alpha1", "kind": "RoutingPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"cascade": ["claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"], "rules": []}}
