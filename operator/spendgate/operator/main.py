"""`spendgate operator`: run the operator against the current kubeconfig or in-cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path

import kopf
import kubernetes
from prometheus_client import start_http_server

from spendgate.adapters.kube import Kube, load_configuration
from spendgate.operator.clock import Clock, SystemClock
from spendgate.operator.config import DEFAULT_NAMESPACE, OperatorConfig
from spendgate.operator.handlers import build_registry, operator_settings
from spendgate.operator.metrics import OperatorMetrics
from spendgate.operator.reconciler import Reconciler

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", DEFAULT_NAMESPACE),
                        help="the operator's namespace: shared gateway bundle, key and alert Secrets, "
                             "SpendReports (default: $POD_NAMESPACE or %(default)s)")
    parser.add_argument("--policy-namespace", action="append", default=[], metavar="NAMESPACE",
                        help="a namespace with Budgets and RoutingPolicies (repeatable)")
    parser.add_argument("--bundle-namespace", action="append", default=[], metavar="NAMESPACE",
                        help="a sidecar workload namespace that gets the bundle ConfigMap (repeatable)")
    parser.add_argument("--kubeconfig", type=Path, help="default: in-cluster, then ~/.kube/config")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--metrics-host", default=OperatorConfig.metrics_host,
                        help="address the metrics port listens on (default %(default)s; in a pod, its IP)")
    parser.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port; 0 disables")
    parser.add_argument("--liveness", metavar="URL",
                        help="kopf's liveness endpoint, e.g. http://127.0.0.1:8081/healthz (the host is the address "
                             "it listens on); default: none")
    parser.add_argument("--peering", help="KopfPeering name: enables HA (see docs/operator.md); default standalone")
    parser.add_argument("--priority", type=int,
                        help="peering priority, distinct per replica (default with --peering: a random one, so "
                             "the replicas of one Deployment differ)")
    parser.add_argument("--write-interval", type=float, default=1.0,
                        help="a Budget's status, and the fleet's spend of its cost center, are written at most this "
                             "often, in seconds")
    parser.add_argument("--status-writes-per-second", type=positive_rate, metavar="N",
                        default=OperatorConfig.status_writes_per_second,
                        help="Budget statuses written per second for a change of spend alone; a new state or window "
                             "does not wait, and the proxies enforce on FleetSpends (default %(default)s)")
    parser.add_argument("--argocd-namespace", default="argocd",
                        help="where Argo CD Applications live: read (if RBAC allows) for the Git revision of a "
                             "sync when no spendgate.io/git-revision annotation is stamped; '' never reads them "
                             "(default: %(default)s)")
    parser.add_argument("--audit-log", default="spendgate",
                        help="the AuditLog (and prefix of its ConfigMaps) in --namespace (default: %(default)s)")
    parser.add_argument("--report-writes-per-second", type=positive_rate, metavar="N",
                        default=OperatorConfig.report_writes_per_second,
                        help="the proxies' SpendReport writes per second the fleet may make: with more proxies than "
                             "this, each reports less often than once a second, up to every 10 s "
                             "(default %(default)s)")
    parser.add_argument("--report-timeout", type=float, metavar="SECONDS",
                        default=OperatorConfig.report_timeout.total_seconds(),
                        help="a proxy whose SpendReport was not written for this long, without a clean stop, is "
                             "reported as silent (proxies write at least every 15 s; default %(default)s)")
    parser.add_argument("--verbose", action="store_true")


def positive_rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of writes per second") from None
    if not 0 < rate < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number of writes per second above 0")
    return rate


def replica_priority(peering: str | None) -> int:
    """Replicas with equal priorities all pause (kopf's rule), and a Deployment cannot give each
    replica its own flag: draw one. Two replicas collide with odds of one in a million."""
    return secrets.randbelow(1_000_000) + 1 if peering else 0


def run(args: argparse.Namespace) -> int:
    kopf.configure(verbose=args.verbose)
    if not args.verbose:  # kopf logs every handled watch event at INFO; status echoes would flood the log
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    config = OperatorConfig(
        namespace=args.namespace,
        policy_namespaces=tuple(args.policy_namespace),
        bundle_namespaces=tuple(args.bundle_namespace),
        kubeconfig=args.kubeconfig,
        context=args.context,
        metrics_port=args.metrics_port or None,
        metrics_host=args.metrics_host,
        liveness=args.liveness,
        peering=args.peering,
        priority=args.priority if args.priority is not None else replica_priority(args.peering),
        write_interval=args.write_interval,
        status_writes_per_second=args.status_writes_per_second,
        report_writes_per_second=args.report_writes_per_second,
        argocd_namespace=args.argocd_namespace or None,
        audit_log=args.audit_log,
        report_timeout=timedelta(seconds=args.report_timeout),
    )
    try:
        return asyncio.run(serve(config))
    except kubernetes.config.ConfigException as error:
        print(f"error: no Kubernetes credentials: {error}", file=sys.stderr)
        return 2


async def serve(config: OperatorConfig, clock: Clock | None = None, stop: asyncio.Event | None = None,
                metrics: OperatorMetrics | None = None) -> int:
    """Run kopf's watches and the reconcile loop until `stop` is set, a signal arrives, or the loop
    fails (then the exit code is 1 and the pod restarts: it converges again from the API)."""
    kube = Kube(load_configuration(config.kubeconfig, config.context))
    metrics = metrics or OperatorMetrics()
    reconciler = Reconciler(config, kube, clock or SystemClock(), metrics)
    server = (start_http_server(config.metrics_port, config.metrics_host, registry=metrics.registry)
              if config.metrics_port else None)
    stop = stop or asyncio.Event()
    reconciling = asyncio.create_task(reconciler.run(), name="spendgate reconciler")
    watching = asyncio.create_task(kopf.operator(
        registry=build_registry(reconciler, kube.configuration),
        settings=operator_settings(config),
        namespaces=config.watched_namespaces,
        standalone=config.peering is None,
        peering_name=config.peering,
        priority=config.priority,
        liveness_endpoint=config.liveness,
        stop_flag=stop,
    ), name="kopf")
    try:
        await asyncio.wait({reconciling, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        reconciling.cancel()
        await asyncio.gather(reconciling, watching, return_exceptions=True)
        await kube.close()
        if server is not None:
            server[0].shutdown()
    if not reconciling.cancelled() and reconciling.exception() is not None:
        logger.error("the reconcile loop failed", exc_info=reconciling.exception())
        return 1
    return 0
