"""The Argo CD health checks, run the way Argo CD's own test harness runs its built-in ones
(util/lua/health_test.go): every case of every health_test.yaml, through real Lua (LuaJIT, which
behaves like Argo CD's gopher-lua on all of Argo CD's own fixtures), with and without the open
libraries (Argo CD opens only base, table, package and a safe os unless useOpenLibs is set)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import luajit21

from cluster.controlplane import REPO_ROOT, ControlPlane

GITOPS = REPO_ROOT / "examples" / "gitops"
CUSTOMIZATIONS = GITOPS / "resource_customizations"
KINDS = ("Budget", "CostCenter", "RoutingPolicy")
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
# What Argo CD leaves out of a script's globals when useOpenLibs is false (the default).
NOT_OPENED = ("string", "math", "io", "os", "debug", "coroutine", "bit", "jit", "ffi", "require", "dofile",
              "loadfile", "load", "loadstring")


def health(script: str, obj: dict[str, Any], open_libs: bool = True) -> dict[str, str]:
    """Run one health.lua on one object as Argo CD does: `obj` global in, {status, message} out;
    a status Argo CD does not know becomes Unknown."""
    lua = luajit21.LuaRuntime()
    environment = lua.globals()
    if not open_libs:
        for name in NOT_OPENED:
            environment[name] = None
    environment.obj = _to_lua(lua, obj)
    result = lua.execute(script)
    if result is None:
        return {}
    status = str(result["status"])
    if status not in ARGO_STATUSES:
        return {"status": "Unknown", "message": f"invalid health status: {status}"}
    return {"status": status, "message": str(result["message"] or "")}


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({key: _to_lua(lua, item) for key, item in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, item) for item in value])  # 1-based, like Argo CD's decoder
    return value


def cases() -> list[Any]:
    found = []
    for kind in KINDS:
        directory = CUSTOMIZATIONS / "spendgate.io" / kind
        for case in yaml.safe_load((directory / "health_test.yaml").read_text())["tests"]:
            found.append(pytest.param(directory, case, id=f"{kind}-{Path(case['inputPath']).stem}"))
    return found


@pytest.mark.parametrize(("directory", "case"), cases())
@pytest.mark.parametrize("open_libs", [True, False], ids=["open-libs", "argocd-default-libs"])
def test_health_check(directory: Path, case: dict[str, Any], open_libs: bool) -> None:
    obj = yaml.safe_load((directory / case["inputPath"]).read_text())
    assert health((directory / "health.lua").read_text(), obj, open_libs) == case["healthStatus"]


def test_every_kind_and_status_is_covered_and_every_testdata_file_is_listed() -> None:
    seen: dict[str, set[str]] = {}
    for kind in KINDS:
        directory = CUSTOMIZATIONS / "spendgate.io" / kind
        tests = yaml.safe_load((directory / "health_test.yaml").read_text())["tests"]
        listed = {t["inputPath"] for t in tests}
        assert {f"testdata/{p.name}" for p in (directory / "testdata").glob("*.yaml")} == listed
        seen[kind] = {t["healthStatus"]["status"] for t in tests}
    assert seen["Budget"] == {"Healthy", "Degraded", "Progressing", "Suspended"}
    assert seen["CostCenter"] == seen["RoutingPolicy"] == {"Healthy", "Degraded", "Progressing"}


def test_the_argocd_cm_example_is_generated_from_the_scripts() -> None:
    spec = importlib.util.spec_from_file_location("argocd_health_cm", REPO_ROOT / "hack" / "argocd-health-cm.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert (GITOPS / "argocd-cm-health.yaml").read_text() == generator.render(), (
        "examples/gitops/argocd-cm-health.yaml is stale: run python hack/argocd-health-cm.py")
    data = yaml.safe_load((GITOPS / "argocd-cm-health.yaml").read_text())["data"]
    assert data == {f"resource.customizations.health.spendgate.io_{kind}":
                    (CUSTOMIZATIONS / "spendgate.io" / kind / "health.lua").read_text() for kind in KINDS}


@pytest.mark.cluster
def test_the_documented_patch_merges_into_argocds_configmap(control_plane: ControlPlane, tmp_path: Path) -> None:
    """The command of the example's header, against an argocd-cm that has settings of its own."""
    namespace_exists = control_plane.kubectl("get", "namespace", "argocd", check=False).returncode == 0
    if not namespace_exists:
        control_plane.kubectl("create", "namespace", "argocd")
    control_plane.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: argocd-cm, namespace: argocd}\n"
                        "data: {url: 'https://argo.example'}\n")
    header = (GITOPS / "argocd-cm-health.yaml").read_text().splitlines()
    command = next(line for line in header if "kubectl" in line).split("kubectl", 1)[1].split()
    control_plane.kubectl(*[str(REPO_ROOT / arg) if arg.startswith("examples/") else arg for arg in command])

    merged = control_plane.kubectl("get", "configmap", "argocd-cm", "-n", "argocd", "-o", "yaml").stdout
    data = yaml.safe_load(merged)["data"]
    assert data["url"] == "https://argo.example"
    assert data["resource.customizations.health.spendgate.io_Budget"] == (
        CUSTOMIZATIONS / "spendgate.io" / "Budget" / "health.lua").read_text()
