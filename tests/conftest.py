"""Suite-wide fixtures. Keep this file small: each test folder adds its own conftest.py."""

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from cluster.controlplane import ControlPlane
from database.postgres import PostgresServer
from spendgate.adapters.kube import Kube, load_configuration


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver with the repository's CRDs, started on first request, once per session.

    A start-up failure makes every test that needs the cluster error with the reason; none skip.
    """
    with ControlPlane.start() as started:
        yield started


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    """A fresh namespace on the session's API server, for one test."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    return name


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[Kube]:
    """Our API client, logged in with the control plane's admin kubeconfig."""
    client = Kube(load_configuration(control_plane.kubeconfig, None))
    yield client
    await client.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server on loopback (Debian's package), started on first request, once per session.

    Tests that stop it (outages) start it again before they end; each test takes its own database
    with `postgres.new_database()`.
    """
    with PostgresServer.start_new() as server:
        yield server
