"""Sidecar injection on the real API server: the chart's webhook configuration calls the injector
over TLS on loopback; pods are created with kubectl and their stored spec is what is asserted."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import yaml
from harness import Namespaces, Release, RunningInjector, ca_bundles, create_pod, pod_manifest

from cluster.controlplane import REPO_ROOT, ControlPlane
from spendgate.operator.injector.patch import INJECTED
from spendgate.operator.injector.sidecar import SIDECAR_NAME

INJECT = "spendgate.io/inject"


def name() -> str:
    return f"pod-{secrets.token_hex(3)}"


def sidecar(pod: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in pod["spec"].get("initContainers", []) if c["name"] == SIDECAR_NAME), None)


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in container.get("env", [])}


def test_a_pod_in_a_labelled_namespace_gets_a_native_sidecar(
        control_plane: ControlPlane, injector: RunningInjector, namespaces: Namespaces, release: Release) -> None:
    pod = create_pod(control_plane, pod_manifest(name(), namespaces.labelled))

    proxy = sidecar(pod)
    assert proxy is not None, pod["spec"]
    assert proxy["restartPolicy"] == "Always"
    assert proxy["image"] == release.settings["image"]
    assert f"--bundle-configmap={namespaces.labelled}/spendgate-bundle" in proxy["args"]
    assert f"--report-namespace={namespaces.release}" in proxy["args"]
    assert {"--host=127.0.0.1", "--admin-host=$(POD_IP)"} <= set(proxy["args"])
    assert {
        "runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]}}.items() <= proxy["securityContext"].items()
    assert proxy["resources"]["requests"] and proxy["resources"]["limits"]
    mounts = {mount["name"]: mount["mountPath"] for mount in proxy["volumeMounts"]}
    assert mounts["spendgate-state"] == "/var/lib/spendgate"
    assert "--state-dir=/var/lib/spendgate" in proxy["args"]
    assert proxy["startupProbe"]["httpGet"]["path"] == "/readyz"

    app = pod["spec"]["containers"][0]
    assert env(app)["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8787"
    assert "volumeMounts" not in app or not [m for m in app["volumeMounts"] if m["name"].startswith("spendgate")]
    key_volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "spendgate-upstream-key")
    assert key_volume["secret"]["secretName"] == "anthropic-upstream-key"
    assert pod["metadata"]["annotations"][INJECTED]


def test_a_pod_that_opts_out_is_left_alone(control_plane: ControlPlane, injector: RunningInjector,
                                           namespaces: Namespaces) -> None:
    pod = create_pod(control_plane, pod_manifest(name(), namespaces.labelled, {INJECT: "false"}))

    assert sidecar(pod) is None and INJECTED not in pod["metadata"].get("annotations", {})
    assert "ANTHROPIC_BASE_URL" not in env(pod["spec"]["containers"][0])


def test_elsewhere_only_annotated_pods_are_injected(control_plane: ControlPlane, injector: RunningInjector,
                                                    namespaces: Namespaces) -> None:
    annotated = create_pod(control_plane, pod_manifest(name(), namespaces.other, {INJECT: "true"}))
    plain = create_pod(control_plane, pod_manifest(name(), namespaces.other))

    assert sidecar(annotated) is not None
    assert sidecar(plain) is None


def test_namespaces_without_a_bundle_and_system_namespaces_are_never_injected(
        control_plane: ControlPlane, injector: RunningInjector, namespaces: Namespaces) -> None:
    for namespace in (namespaces.unprepared, "kube-system", namespaces.release):
        pod = create_pod(control_plane, pod_manifest(name(), namespace, {INJECT: "true"}), dry_run=True)
        assert sidecar(pod) is None, namespace


def test_the_app_gets_its_virtual_key_from_the_named_secret(
        control_plane: ControlPlane, injector: RunningInjector, namespaces: Namespaces) -> None:
    pod = create_pod(control_plane, pod_manifest(name(), namespaces.labelled,
                                                 {"spendgate.io/virtual-key-secret": "alice-devpod"}))

    assert env(pod["spec"]["containers"][0])["ANTHROPIC_API_KEY"] == {
        "secretKeyRef": {"name": "alice-devpod", "key": "key"}}


def test_a_pod_injected_twice_is_unchanged(control_plane: ControlPlane, injector: RunningInjector,
                                           namespaces: Namespaces) -> None:
    first = create_pod(control_plane, pod_manifest(name(), namespaces.labelled))
    again = json.loads(json.dumps(first))
    again["metadata"] = {"name": name(), "namespace": namespaces.labelled,
                         "annotations": first["metadata"]["annotations"]}
    again.pop("status", None)

    second = create_pod(control_plane, again)

    assert second["spec"] == first["spec"]
    assert second["metadata"]["annotations"] == first["metadata"]["annotations"]


def test_the_webhook_answers_json_patches_over_tls(control_plane: ControlPlane, injector: RunningInjector,
                                                   namespaces: Namespaces, release: Release) -> None:
    pod = pod_manifest("direct", namespaces.labelled)
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "7f0b2c1e", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                          "operation": "CREATE", "namespace": namespaces.labelled, "object": pod}}
    bundle = ca_bundles(control_plane, release.find("MutatingWebhookConfiguration")["metadata"]["name"])[0]

    status, body = injector.review("/inject/namespace", json.dumps(review).encode(), bundle)
    response = json.loads(body)["response"]
    operations = json.loads(base64.b64decode(response["patch"]))

    assert status == 200 and response["uid"] == "7f0b2c1e" and response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    assert {op["path"] for op in operations} >= {"/spec/initContainers", "/spec/volumes"}
    assert injector.review("/inject/pod", b"not json", bundle)[0] == 400

    status, metrics = injector.get("/metrics")
    assert status == 200
    assert 'spendgate_injector_admissions_total{outcome="injected",webhook="namespace"}' in metrics
    assert 'spendgate_injector_admissions_total{outcome="bad-review",webhook="pod"} 1.0' in metrics


def test_the_example_dev_pod_gets_the_sidecar_and_its_virtual_key(
        control_plane: ControlPlane, injector: RunningInjector, namespaces: Namespaces) -> None:
    example = yaml.safe_load((REPO_ROOT / "examples" / "kind" / "devpod.yaml").read_text())
    example["metadata"]["namespace"] = namespaces.labelled

    pod = create_pod(control_plane, example)

    assert sidecar(pod) is not None
    dev = env(pod["spec"]["containers"][0])
    assert dev["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8787"
    assert dev["ANTHROPIC_API_KEY"] == {"secretKeyRef": {"name": "alice-devpod", "key": "key"}}
    assert dev["DISABLE_TELEMETRY"] == "1"

def test_with_the_injector_down_pods_start_without_the_sidecar(
        control_plane: ControlPlane, injector: RunningInjector, namespaces: Namespaces) -> None:
    """failurePolicy Ignore (the chart's default): never block developers' pods. Runs last here."""
    injector.stop()

    pod = create_pod(control_plane, pod_manifest(name(), namespaces.labelled))

    assert sidecar(pod) is None and INJECTED not in pod["metadata"].get("annotations", {})
