"""The real Claude Code CLI as a client: a `claude -p` turn through the gateway, attributed in the ledger.

Claude Code is installed once per machine by hack/install-claude-code.sh (pinned, from npm) and
runs offline here: its only network peer is the gateway, in front of the mock upstream.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.claude_code import install_claude
from proxy.claude_code import run_claude as run_claude_at
from proxy.proxy_harness import Keys, Running, StartGateway
from spendgate.proxy.admission import AdmissionRequest, Decision, Reject
from spendgate.testing.upstream import TEXT, MockUpstream

pytestmark = pytest.mark.claude


@pytest.fixture(scope="session")
def claude() -> Path:
    return install_claude()


async def run_claude(claude: Path, gateway: Running, key: str, workdir: Path) -> tuple[int | None, str, str]:
    return await run_claude_at(claude, gateway.url, key, workdir)


async def test_a_claude_code_turn_through_the_gateway(claude: Path, gateway: Running, keys: Keys,
                                                      upstream: MockUpstream, tmp_path: Path) -> None:
    returncode, stdout, stderr = await run_claude(claude, gateway, keys.alice, tmp_path)
    assert returncode == 0, stderr
    assert TEXT.content[0]["text"] in stdout

    [turn] = [request for request in upstream.requests if request.path == "/v1/messages"]
    session = turn.header("x-claude-code-session-id")
    assert session
    [line] = [line for line in gateway.ledger() if line["endpoint"] == "messages"]
    assert (line["developer"], line["costCenter"], line["keyName"]) == ("alice", "platform", "alice-laptop")
    assert (line["session"], line["sessionSource"]) == (session, "header")
    assert (line["repo"], line["branch"], line["stream"], line["outcome"]) == ("org/payments", "main", True, "ok")
    assert line["requestedModel"] == turn.json()["model"]
    assert float(line["costUSD"]) > 0


class Paused:
    def admit(self, request: AdmissionRequest) -> Decision:
        return Reject(429, "billing_error", PAUSE_MESSAGE, reason="paused",
                      headers=(("x-should-retry", "false"), ("retry-after", "40000")))


PAUSE_MESSAGE = "spend limit reached (daily; resets 2026-11-25 00:00 UTC) · ask #ai-platform"


async def test_claude_code_shows_a_pause_at_once_without_retrying(
        claude: Path, start_gateway: StartGateway, keys: Keys, upstream: MockUpstream, tmp_path: Path) -> None:
    """The shape admission's Reject gives a paused budget (contract 2.5) is one Claude Code does not retry."""
    gateway = await start_gateway(admission=Paused())
    returncode, stdout, stderr = await run_claude(claude, gateway, keys.alice, tmp_path)
    assert returncode != 0
    assert PAUSE_MESSAGE in stdout + stderr
    assert upstream.requests == []
    assert [line["outcome"] for line in gateway.ledger()] == ["rejected"]
