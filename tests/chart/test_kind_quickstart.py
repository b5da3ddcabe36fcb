"""What can be checked of the kind quick start without Docker (the kind workflow runs the rest): the
script parses, the values it gives the chart pass the schema and turn injection on, its example
manifests are accepted by the real API server."""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import uuid

import yaml

from cluster.controlplane import REPO_ROOT, ControlPlane
from cluster.helm import render

SCRIPT = REPO_ROOT / "hack" / "kind-up.sh"
# What the script's shell variables hold when it runs without ANTHROPIC_API_KEY.
VARIABLES = {"${image%:*}": "spendgate", "${image#*:}": "dev", "$upstream": "http://mock-anthropic.spendgate-system.svc",
             "$policies": "ai-budgets", "$dev": "spendgate-dev"}


def chart_values() -> list[str]:
    """The `--set` values of the script's helm command, its variables replaced."""
    words = shlex.split(SCRIPT.read_text().replace("\\\n", " "), comments=True)
    values = [value for flag, value in itertools.pairwise(words) if flag == "--set"]
    for variable, replacement in VARIABLES.items():
        values = [value.replace(variable, replacement) for value in values]
    return values


def test_the_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)

    assert result.returncode == 0, result.stderr


def test_the_scripts_chart_values_render_with_injection() -> None:
    values = chart_values()
    kinds = {doc["kind"] for doc in yaml.safe_load_all(render("spendgate-system", *values)) if doc}

    assert "injector.enabled=true" in values and "operator.bundleNamespaces={spendgate-dev}" in values
    assert {"MutatingWebhookConfiguration", "Deployment"} <= kinds


def test_the_example_manifests_are_accepted(control_plane: ControlPlane) -> None:
    suffix = uuid.uuid4().hex[:6]
    text = "\n---\n".join((REPO_ROOT / "examples" / "kind" / name).read_text()
                          for name in ("mock-upstream.yaml", "devpod.yaml"))
    text = text.replace("namespace: spendgate-system", f"namespace: kind-{suffix}").replace(
        "namespace: spendgate-dev", f"namespace: kind-{suffix}")
    control_plane.kubectl("create", "namespace", f"kind-{suffix}")
    documents = [doc for doc in yaml.safe_load_all(text) if doc]
    for pod in (doc for doc in documents if doc["kind"] == "Pod"):
        pod["spec"]["serviceAccountName"] = "default"  # what the ServiceAccount admission plugin sets in a cluster

    result = control_plane.kubectl("apply", "--dry-run=server", "--server-side", "-f", "-",
                                   stdin=yaml.safe_dump_all(documents))

    assert result.stdout.count("(server dry run)") == len(documents) == 3, result.stdout


def test_the_readmes_sample_shows_the_scripts_steps_and_closing_text() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    sample = readme.split("<!-- kind-up output: begin")[1].split("<!-- kind-up output: end -->")[0]
    script = SCRIPT.read_text()
    shown = {"$cluster": "spendgate", "$image": "spendgate:dev", "$system": "spendgate-system",
             "$policies": "ai-budgets", "$dev": "spendgate-dev"}

    def filled(text: str) -> str:
        for variable, value in shown.items():
            text = text.replace(variable, value)
        return text.replace("\\$", "$")

    steps = [filled(step) for step in re.findall(r'^\s*step "(.+)"$', script, re.MULTILINE)]
    closing = filled(script.split("cat <<TXT\n")[1].split("\nTXT")[0])
    assert [line[4:] for line in sample.splitlines() if line.startswith("==> ")] == steps
    assert closing in sample
