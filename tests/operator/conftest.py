"""Fixtures for the operator tests: unique namespaces, an injected clock, the operator in-process."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

# The helpers next to this file import as top-level modules, like the suite's `cluster` package.
sys.path.insert(0, str(Path(__file__).parent))

from operator_harness import TEST_LABEL, Api, ManualClock, OperatorThread, WebhookReceiver, serving

from cluster.controlplane import ControlPlane
from spendgate.operator.config import OperatorConfig

START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Api:
    return Api(control_plane)


@pytest.fixture
def run_id(control_plane: ControlPlane) -> Iterator[str]:
    """A suffix for this test's names; cluster-scoped CostCenters carrying it are deleted after."""
    suffix = secrets.token_hex(3)
    yield suffix
    control_plane.kubectl("delete", "costcenters", "-l", f"{TEST_LABEL}={suffix}", "--wait=false")


@pytest.fixture
def operator_namespace(control_plane: ControlPlane, run_id: str) -> str:
    # Unique, because namespaces never finish deleting without a controller-manager.
    name = f"sg-system-{run_id}"
    control_plane.kubectl("create", "namespace", name)
    return name


@pytest.fixture
def policy_namespace(control_plane: ControlPlane, run_id: str) -> str:
    name = f"sg-policies-{run_id}"
    control_plane.kubectl("create", "namespace", name)
    return name


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def operator_config(control_plane: ControlPlane, operator_namespace: str, policy_namespace: str) -> OperatorConfig:
    return OperatorConfig(
        namespace=operator_namespace, policy_namespaces=(policy_namespace,), kubeconfig=control_plane.kubeconfig,
        identity="operator-under-test", write_interval=0.2, retry_delay=0.2, alert_backoffs=(0.05, 0.1),
        alert_request_timeout=2.0, watch_server_timeout=30,
    )


@pytest.fixture
def start_operator(operator_config: OperatorConfig, clock: ManualClock) -> Iterator[Callable[..., OperatorThread]]:
    started: list[OperatorThread] = []

    def start(**overrides: Any) -> OperatorThread:
        operator = OperatorThread(replace(operator_config, **overrides), clock).start()
        started.append(operator)
        return operator

    yield start
    for operator in started:
        operator.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    yield from serving(WebhookReceiver())
