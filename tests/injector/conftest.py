"""Fixtures for the injector tests: a release of the chart with injection on, its namespaces."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers next to this file import as top-level modules, like the suite's `cluster` package.
sys.path.insert(0, str(Path(__file__).parent))

from harness import Namespaces, Release, RunningInjector, chart_release, running_injector, wait_for_injection

from cluster.controlplane import ControlPlane


@pytest.fixture(scope="module")
def namespaces(control_plane: ControlPlane) -> Namespaces:
    suffix = secrets.token_hex(3)
    names = Namespaces(f"sg-{suffix}", f"team-{suffix}", f"other-{suffix}", f"elsewhere-{suffix}")
    for name in (names.release, names.labelled, names.other, names.unprepared):
        control_plane.kubectl("create", "namespace", name)
    control_plane.kubectl("label", "namespace", names.labelled, "spendgate.io/inject=enabled")
    return names


@pytest.fixture(scope="module")
def release(namespaces: Namespaces) -> Release:
    return chart_release(namespaces.release, namespaces.release,
                         f"operator.bundleNamespaces={{{namespaces.labelled},{namespaces.other}}}")


@pytest.fixture(scope="module")
def injector(control_plane: ControlPlane, release: Release, namespaces: Namespaces,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningInjector]:
    with running_injector(control_plane, release, tmp_path_factory.mktemp("injector")) as running:
        wait_for_injection(control_plane, namespaces.other)
        yield running
