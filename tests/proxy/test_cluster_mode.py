"""A proxy in cluster mode reports its spend and follows the fleet's, or refuses to start with one line
naming the flag it lacks: it never enforces silently on its own spend alone (three proxies that did
overshot a budget by 184% while Budget.status stayed at $0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.controlplane import ControlPlane
from proxy.test_cli import run_to_exit
from spendgate.policy import bundlemap
from spendgate.policy.bundle import Bundle, dumps, sign


def bundle_file(path: Path) -> Path:
    path.write_bytes(dumps(sign(Bundle())))
    return path


async def test_a_bundle_that_does_not_say_where_to_report_is_refused(tmp_path: Path) -> None:
    code, stderr = await run_to_exit("--bundle", str(bundle_file(tmp_path / "bundle.json")))

    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("error: cluster mode reports spend, and ")
    assert f"{tmp_path / 'report-namespace'} does not say where" in stderr
    assert "pass --report-namespace NS" in stderr


async def test_standalone_has_no_report_namespace(tmp_path: Path, policies: Path) -> None:
    code, stderr = await run_to_exit("--policies", str(policies), "--report-namespace", "spendgate-system")

    assert (code, stderr) == (2, "error: --report-namespace is for cluster mode (--bundle or --bundle-configmap); "
                                 "with --policies the journal is the spend store\n")


@pytest.mark.cluster
async def test_a_configmap_that_does_not_say_where_to_report_is_refused(control_plane: ControlPlane,
                                                                       namespace: str) -> None:
    """A ConfigMap made by hand (the operator always writes the key)."""
    handmade = bundlemap.render(sign(Bundle()), namespace)
    control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(handmade))

    code, stderr = await run_to_exit("--bundle-configmap", f"{namespace}/{bundlemap.NAME}",
                                     "--kubeconfig", str(control_plane.kubeconfig))

    assert code == 2 and stderr.count("\n") == 1
    assert f"ConfigMap {namespace}/spendgate-bundle does not say where" in stderr and "--report-namespace" in stderr


def test_the_operator_says_where_to_report_beside_the_bundle() -> None:
    manifest = bundlemap.render(sign(Bundle()), "team-a", report_namespace="spendgate-system")

    assert bundlemap.report_namespace(manifest) == "spendgate-system"
    assert bundlemap.document(manifest) == dumps(sign(Bundle()))


async def test_a_report_namespace_that_is_no_namespace_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / bundlemap.REPORT_NAMESPACE_KEY).write_text("Spendgate System\n")
    code, stderr = await run_to_exit("--bundle", str(bundle_file(tmp_path / "bundle.json")))

    assert code == 2 and stderr.count("\n") == 1
    assert "names 'Spendgate System' as the namespace to report spend to, which is no namespace name" in stderr
