"""Fixtures for the proxy's tests: the mock Anthropic upstream, keys, and a proxy on free ports.

Everything runs in-process on the test's event loop (the proxy is the same `Proxy` that
`spendgate proxy` serves), so a test can look at the ledger, the metrics and what the upstream
received right after its request. test_cli.py runs the real command as a subprocess.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.proxy_harness import UPSTREAM_KEY, Keys, Running, StartGateway
from spendgate.adapters.keysfile import create_key, revoke_key
from spendgate.proxy.admission import Admission
from spendgate.proxy.budgetviews import BudgetReader
from spendgate.proxy.bundles import PolicyDirectory
from spendgate.proxy.server import Proxy, Settings
from spendgate.proxy.settle import SpendSink
from spendgate.testing.upstream import MockUpstream

EXAMPLES = Path(__file__).parents[2] / "examples" / "policies"


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    shutil.copytree(EXAMPLES, directory)
    return directory


@pytest.fixture
def keys(policies: Path) -> Keys:
    path = policies.parent / "keys.json"  # beside the policies: the loader reads every *.json inside
    alice = create_key(path, name="alice-laptop", developer="alice", cost_center="platform")
    bob = create_key(path, name="bob-laptop", developer="bob", cost_center="engineering")
    revoked = create_key(path, name="mallory-laptop", developer="mallory", cost_center="engineering")
    revoke_key(path, "mallory-laptop")
    return Keys(alice=alice, bob=bob, revoked=revoked, file=path)


@pytest.fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    mock = MockUpstream()
    await mock.start()
    yield mock
    await mock.stop()


@pytest.fixture
async def start_gateway(upstream: MockUpstream, policies: Path, keys: Keys, tmp_path: Path
                        ) -> AsyncIterator[StartGateway]:
    """Start a proxy in front of the mock upstream; keyword arguments override its Settings."""
    started: list[Proxy] = []

    async def start(admission: Admission | None = None, spend_sink: SpendSink | None = None,
                    budgets: BudgetReader | None = None, **overrides: Any) -> Running:
        ledger = tmp_path / f"ledger-{len(started)}.jsonl"
        settings = Settings(**{"source": PolicyDirectory(policies, keys.file), "upstream_key": UPSTREAM_KEY,
                               "upstream_url": upstream.url, "port": 0, "admin_port": 0, "ledger": str(ledger),
                               "reload_interval": 0.02, **overrides})
        proxy = Proxy(settings, admission=admission, spend_sink=spend_sink, budgets=budgets)
        await proxy.start()
        started.append(proxy)
        return Running(proxy, ledger)

    yield start
    for proxy in started:
        await proxy.stop()


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Running:
    return await start_gateway()
