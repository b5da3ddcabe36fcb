"""The chart refuses bad values, lints clean, and renders what a real API server accepts, with the
default values and with every option on (charts/spendgate/ci/full-values.yaml)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.controlplane import REPO_ROOT, ControlPlane, binary_paths
from cluster.helm import CHART, render

SCHEMA = CHART / "values.schema.json"
FULL = CHART / "ci" / "full-values.yaml"
THIRD_PARTY_CRDS = REPO_ROOT / "hack" / "third-party-crds.sh"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary_paths(["helm"])["helm"]), *args], capture_output=True, text=True)


def leaves(values: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path of a values document (maps are walked, lists and scalars are leaves)."""
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from leaves(value, (*path, str(key)))
    elif path:
        yield path


def described(schema: dict[str, Any], path: tuple[str, ...]) -> bool:
    definitions = schema["$defs"]
    node = schema
    for key in path:
        while "$ref" in node:
            node = definitions[node["$ref"].rsplit("/", 1)[-1]]
        properties = node.get("properties") or {}
        if key not in properties:
            return False
        node = properties[key]
    return True


def test_the_schema_describes_every_value_and_refuses_unknown_ones() -> None:
    schema = json.loads(SCHEMA.read_text())
    for values in (CHART / "values.yaml", FULL):
        undescribed = [".".join(path) for path in leaves(yaml.safe_load(values.read_text()))
                       if not described(schema, path)]
        assert undescribed == [], f"{values.name}: values missing from values.schema.json"

    def closed(node: Any) -> Iterator[bool]:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                yield node.get("additionalProperties") is False
            for child in node.values():
                yield from closed(child)

    assert all(closed(schema)), "every object of the schema must refuse keys it does not describe"


@pytest.mark.parametrize(("value", "message"), [
    ("gateway.replicas=-1", "at '/gateway/replicas': minimum: got -1, want 1"),
    ("gateway.replica=3", "at '/gateway': additional properties 'replica' not allowed"),
    ("gateway.port=70000", "at '/gateway/port': maximum: got 70,000, want 65,535"),
    ("gateway.upstream=ftp://api.anthropic.com", "at '/gateway/upstream'"),
    ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"),
    ("injector.failurePolicy=Maybe", "at '/injector/failurePolicy': value must be one of 'Ignore', 'Fail'"),
    ("injector.sidecar.mode=Sidecar", "at '/injector/sidecar/mode': value must be one of 'Native', 'Classic'"),
    ("injector.certificates.validity=90d", "at '/injector/certificates/validity'"),
    ("monitoring.prometheusRule.pausedFor=15 minutes", "at '/monitoring/prometheusRule/pausedFor'"),
    ("operator.bundleNamespaces={Team_A}", "at '/operator/bundleNamespaces/0'"),
    ("gateway.resources.limits=null", "at '/gateway/resources'"),
    ("operator.resources.requests.memory=lots", "at '/operator/resources/requests/memory'"),
    ("admission.validationActions={Block}", "at '/admission/validationActions/0'"),
])
def test_a_bad_value_fails_helm_template_with_a_message_naming_it(value: str, message: str) -> None:
    result = helm("template", "sg", str(CHART), "--set", value)

    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_injection_without_sidecar_namespaces_says_what_to_set() -> None:
    result = helm("template", "sg", str(CHART), "--set", "injector.enabled=true")

    assert result.returncode != 0
    assert "injector.enabled: list the namespaces whose pods may get a sidecar in operator.bundleNamespaces" \
        in result.stderr


@pytest.mark.parametrize("values", [[], ["--values", str(FULL)]], ids=["default", "full"])
def test_helm_lint_is_clean(values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.fixture
def names(control_plane: ControlPlane) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:6]
    created = {"release": f"sg-{suffix}", "policies": f"budgets-{suffix}", "team_a": f"team-a-{suffix}",
               "team_b": f"team-b-{suffix}", "argocd": f"argocd-{suffix}"}
    for namespace in created.values():
        control_plane.kubectl("create", "namespace", namespace)
    yield created


def install_third_party_crds(control_plane: ControlPlane) -> None:
    """cert-manager's and the Prometheus Operator's CRDs, generated from their Go types."""
    directory = subprocess.run(["bash", str(THIRD_PARTY_CRDS)], capture_output=True, text=True, check=True)
    applied = control_plane.apply(Path(directory.stdout.strip())).stdout.split()
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *applied)


@pytest.mark.parametrize("full", [False, True], ids=["default", "full"])
def test_everything_rendered_is_accepted_by_the_api_server(control_plane: ControlPlane, names: dict[str, str],
                                                           full: bool) -> None:
    install_third_party_crds(control_plane)
    overrides = (f"operator.policyNamespaces={{{names['policies']}}}",
                 f"operator.bundleNamespaces={{{names['team_a']},{names['team_b']}}}",
                 f"argocd.namespace={names['argocd']}") if full else ()
    rendered = [doc for doc in yaml.safe_load_all(render(names["release"], *overrides, release=names["release"],
                                                         files=[FULL] if full else [])) if doc]
    crds = [doc for doc in rendered if doc["kind"] == "CustomResourceDefinition"]  # Helm's hooks, first
    rest = [doc for doc in rendered if doc["kind"] != "CustomResourceDefinition"]
    if crds:
        control_plane.apply(yaml.safe_dump_all(crds))
        control_plane.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                              *(f"crd/{crd['metadata']['name']}" for crd in crds))

    result = control_plane.kubectl("apply", "--dry-run=server", "--server-side", "--field-manager=helm",
                                   "-f", "-", stdin=yaml.safe_dump_all(rest))

    assert result.stdout.count("serverside-applied (server dry run)") == len(rest), result.stdout
    kinds = {doc["kind"] for doc in rest}
    expected = {"Deployment", "Service", "PodDisruptionBudget", "ClusterRole", "RoleBinding"}
    if full:
        expected |= {"HorizontalPodAutoscaler", "MutatingWebhookConfiguration", "ServiceMonitor",
                     "PrometheusRule", "Certificate", "ConfigMap", "KopfPeering", "ValidatingAdmissionPolicy",
                     "ValidatingAdmissionPolicyBinding", "PolicyWriters"}
    assert expected <= kinds, expected - kinds


def test_every_pod_runs_non_root_read_only_with_requests_and_limits() -> None:
    rendered = [doc for doc in yaml.safe_load_all(render("sg", files=[FULL])) if doc]
    workloads = [doc for doc in rendered if doc["kind"] == "Deployment"]

    assert {"spendgate-operator", "spendgate-gateway", "spendgate-injector"} <= {
        workload["metadata"]["name"] for workload in workloads}
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_an_autoscaled_gateway_leaves_replicas_to_the_hpa_and_spreads_over_zones() -> None:
    documents = [doc for doc in yaml.safe_load_all(render("sg", files=[FULL])) if doc]
    gateway = next(doc for doc in documents if doc["kind"] == "Deployment"
                   and doc["metadata"]["name"] == "spendgate-gateway")
    autoscaler = next(doc for doc in documents if doc["kind"] == "HorizontalPodAutoscaler")
    budgets = {doc["metadata"]["name"]: doc["spec"] for doc in documents if doc["kind"] == "PodDisruptionBudget"}

    assert "replicas" not in gateway["spec"]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "spendgate-gateway"
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (3, 20)
    spread = gateway["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [(c["topologyKey"], c["whenUnsatisfiable"]) for c in spread] == [
        ("topology.kubernetes.io/zone", "DoNotSchedule")]
    assert budgets["spendgate-gateway"]["maxUnavailable"] == "25%"
    assert set(budgets) == {"spendgate-gateway", "spendgate-injector", "spendgate-operator"}
