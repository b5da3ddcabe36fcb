"""Suite-wide fixtures. Keep this file small: each test folder adds its own conftest.py."""

from collections.abc import Iterator

import pytest

from cluster.controlplane import ControlPlane


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver with the repository's CRDs, started on first request, once per session.

    A start-up failure makes every test that needs the cluster error with the reason; none skip.
    """
    with ControlPlane.start() as started:
        yield started
