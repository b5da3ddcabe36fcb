"""The sidecar itself: the proxy container, its volumes, and what the app containers get.

This is the one place where the injected proxy's flags are written (`proxy_args`); a test parses
them with `spendgate proxy`'s own parser, so a renamed flag fails there, not in a pod.
"""

from __future__ import annotations

from typing import Any

from spendgate.operator.injector.settings import SidecarSettings

SIDECAR_NAME = "spendgate-proxy"
ADMIN_PORT_NAME = "sg-admin"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
API_KEY_ENV = "ANTHROPIC_API_KEY"
VIRTUAL_KEY_FIELD = "key"  # the field of a virtual-key Secret that holds the key (docs/operator.md)
PROXY_UID = 65532  # the image's non-root user (Dockerfile)

UPSTREAM_KEY_VOLUME = "spendgate-upstream-key"
STATE_VOLUME = "spendgate-state"
API_ACCESS_VOLUME = "spendgate-api-access"
BUNDLE_VOLUME = "spendgate-bundle"
VOLUME_NAMES = (UPSTREAM_KEY_VOLUME, STATE_VOLUME, API_ACCESS_VOLUME, BUNDLE_VOLUME)

UPSTREAM_KEY_DIR = "/etc/spendgate/upstream"
STATE_DIR = "/var/lib/spendgate"
BUNDLE_DIR = "/etc/spendgate/bundle"
API_ACCESS_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # where in-cluster clients look
TOKEN_SECONDS = 3607  # the kubelet refreshes a projected token at 80% of its life
STATE_SIZE_LIMIT = "256Mi"  # the spend journal is compacted as windows end; this is ample


def base_url(settings: SidecarSettings) -> str:
    """What the app containers reach: the proxy on the pod's loopback, never leaving the pod."""
    return f"http://127.0.0.1:{settings.port}"


def proxy_args(settings: SidecarSettings, namespace: str) -> list[str]:
    """`spendgate proxy`'s arguments for a sidecar in `namespace`."""
    if settings.bundleSource == "API":
        source = f"--bundle-configmap={namespace}/{settings.bundleConfigMap}"
    else:
        source = f"--bundle={BUNDLE_DIR}"
    return [
        "proxy",
        source,
        f"--upstream={settings.upstream}",
        f"--upstream-key-file={UPSTREAM_KEY_DIR}/{settings.upstreamKeySecret.key}",
        # The client port only on loopback: the app containers share the pod's network namespace.
        "--host=127.0.0.1",
        f"--port={settings.port}",
        # The admin port on the pod's address, for the kubelet's probes and Prometheus.
        "--admin-host=$(POD_IP)",
        f"--admin-port={settings.adminPort}",
        f"--state-dir={STATE_DIR}",
        f"--report-namespace={settings.reportNamespace}",
    ]


def _downward(name: str, field: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field}}}


def proxy_container(settings: SidecarSettings, namespace: str) -> dict[str, Any]:
    """The proxy container: secure by default, probes on its admin port, its own volumes only."""
    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": ADMIN_PORT_NAME}, "periodSeconds": period,
                "failureThreshold": failures}

    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": settings.image,
        "imagePullPolicy": settings.imagePullPolicy,
        "args": proxy_args(settings, namespace),
        "env": [_downward("POD_NAME", "metadata.name"), _downward("POD_NAMESPACE", "metadata.namespace"),
                _downward("POD_IP", "status.podIP")],
        "ports": [{"name": ADMIN_PORT_NAME, "containerPort": settings.adminPort, "protocol": "TCP"}],
        # A native sidecar's startup probe holds the app containers back until the proxy is ready,
        # so the first request never races the proxy's start.
        "startupProbe": probe("/readyz", 1, 120),
        "readinessProbe": probe("/readyz", 5, 3),
        "livenessProbe": probe("/livez", 20, 3),
        "resources": {kind: dict(values) for kind, values in settings.resources.model_dump().items() if values},
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": PROXY_UID, "runAsGroup": PROXY_UID,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": UPSTREAM_KEY_VOLUME, "mountPath": UPSTREAM_KEY_DIR, "readOnly": True},
            {"name": STATE_VOLUME, "mountPath": STATE_DIR},
            {"name": API_ACCESS_VOLUME, "mountPath": API_ACCESS_DIR, "readOnly": True},
            *([{"name": BUNDLE_VOLUME, "mountPath": BUNDLE_DIR, "readOnly": True}]
              if settings.bundleSource == "Mount" else []),
        ],
    }
    if settings.mode == "Native":
        container["restartPolicy"] = "Always"
    return container


def proxy_volumes(settings: SidecarSettings) -> list[dict[str, Any]]:
    """The sidecar's volumes; no app container mounts them."""
    volumes: list[dict[str, Any]] = [
        # The organisation's key: only the sidecar mounts it, so the app can never read it.
        {"name": UPSTREAM_KEY_VOLUME, "secret": {"secretName": settings.upstreamKeySecret.name,
                                                  "items": [{"key": settings.upstreamKeySecret.key,
                                                             "path": settings.upstreamKeySecret.key}]}},
        # The spend journal: survives container restarts (SIGKILL included) within the pod.
        {"name": STATE_VOLUME, "emptyDir": {"sizeLimit": STATE_SIZE_LIMIT}},
        # The sidecar's own API credentials, whatever the pod says about automounting its token:
        # it reports spend and follows Budgets with the pod's service account.
        {"name": API_ACCESS_VOLUME, "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_SECONDS}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}},
    ]
    if settings.bundleSource == "Mount":
        volumes.append({"name": BUNDLE_VOLUME, "configMap": {"name": settings.bundleConfigMap}})
    return volumes


def app_env(settings: SidecarSettings, virtual_key_secret: str | None) -> list[dict[str, Any]]:
    """What every app container gets: the proxy's address and, if the pod names one, its virtual key."""
    env: list[dict[str, Any]] = [{"name": BASE_URL_ENV, "value": base_url(settings)}]
    if virtual_key_secret:
        env.append({"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": virtual_key_secret,
                                                                        "key": VIRTUAL_KEY_FIELD}}})
    return env
