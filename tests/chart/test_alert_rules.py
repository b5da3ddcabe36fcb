"""The alert rules the chart ships, tested with `promtool test rules` on synthetic series.

The rules come from the rendered chart (every PrometheusRule it renders with monitoring and the
injector on), so the tested rules are the shipped ones; every alert must have a test.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from cluster.controlplane import binary_paths
from cluster.helm import render

TESTS = Path(__file__).parent / "rules"
VALUES = ("monitoring.prometheusRule.enabled=true", "injector.enabled=true", "operator.bundleNamespaces={team}")


def shipped_rule_groups() -> list[dict[str, Any]]:
    documents = [doc for doc in yaml.safe_load_all(render("sg", *VALUES)) if doc]
    return [group for doc in documents if doc["kind"] == "PrometheusRule" for group in doc["spec"]["groups"]]


def alerts_with_tests() -> set[str]:
    return {case["alertname"] for path in TESTS.glob("*.test.yaml")
            for test in yaml.safe_load(path.read_text())["tests"] for case in test.get("alert_rule_test", [])}


def test_the_shipped_rules_pass_promtools_tests(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": shipped_rule_groups()}))
    for path in TESTS.glob("*.test.yaml"):
        shutil.copy(path, tmp_path)
    promtool = str(binary_paths(["promtool"])["promtool"])

    checked = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", *sorted(p.name for p in tmp_path.glob("*.test.yaml"))],
                            cwd=tmp_path, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_shipped_alert_has_a_promtool_test() -> None:
    shipped = {rule["alert"] for group in shipped_rule_groups() for rule in group["rules"] if "alert" in rule}

    assert shipped, "the chart renders no alert"
    assert sorted(shipped - alerts_with_tests()) == [], f"alerts without a test in {TESTS}"
