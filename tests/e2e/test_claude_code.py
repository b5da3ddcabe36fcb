"""The real Claude Code CLI through a proxy of the fleet, as the developer's wallet fills: a normal
turn, a turn quietly served by the next model in the cascade, and the pause, shown at once after a
single request (no retry storm)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.polling import eventually
from e2e.conftest import NewTenant
from e2e.fleet import OPUS, SONNET, Fleet, send, state_seen
from proxy.claude_code import install_claude, run_claude_sync

pytestmark = [pytest.mark.cluster, pytest.mark.claude]


@pytest.fixture(scope="session")
def claude() -> Path:
    return install_claude()


def spend(fleet: Fleet, key: str, count: int) -> None:
    for _ in range(count):
        assert send(fleet.proxies[0], key).status_code == 200


def test_claude_code_under_budget_downgraded_then_paused(claude: Path, fleet: Fleet, new_tenant: NewTenant,
                                                         tmp_path: Path) -> None:
    tenant = new_tenant(limit="1.00")
    proxy, upstream = fleet.proxies[0], fleet.upstream
    assert upstream is not None

    def turn() -> tuple[int | None, str, str, list[str], list[dict[str, object]]]:
        """One `claude -p`; with the models it sent upstream and the ledger lines it left."""
        sent, lines = len(upstream.messages()), len(mine())
        code, out, err = run_claude_sync(claude, proxy.url, tenant.key, tmp_path)
        eventually(lambda: len(mine()) > lines, 5.0, "the turn's ledger line")
        return code, out, err, [m["model"] for m in upstream.messages()[sent:]], mine()[lines:]

    def mine() -> list[dict[str, object]]:
        """The ledger lines of Claude Code's requests (they carry its session header; probes do not)."""
        return [line for line in proxy.ledger()
                if line["developer"] == tenant.developer and line["sessionSource"] == "header"]

    # Under budget: the model Claude Code asked for.
    code, out, err, models, lines = turn()
    assert code == 0, err
    assert "ok" in out
    assert models == [OPUS] and [line["outcome"] for line in lines] == ["ok"]
    assert lines[0]["costUSD"] == "0.06"

    # 0.06 + 15 x 0.06 = $0.96 of $1.00: Downgrade. Claude Code's next turn goes to Sonnet and still succeeds.
    spend(fleet, tenant.key, 15)
    eventually(lambda: state_seen(proxy, tenant.key) == "Downgrade", 5.0, "Downgrade")
    code, out, err, models, lines = turn()
    assert code == 0, err
    assert "ok" in out
    assert models == [SONNET]
    assert [(line["requestedModel"], line["servedModel"], line["costUSD"]) for line in lines] == [
        (OPUS, SONNET, "0.03")]

    # 0.99 + 4 x 0.03 = $1.11: Paused. One request, refused, shown at once; nothing goes upstream.
    spend(fleet, tenant.key, 4)
    eventually(lambda: state_seen(proxy, tenant.key) == "Paused", 5.0, "Paused")
    code, out, err, models, lines = turn()
    assert code != 0
    assert "spend limit reached (daily; resets " in out + err, out + err
    assert f"Budget {tenant.namespace}/{tenant.budget}" in out + err
    assert models == []
    assert [(line["status"], line["outcome"]) for line in lines] == [(429, "rejected")], lines
