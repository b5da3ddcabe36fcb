"""The injector as the chart runs it, against the suite's API server: the chart's own webhook
configuration (pointed at a local process by URL, since nothing routes a Service here), the chart's
sidecar settings and the chart's injector arguments, with the pod's address replaced by loopback."""

from __future__ import annotations

import base64
import json
import ssl
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cluster.controlplane import LOOPBACK, ControlPlane, ManagedProcess, answers_ok, free_loopback_ports, wait_until
from cluster.helm import render

WEBHOOK_CONFIGURATION_KIND = "MutatingWebhookConfiguration"


@dataclass(frozen=True)
class Namespaces:
    release: str
    labelled: str  # spendgate.io/inject=enabled, a sidecar namespace
    other: str  # a sidecar namespace without the label: pods opt in one by one
    unprepared: str  # not a sidecar namespace: never injected


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    documents: tuple[dict[str, Any], ...]

    def find(self, kind: str, name: str | None = None) -> dict[str, Any]:
        return next(doc for doc in self.documents if doc["kind"] == kind and name in (None, doc["metadata"]["name"]))

    @property
    def settings(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.find("ConfigMap", "spendgate-injector")["data"]["sidecar.json"])
        return loaded

    @property
    def injector_args(self) -> list[str]:
        deployment = self.find("Deployment", "spendgate-injector")
        args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return args


def chart_release(name: str, namespace: str, *values: str) -> Release:
    documents = tuple(doc for doc in yaml.safe_load_all(render(namespace, "injector.enabled=true", *values,
                                                                release=name)) if doc)
    return Release(name, namespace, documents)


def local_webhook_configuration(release: Release, port: int) -> dict[str, Any]:
    """The chart's MutatingWebhookConfiguration, calling https://127.0.0.1:port instead of the Service."""
    configuration = json.loads(json.dumps(release.find(WEBHOOK_CONFIGURATION_KIND)))
    for webhook in configuration["webhooks"]:
        service = webhook["clientConfig"].pop("service")
        webhook["clientConfig"]["url"] = f"https://{LOOPBACK}:{port}{service['path']}"
    return configuration


@dataclass
class RunningInjector:
    process: ManagedProcess
    port: int
    admin_port: int

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.admin_port}{path}", timeout=5) as reply:
                return int(reply.status), reply.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def review(self, path: str, body: bytes, ca_bundle: bytes) -> tuple[int, bytes]:
        """POST an AdmissionReview over TLS, verifying the server against `ca_bundle` as the API server does."""
        context = ssl.create_default_context(cadata=ca_bundle.decode())
        request = urllib.request.Request(f"https://{LOOPBACK}:{self.port}{path}", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as reply:
                return int(reply.status), reply.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def stop(self) -> None:
        self.process.stop()


def chart_injector_command(release: Release, settings: Path, kubeconfig: Path, port: int, admin_port: int,
                           *extra: str) -> list[str]:
    """The chart's injector arguments, on loopback ports, with the settings file and kubeconfig given."""
    replaced = {"--settings": str(settings), "--host": LOOPBACK, "--port": str(port), "--admin-host": LOOPBACK,
                "--admin-port": str(admin_port)}
    args = [f"{flag}={replaced[flag]}" if flag in replaced else arg
            for arg in release.injector_args for flag in [arg.partition("=")[0]]]
    return [sys.executable, "-m", "spendgate.cli", *args, f"--namespace={release.namespace}",
            f"--kubeconfig={kubeconfig}", f"--cert-host={LOOPBACK}", *extra]


@contextmanager
def running_injector(control_plane: ControlPlane, release: Release, workdir: Path, *extra: str
                     ) -> Iterator[RunningInjector]:
    """The injector process and the chart's webhook configuration pointing at it; both removed after."""
    port, admin_port = free_loopback_ports(2)
    settings = workdir / "sidecar.json"
    settings.write_text(json.dumps(release.settings))
    configuration = local_webhook_configuration(release, port)
    control_plane.apply(json.dumps(configuration))
    command = chart_injector_command(release, settings, control_plane.kubeconfig, port, admin_port, *extra)
    injector = RunningInjector(ManagedProcess("injector", command, workdir / "injector.log"), port, admin_port)
    try:
        wait_until(lambda: answers_ok(f"http://{LOOPBACK}:{admin_port}/readyz"), injector.process, 60)
        yield injector
    finally:
        injector.stop()
        control_plane.kubectl("delete", "mutatingwebhookconfiguration", configuration["metadata"]["name"],
                              "--ignore-not-found")


def ca_bundles(control_plane: ControlPlane, name: str) -> list[bytes]:
    found = json.loads(control_plane.kubectl("get", "mutatingwebhookconfiguration", name, "-o", "json").stdout)
    return [base64.b64decode(webhook["clientConfig"].get("caBundle", "")) for webhook in found["webhooks"]]


def pod_manifest(name: str, namespace: str, annotations: dict[str, str] | None = None,
                 **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "dev", "image": "node:22-slim", "command": ["sleep", "infinity"]}],
                     **spec}}


def create_pod(control_plane: ControlPlane, pod: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
    """Creates `pod` (or asks the API server to, with every admission step, without storing it)."""
    flags = ["--dry-run=server"] if dry_run else []
    result = control_plane.kubectl("create", *flags, "-o", "json", "-f", "-", stdin=json.dumps(pod))
    created: dict[str, Any] = json.loads(result.stdout)
    return created


def wait_for_injection(control_plane: ControlPlane, namespace: str, timeout: float = 30.0) -> None:
    """The API server sees a new CA bundle through its informer: wait until a dry-run pod is injected."""
    deadline = time.monotonic() + timeout
    probe = pod_manifest("probe", namespace, {"spendgate.io/inject": "true"})
    while not create_pod(control_plane, probe, dry_run=True)["spec"].get("initContainers"):
        if time.monotonic() > deadline:
            raise AssertionError(f"pods in {namespace} are still not injected after {timeout:.0f}s")
        time.sleep(0.2)

