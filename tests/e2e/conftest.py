"""Fixtures for the end-to-end tests: one fleet per session (the operator and three `spendgate proxy`
processes in cluster mode on the suite's API server, the mock upstream, the kubelet stand-in), and
per test its own cost center, developer, key, Budget and webhook receiver, so tests share processes
but no spend."""

from __future__ import annotations

import secrets
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cluster.controlplane import ControlPlane
from e2e.fleet import Cluster, Fleet, cost_center, developer_budget, quiet_time_zone, routing_policy

# The operator tests' helpers (the webhook receiver) import as a top-level module, as they do there.
sys.path.insert(0, str(Path(__file__).parents[1] / "operator"))
from operator_harness import WebhookReceiver, serving

PROXIES = 3


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane) -> Cluster:
    return Cluster(control_plane)


@pytest.fixture(scope="session")
def fleet(control_plane: ControlPlane, cluster: Cluster) -> Iterator[Fleet]:
    run = secrets.token_hex(3)
    namespace = cluster.namespace(f"sg-e2e-{run}")
    policies = cluster.namespace(f"sg-e2e-budgets-{run}")
    with tempfile.TemporaryDirectory(prefix="spendgate-e2e-") as workdir, \
            Fleet.running(control_plane, Path(workdir), namespace, policies, PROXIES) as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    yield from serving(WebhookReceiver())


@dataclass(frozen=True)
class Tenant:
    """One developer with a Daily Budget of their own in a cost center of their own."""

    developer: str
    cost_center: str
    budget: str
    namespace: str
    key: str
    limit: str
    time_zone: str
    policy: str  # its RoutingPolicy (the default cascade, Opus -> Sonnet -> Haiku)
    webhook: str  # the receiver's path the cost center's alerts go to

    def with_limit(self, limit: str) -> dict[str, Any]:
        """The Budget manifest with another limit, as a reviewed pull request would change it."""
        return developer_budget(self.budget, self.namespace, self.cost_center, self.developer, limit, self.time_zone,
                                self.policy)


NewTenant = Callable[..., Tenant]


@pytest.fixture
def new_tenant(cluster: Cluster, fleet: Fleet, receiver: WebhookReceiver, control_plane: ControlPlane
               ) -> Iterator[NewTenant]:
    created: list[str] = []

    def create(limit: str = "1.00") -> Tenant:
        run = secrets.token_hex(3)
        developer, center, budget = f"dev-{run}", f"cc-{run}", f"dev-{run}-daily"
        webhook = f"/hooks/{run}"
        cluster.create_secret(fleet.namespace, f"hook-{run}", {"url": receiver.url(webhook)})
        target = {"name": "oncall", "type": "Webhook", "secretRef": {"namespace": fleet.namespace,
                                                                      "name": f"hook-{run}"}}
        time_zone = quiet_time_zone()
        cluster.apply(cost_center(center, f"CC-{run}", members=(developer,), targets=(target,)),
                      routing_policy(f"cascade-{run}", fleet.policy_namespace),
                      developer_budget(budget, fleet.policy_namespace, center, developer, limit, time_zone,
                                       f"cascade-{run}"))
        created.append(center)
        key = cluster.create_key(fleet.namespace, f"key-{run}", developer, center)
        budget_id = f"{fleet.policy_namespace}/{budget}"
        fleet.wait_for_bundle(lambda bundle: any(k["name"] == f"key-{run}" for k in bundle["keys"])
                              and any(b["id"] == budget_id for b in bundle["budgets"]),
                              f"key-{run} and {budget_id} in the bundle")
        fleet.wait_until_loaded()
        return Tenant(developer, center, budget, fleet.policy_namespace, key, limit, time_zone, f"cascade-{run}",
                      webhook)

    yield create
    for center in created:  # cluster-scoped: leave nothing behind for other tests
        control_plane.kubectl("delete", "costcenter", center, "--wait=false", check=False)
