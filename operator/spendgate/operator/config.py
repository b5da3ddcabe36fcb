"""What one operator instance watches, where it writes, and how fast it reacts."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

DEFAULT_NAMESPACE = "spendgate-system"


@dataclass(frozen=True)
class OperatorConfig:
    # The operator's own namespace: the shared gateway and its bundle, alert-target Secrets,
    # virtual-key Secrets and the proxies' SpendReports live here.
    namespace: str = DEFAULT_NAMESPACE
    # Namespaces that hold Budgets and RoutingPolicies (CostCenters are cluster-scoped).
    policy_namespaces: tuple[str, ...] = ()
    # Namespaces of sidecar workloads: each gets its own copy of the bundle ConfigMap.
    bundle_namespaces: tuple[str, ...] = ()
    kubeconfig: Path | None = None
    context: str | None = None
    identity: str = field(default_factory=socket.gethostname)
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port (tests)
    metrics_host: str = "127.0.0.1"  # the chart passes the pod IP; never 0.0.0.0 unless asked
    liveness: str | None = None  # e.g. http://127.0.0.1:8081/healthz
    peering: str | None = None  # a KopfPeering name enables HA; None runs standalone
    priority: int = 0
    # A Budget's status is written at most once per interval (spend folding is debounced here).
    write_interval: float = 1.0
    # Budget statuses written per second for spend alone (a new state or window does not wait): the
    # proxies enforce on FleetSpends, so this bounds the operator's writes, not enforcement.
    status_writes_per_second: float = 20.0
    # The proxies' reports the fleet may write per second: past this many proxies, each reports less
    # often than once a second (FleetSpend's reportIntervalSeconds, up to 10 s).
    report_writes_per_second: float = 100.0
    retry_delay: float = 2.0
    write_concurrency: int = 8
    alert_backoffs: tuple[float, ...] = (1.0, 4.0, 16.0)
    alert_request_timeout: float = 10.0
    # A proxy writes its SpendReport at least every 15 s; one silent for this long without having
    # stopped cleanly is reported (log, metric, the Budgets' Reporting condition).
    report_timeout: timedelta = timedelta(seconds=60)
    # A SpendReport with no current-window entry and no report for this long belongs to a gone proxy.
    stale_report_after: timedelta = timedelta(days=1)
    housekeeping_interval: timedelta = timedelta(minutes=10)
    # Where Argo CD Applications live, read for the Git revision a sync applied (None: never read them).
    argocd_namespace: str | None = "argocd"
    # The AuditLog object (and prefix of its ConfigMap segments) in `namespace`.
    audit_log: str = "spendgate"
    audit_segment_bytes: int = 256 * 1024
    # kopf's watch-stream settings; tests shorten them.
    watch_server_timeout: int = 600  # seconds; the API server wants an integer

    @property
    def watched_namespaces(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.namespace, *self.policy_namespaces)))

    @property
    def bundle_targets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.namespace, *self.bundle_namespaces)))
