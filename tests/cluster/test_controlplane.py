"""The suite's control plane is a real Kubernetes API server that every client we use can talk to."""

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import kopf
import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner

from cluster.controlplane import CRDS_DIR, ControlPlane

pytestmark = pytest.mark.cluster

KUBERNETES_VERSION = "v1.35.4"
PROBE_GROUP = "cluster-test.spendgate.io"
# One "<crd name>=<status of its Established condition>" line per CRD.
ESTABLISHED_BY_NAME = (
    '{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Established")].status}{"\\n"}{end}'
)
# A CRD owned by these tests, so they do not depend on the schemas of the product's CRDs.
PROBE_CRD = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: probes.{PROBE_GROUP}
spec:
  group: {PROBE_GROUP}
  scope: Namespaced
  names: {{plural: probes, singular: probe, kind: Probe}}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {{status: {{}}}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {{type: object, properties: {{message: {{type: string}}}}}}
            status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"""


def probe_manifest(namespace: str, name: str, message: str) -> str:
    return json.dumps({
        "apiVersion": f"{PROBE_GROUP}/v1",
        "kind": "Probe",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"message": message},
    })  # fmt: skip


def get_probe(control_plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    reply = control_plane.kubectl("get", "--namespace", namespace, "probe", name, "--output=json")
    probe: dict[str, Any] = json.loads(reply.stdout)
    return probe


def crds_defined_in(folder: Path) -> set[str]:
    documents = [doc for path in folder.glob("*.y*ml") for doc in yaml.safe_load_all(path.read_text())]
    return {doc["metadata"]["name"] for doc in documents if doc and doc["kind"] == "CustomResourceDefinition"}


def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition still false after {timeout}s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def probe_crd(control_plane: ControlPlane) -> None:
    control_plane.apply(PROBE_CRD)
    control_plane.kubectl("wait", "--for=condition=Established", f"crd/probes.{PROBE_GROUP}", "--timeout=30s")


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    # Unique, because namespaces never finish deleting without a controller-manager.
    name = f"cluster-test-{secrets.token_hex(4)}"
    control_plane.kubectl("create", "namespace", name)
    return name


def test_api_server_reports_the_pinned_kubernetes_version(control_plane: ControlPlane) -> None:
    version = json.loads(control_plane.kubectl("get", "--raw", "/version").stdout)

    assert version["gitVersion"] == KUBERNETES_VERSION


def test_every_crd_in_the_repository_is_established(control_plane: ControlPlane) -> None:
    defined = crds_defined_in(CRDS_DIR)
    reply = control_plane.kubectl("get", "crd", *defined, f"--output=jsonpath={ESTABLISHED_BY_NAME}")

    assert defined, f"no CustomResourceDefinition in {CRDS_DIR}"
    assert set(control_plane.installed_crds) == defined
    assert sorted(reply.stdout.split()) == sorted(f"{name}=True" for name in defined)


def test_namespaced_custom_object_can_be_created_and_read(
    control_plane: ControlPlane, probe_crd: None, namespace: str
) -> None:
    control_plane.apply(probe_manifest(namespace, "hello", "stored in etcd"))

    assert get_probe(control_plane, namespace, "hello")["spec"] == {"message": "stored in etcd"}


def test_kubeconfig_works_for_the_kubernetes_client(
    control_plane: ControlPlane, probe_crd: None, namespace: str
) -> None:
    configuration = kubernetes.client.Configuration()
    kubeconfig = str(control_plane.kubeconfig)
    # The kubernetes package ships py.typed, but its config loaders are unannotated.
    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, client_configuration=configuration
    )
    control_plane.apply(probe_manifest(namespace, "from-kubectl", "read by the Python client"))

    with kubernetes.client.ApiClient(configuration) as client:
        version = kubernetes.client.VersionApi(client).get_code()
        objects = kubernetes.client.CustomObjectsApi(client)
        reply = objects.get_namespaced_custom_object(PROBE_GROUP, "v1", namespace, "probes", "from-kubectl")
        probe = cast(dict[str, Any], reply)

    assert version.git_version == KUBERNETES_VERSION
    assert probe["spec"]["message"] == "read by the Python client"


def test_kubeconfig_works_for_kopf(
    control_plane: ControlPlane, probe_crd: None, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    registry = kopf.OperatorRegistry()
    # kopf's own kubeconfig reader, not the kubernetes client's (covered by the test above).
    kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)

    @kopf.on.create(PROBE_GROUP, "v1", "probes", registry=registry)
    def acknowledge(spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
        patch.status["acknowledged"] = spec["message"]

    def acknowledged() -> bool:
        return "acknowledged" in get_probe(control_plane, namespace, "for-kopf").get("status", {})

    operator = ["run", "--standalone", f"--namespace={namespace}"]
    with KopfRunner(operator, registry=registry, timeout=60) as runner:
        control_plane.apply(probe_manifest(namespace, "for-kopf", "handled by kopf"))
        eventually(acknowledged)

    assert get_probe(control_plane, namespace, "for-kopf")["status"]["acknowledged"] == "handled by kopf"
    assert runner.exception is None and runner.exit_code == 0, runner.output
