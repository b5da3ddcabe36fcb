"""The README's `kubectl get budgets` sample is what the real command prints: the examples' three
Budgets, with spend reported through the real report protocol and folded by the real operator,
listed by the real kubectl. Every column matches the README to the character except AGE, which
only has to look like one (the README's objects are three days old)."""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import yaml

from cluster.controlplane import REPO_ROOT, ControlPlane
from cluster.polling import eventually

sys.path.insert(0, str(REPO_ROOT / "tests" / "operator"))
from operator_harness import Api, FakeProxy, ManualClock, OperatorThread

from spendgate.operator.config import OperatorConfig

pytestmark = pytest.mark.cluster

# The instant the README's sample was taken (its RESETS column follows from it), and the exact
# spend behind its SPENT column: more digits than a person wants to read.
SAMPLE_TIME = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SPEND = {"alice-daily": ("2026-11-24", "38.6114"), "payments-api-weekly": ("2026-W48", "41.1684"),
         "platform-monthly": ("2026-11", "1874.0249")}
AGE = re.compile(r"\S+$")


def readme_sample() -> tuple[str, list[str]]:
    """The command and the printed lines of the README's `kubectl get budgets` block."""
    text = (REPO_ROOT / "README.md").read_text()
    found = re.search(r"```\n\$ (kubectl get budgets[^\n]*)\n(.*?)```", text, re.S)
    assert found is not None, "README.md has no `$ kubectl get budgets` sample block"
    return found[1], found[2].rstrip("\n").splitlines()


def examples_in(namespace: str) -> str:
    """examples/policies with the namespaced objects moved into `namespace` (the namespace itself left out)."""
    documents = [doc for path in sorted((REPO_ROOT / "examples" / "policies").glob("*.yaml"))
                 for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] != "Namespace"]
    for document in documents:
        if document["kind"] in ("Budget", "RoutingPolicy"):
            document["metadata"]["namespace"] = namespace
    return yaml.safe_dump_all(documents)


@pytest.fixture
def operator(control_plane: ControlPlane) -> Iterator[tuple[OperatorThread, str]]:
    run = secrets.token_hex(3)
    system, budgets = f"sg-readme-{run}", f"readme-{run}"
    for namespace in (system, budgets):
        control_plane.kubectl("create", "namespace", namespace)
    config = OperatorConfig(namespace=system, policy_namespaces=(budgets,), kubeconfig=control_plane.kubeconfig,
                            identity="readme-operator", write_interval=0.2, retry_delay=0.2, watch_server_timeout=30)
    running = OperatorThread(config, ManualClock(SAMPLE_TIME)).start()
    yield running, budgets
    running.stop()


def test_kubectl_get_budgets_prints_what_the_readme_shows(control_plane: ControlPlane,
                                                          operator: tuple[OperatorThread, str]) -> None:
    command, sample = readme_sample()
    running, namespace = operator
    control_plane.apply(examples_in(namespace))
    proxy = FakeProxy(control_plane, running.config.namespace, "readme-proxy")
    for budget, (window, spent) in SPEND.items():
        proxy.spend(f"{namespace}/{budget}", window, spent)
    proxy.report(SAMPLE_TIME)
    api = Api(control_plane)

    def folded() -> bool:
        return all(api.status("Budget", name, namespace).get("spentUSD") == spent
                   for name, (_, spent) in SPEND.items())

    eventually(folded, 30.0, "the reported spend in every Budget's status")
    assert command == "kubectl get budgets -n ai-budgets"
    printed = control_plane.kubectl("get", "budgets", "-n", namespace).stdout.rstrip("\n").splitlines()

    assert printed[0] == sample[0]
    assert [without_age(line) for line in printed[1:]] == [without_age(line) for line in sample[1:]]
    assert all(re.fullmatch(r"\d+(s|m|h|d)(\d+(s|m|h))?", AGE.search(line)[0]) for line in printed[1:])  # type: ignore[index]


def without_age(line: str) -> str:
    return AGE.sub("<age>", line)
