"""The kopf side: watches that feed the reconciler, login, settings, a liveness probe.

Every handler is an `on.event` handler, one reason each: record the object (or its deletion) in
the World and wake the reconcile loop. They store nothing on the objects (no finalizers, no
annotations), so the operator can be removed without leaving anything behind on user objects.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
import kubernetes

from spendgate.adapters.keysecrets import LABEL as KEY_LABEL
from spendgate.adapters.kube import bearer_token
from spendgate.api.v1alpha1 import GROUP, VERSION
from spendgate.operator.config import OperatorConfig
from spendgate.operator.reconciler import PLURALS, Reconciler
from spendgate.operator.world import BUDGET, COST_CENTER, FLEET_SPEND, ROUTING_POLICY, SECRET, SPEND_REPORT


def build_registry(reconciler: Reconciler, configuration: kubernetes.client.Configuration) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(configuration)

    @kopf.on.probe(id="synced", registry=registry)
    def synced(**_: Any) -> bool:
        return reconciler.synced

    for kind in (COST_CENTER, BUDGET, ROUTING_POLICY, SPEND_REPORT, FLEET_SPEND):
        kopf.on.event(GROUP, VERSION, PLURALS[kind], id=f"observe-{PLURALS[kind]}", registry=registry)(
            _observer(reconciler, kind))
    kopf.on.event("v1", "secrets", labels={KEY_LABEL: "true"}, id="observe-virtual-keys", registry=registry)(
        _observer(reconciler, SECRET))
    return registry


def _observer(reconciler: Reconciler, kind: str) -> Any:
    async def observe(event: dict[str, Any], **_: Any) -> None:
        reconciler.observe(kind, event.get("type"), event["object"])

    return observe


def operator_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # No CRD or namespace watching: the CRDs are installed first and the namespaces are listed,
    # so the operator needs no cluster-wide list/watch on either.
    settings.scanning.disabled = True
    # Only key Secrets ever reach the operator: the label is filtered by the API server.
    settings.watching.label_selectors["v1", "secrets"] = f"{KEY_LABEL}=true"
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_server_timeout + 10
    settings.posting.level = logging.WARNING
    return settings


def connection_info(configuration: kubernetes.client.Configuration) -> kopf.ConnectionInfo:
    """kopf logs in with the very credentials the operator's own client uses."""
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        token=bearer_token(configuration),
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )
