"""The Helm chart: rendered by a real helm, accepted by a real API server, least privilege checked
by asking the API server what each service account may do."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import yaml

from cluster.controlplane import REPO_ROOT, ControlPlane
from cluster.helm import CHART, rbac_only
from cluster.helm import render as helm_template


def kinds(rendered: str) -> list[str]:
    return [doc["kind"] for doc in yaml.safe_load_all(rendered) if doc]


@pytest.fixture
def release(control_plane: ControlPlane) -> Iterator[tuple[str, str]]:
    """A release namespace and one sidecar namespace, both new."""
    suffix = uuid.uuid4().hex[:6]
    namespaces = (f"sg-{suffix}", f"team-{suffix}")
    for namespace in namespaces:
        control_plane.kubectl("create", "namespace", namespace)
    yield namespaces


def test_chart_crds_are_the_generated_ones() -> None:
    assert (CHART / "crds").resolve() == (REPO_ROOT / "crds").resolve()


def test_every_rendered_object_is_accepted_by_the_api_server(
    control_plane: ControlPlane, release: tuple[str, str]
) -> None:
    namespace, team = release
    rendered = helm_template(namespace, f"operator.bundleNamespaces={{{team}}}", "operator.peering.enabled=true",
                             "admission.enabled=true", "argocd.readApplications=true", f"argocd.namespace={team}")
    assert {"Deployment", "ClusterRole", "Role", "Service", "KopfPeering", "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding", "PolicyWriters"} <= set(kinds(rendered))
    peering_crd, rest = _split_peering_crd(rendered)
    control_plane.apply(peering_crd)  # a pre-install hook: Helm applies it before the rest
    control_plane.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=30s")
    result = control_plane.kubectl("apply", "--dry-run=server", "--server-side", "-f", "-", stdin=rest)
    assert "serverside-applied (server dry run)" in result.stdout


def test_monitoring_objects_render_only_when_asked() -> None:
    assert "ServiceMonitor" not in kinds(helm_template("sg"))
    monitored = kinds(helm_template("sg", "monitoring.serviceMonitor.enabled=true",
                                    "monitoring.prometheusRule.enabled=true"))
    assert {"ServiceMonitor", "PrometheusRule"} <= set(monitored)


def test_the_client_service_never_exposes_the_admin_port() -> None:
    services = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(helm_template("sg")) if doc
                and doc["kind"] == "Service"}
    assert [p["targetPort"] for p in services["spendgate-gateway"]["spec"]["ports"]] == ["http"]


def test_least_privilege(control_plane: ControlPlane, release: tuple[str, str]) -> None:
    namespace, team = release
    policies = f"policies-{namespace}"
    control_plane.kubectl("create", "namespace", policies)
    control_plane.apply(rbac_only(helm_template(namespace, f"operator.bundleNamespaces={{{team}}}",
                                                f"operator.policyNamespaces={{{policies}}}", release=namespace)))

    def can(account: str, *request: str) -> bool:
        result = control_plane.kubectl("auth", "can-i", *request,
                                       f"--as=system:serviceaccount:{namespace}:{account}", check=False)
        return result.stdout.strip() == "yes"

    operator, gateway = "spendgate-operator", "spendgate-gateway"
    assert can(operator, "list", "costcenters.spendgate.io")
    assert can(operator, "patch", "budgets.spendgate.io", "--subresource=status", "-n", policies)
    assert not can(operator, "patch", "budgets.spendgate.io", "-n", policies)  # specs belong to Git
    assert not can(operator, "list", "budgets.spendgate.io", "-n", "kube-system")
    assert can(operator, "watch", "secrets", "-n", namespace)
    assert not can(operator, "get", "secrets", "-n", team)
    assert not can(operator, "get", "secrets", "-n", "kube-system")
    assert can(operator, "update", "configmaps/spendgate-bundle", "-n", team)
    assert not can(operator, "update", "configmaps/kube-proxy", "-n", team)
    assert not can(operator, "update", "configmaps/spendgate-bundle", "-n", "kube-system")
    assert can(operator, "patch", "auditlogs.spendgate.io", "--subresource=status", "-n", namespace)
    assert not can(operator, "patch", "auditlogs.spendgate.io", "--subresource=status", "-n", policies)
    assert not can(operator, "get", "applications.argoproj.io", "-n", "argocd")  # argocd.readApplications is off

    assert can(gateway, "patch", "spendreports.spendgate.io", "-n", namespace)
    assert can(gateway, "watch", "fleetspends.spendgate.io", "-n", policies)
    assert not can(gateway, "watch", "budgets.spendgate.io", "-n", policies)  # the fleet's spend is in FleetSpends
    assert can(operator, "update", "fleetspends.spendgate.io", "-n", policies)
    assert not can(gateway, "update", "fleetspends.spendgate.io", "-n", policies)
    assert can(gateway, "watch", "configmaps/spendgate-bundle", "-n", namespace)
    assert not can(gateway, "get", "configmaps/other", "-n", namespace)
    assert not can(gateway, "get", "secrets", "-n", namespace)
    assert not can(gateway, "patch", "budgets.spendgate.io", "-n", policies)


def _split_peering_crd(rendered: str) -> tuple[str, str]:
    documents = [doc for doc in yaml.safe_load_all(rendered) if doc]
    crd = [doc for doc in documents if doc["kind"] == "CustomResourceDefinition"]
    rest = [doc for doc in documents if doc["kind"] != "CustomResourceDefinition"]
    return yaml.safe_dump_all(crd), yaml.safe_dump_all(rest)
