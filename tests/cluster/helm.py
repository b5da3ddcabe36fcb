"""Render the repository's Helm chart with the helm the suite builds (hack/build-control-plane.sh)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import yaml

from cluster.controlplane import REPO_ROOT, binary_paths

CHART = REPO_ROOT / "charts" / "spendgate"
RBAC_KINDS = frozenset({"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"})


def render(namespace: str, *values: str, release: str = "spendgate", files: Sequence[Path] = ()) -> str:
    """`helm template` of the chart; each value is a `--set` expression, applied after the values files."""
    command = [str(binary_paths(["helm"])["helm"]), "template", release, str(CHART), "--namespace", namespace]
    for path in files:
        command += ["--values", str(path)]
    for value in values:
        command += ["--set", value]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def rbac_only(rendered: str) -> str:
    """The chart's service accounts and RBAC objects, nothing that needs a kubelet."""
    return yaml.safe_dump_all([doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] in RBAC_KINDS])
