"""The injected proxy's flags are `spendgate proxy`'s real flags, and a proxy started with exactly
the injected arguments serves, reports its spend and follows the bundle on the real API server."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from harness import chart_release

from cluster.controlplane import (
    LOOPBACK,
    REPO_ROOT,
    ControlPlane,
    ManagedProcess,
    answers_ok,
    free_loopback_ports,
    wait_until,
)
from cluster.helm import render
from cluster.polling import eventually
from spendgate.adapters.policyfiles import compile_directory
from spendgate.cli import build_parser
from spendgate.operator.injector.settings import SidecarSettings
from spendgate.operator.injector.sidecar import STATE_DIR, UPSTREAM_KEY_DIR, proxy_args, proxy_container
from spendgate.policy import bundlemap


def parse_proxy_args(args: list[str]) -> argparse.Namespace:
    """`spendgate proxy`'s own parser; an unknown or renamed flag fails here with argparse's message."""
    try:
        return build_parser(requested="proxy").parse_args(args)
    except SystemExit as exit_:
        raise AssertionError(f"spendgate proxy refuses {args}") from exit_


@pytest.mark.parametrize("settings", [{"bundleSource": "API"}, {"bundleSource": "Mount"}])
def test_the_sidecar_args_are_the_proxys_flags(settings: dict[str, Any]) -> None:
    sidecar = SidecarSettings(image="spendgate:dev", reportNamespace="sg", **settings)

    parsed = parse_proxy_args(proxy_args(sidecar, "team"))

    assert parsed.command == "proxy" and parsed.port == sidecar.port and parsed.admin_port == sidecar.adminPort
    assert str(parsed.state_dir) == STATE_DIR


def test_the_chart_gateway_args_are_the_proxys_flags() -> None:
    gateway = next(doc for doc in yaml.safe_load_all(render("sg")) if doc and doc["kind"] == "Deployment"
                   and doc["metadata"]["name"] == "spendgate-gateway")
    parse_proxy_args(gateway["spec"]["template"]["spec"]["containers"][0]["args"])


def test_a_proxy_started_with_the_injected_arguments_serves_and_reports(
        control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    team = f"{namespace}-team"
    control_plane.kubectl("create", "namespace", team)
    release = chart_release("sidecar", namespace, f"operator.bundleNamespaces={{{team}}}")
    port, admin_port, upstream_port = free_loopback_ports(3)
    settings = SidecarSettings.model_validate({**release.settings, "port": port, "adminPort": admin_port})
    key = subprocess.run([sys.executable, "-m", "spendgate.cli", "keys", "create", "--developer", "alice",
                          "--cost-center", "platform", "--keys-file", str(tmp_path / "keys.json")],
                         capture_output=True, text=True, check=True).stdout.strip()
    compiled = compile_directory(REPO_ROOT / "examples" / "policies", tmp_path / "keys.json")
    control_plane.apply(json.dumps(bundlemap.render(compiled.bundle, team)))
    (tmp_path / "upstream").mkdir()
    (tmp_path / "upstream" / settings.upstreamKeySecret.key).write_text("upstream-key-of-the-test\n")

    container = proxy_container(settings, team)
    local = {"$(POD_IP)": LOOPBACK, UPSTREAM_KEY_DIR: str(tmp_path / "upstream"), STATE_DIR: str(tmp_path / "state"),
             settings.upstream: f"http://{LOOPBACK}:{upstream_port}"}
    args = [_substitute(arg, local) for arg in container["args"]]
    # What the pod gives the container: credentials (here a kubeconfig) and its name.
    environment = ["env", f"KUBECONFIG={control_plane.kubeconfig}", "POD_NAME=devpod-1"]
    upstream = ManagedProcess("upstream", [sys.executable, "-m", "spendgate.testing.upstream",
                                           f"--port={upstream_port}"], tmp_path / "upstream.log")
    proxy = ManagedProcess("sidecar", [*environment, sys.executable, "-m", "spendgate.cli", *args],
                           tmp_path / "proxy.log")
    try:
        wait_until(lambda: answers_ok(f"http://{LOOPBACK}:{admin_port}/readyz"), proxy, 60)
        reply = httpx.post(f"http://{LOOPBACK}:{port}/v1/messages", headers={"x-api-key": key,
                                                                            "anthropic-version": "2023-06-01"},
                           json={"model": "claude-opus-5-5", "max_tokens": 64,
                                 "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
        assert reply.status_code == 200, reply.text

        def report() -> dict[str, Any] | None:
            found = control_plane.kubectl("get", "spendreports.spendgate.io", "devpod-1", "-n", namespace,
                                          "-o", "json", check=False)
            return json.loads(found.stdout) if found.returncode == 0 else None

        assert eventually(report, what="the sidecar's SpendReport")["spec"]["proxy"] == "devpod-1"
    finally:
        proxy.stop()
        upstream.stop()


def _substitute(arg: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        arg = arg.replace(old, new)
    return arg

