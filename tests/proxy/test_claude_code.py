"""The real Claude Code CLI as a client: a `claude -p` turn through the gateway, attributed in the ledger.

Claude Code is installed once per machine by hack/install-claude-code.sh (pinned, from npm) and
runs offline here: its only network peer is the gateway, in front of the mock upstream.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from proxy.claude_code import Terminal, install_claude
from proxy.claude_code import run_claude as run_claude_at
from proxy.proxy_harness import Clock, Keys, Running, StartGateway, message_request
from spendgate.adapters.journal import SpendJournal
from spendgate.api.v1alpha1 import Period
from spendgate.logic.tracker import SpendTracker
from spendgate.logic.windows import window_at
from spendgate.proxy.admission import AdmissionRequest, Decision, Reject
from spendgate.proxy.enforce import BudgetAdmission
from spendgate.proxy.ratelimits import RateLimits
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


# Budgets and rate limits as a developer meets them in Claude Code -------------------------------

EXAMPLE_SETTINGS = Path(__file__).parents[2] / "examples" / "claude-code" / "settings.json"
SPENT = Decimal("34")  # of alice-daily's $40.00 (examples/policies): 85%, past the alert threshold


def spent_today(tmp_path: Path, amount: Decimal) -> SpendJournal:
    journal = SpendJournal(tmp_path / "state" / "spend.journal")
    today = window_at(Period.DAILY, "Europe/Berlin", datetime.now(UTC)).id
    journal.append("earlier", [("ai-budgets/alice-daily", today)], amount)
    return journal


async def enforcing(start_gateway: StartGateway, journal: SpendJournal, rates: RateLimits | None = None) -> Running:
    budgets = BudgetAdmission(SpendTracker(journal), rates)
    return await start_gateway(admission=budgets, spend_sink=budgets, budgets=budgets)


def with_example_settings(workdir: Path, gateway: Running) -> None:
    """The project's .claude/settings.json: examples/claude-code/settings.json, pointed at this gateway."""
    settings = json.loads(EXAMPLE_SETTINGS.read_text())
    settings["env"]["ANTHROPIC_BASE_URL"] = gateway.url
    (workdir / ".claude").mkdir(parents=True, exist_ok=True)
    (workdir / ".claude" / "settings.json").write_text(json.dumps(settings))


def interactive(gateway: Running, home: Path, **credentials: str) -> dict[str, str]:
    """Claude Code's environment in a terminal; `spendgate` on its PATH, as installed with pip."""
    return {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOME": str(home),
            "TERM": "xterm-256color", "TZ": "UTC", "DISABLE_TELEMETRY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "ANTHROPIC_BASE_URL": gateway.url, **credentials}


async def test_the_status_line_shows_the_developers_budget(claude: Path, start_gateway: StartGateway, keys: Keys,
                                                           upstream: MockUpstream, tmp_path: Path) -> None:
    """The shipped settings' statusLine runs `spendgate statusline`; Claude Code renders its line."""
    gateway = await enforcing(start_gateway, spent_today(tmp_path, SPENT))
    workdir = tmp_path / "project"
    with_example_settings(workdir, gateway)
    with Terminal(claude, interactive(gateway, tmp_path / "home", ANTHROPIC_API_KEY=keys.alice), workdir) as terminal:
        screen = await terminal.wait_for("alice-daily 85% · Alert · $34.00 of $40.00 · resets ")
    midnight = window_at(Period.DAILY, "Europe/Berlin", datetime.now(UTC)).end.strftime("%H:%M")
    assert f"alice-daily 85% · Alert · $34.00 of $40.00 · resets {midnight}" in screen


async def test_in_gateway_mode_claude_code_warns_at_the_alert_threshold(
        claude: Path, start_gateway: StartGateway, keys: Keys, upstream: MockUpstream, tmp_path: Path) -> None:
    """With the virtual key as ANTHROPIC_AUTH_TOKEN (the shipped settings set CLAUDE_CODE_USE_GATEWAY),
    the usage headers of an 85% budget make Claude Code show its own warning after the turn."""
    gateway = await enforcing(start_gateway, spent_today(tmp_path, SPENT))
    workdir = tmp_path / "project"
    with_example_settings(workdir, gateway)
    environment = interactive(gateway, tmp_path / "home", ANTHROPIC_AUTH_TOKEN=keys.alice)
    with Terminal(claude, environment, workdir) as terminal:
        await terminal.wait_for("alice-daily 85%")  # started (the status line is drawn)
        terminal.type("Run the tests.")
        screen = await terminal.wait_for("You've used 85% of your usage credits")
    assert "resets " in screen.split("You've used 85% of your usage credits")[1].splitlines()[0]
    [turn] = [line for line in gateway.ledger() if line["endpoint"] == "messages"]
    assert (turn["developer"], turn["outcome"], turn["requestedModel"]) == ("alice", "ok", "claude-opus-5-5")


async def test_in_gateway_mode_a_pause_shows_our_message_at_once(
        claude: Path, start_gateway: StartGateway, keys: Keys, upstream: MockUpstream, tmp_path: Path) -> None:
    gateway = await enforcing(start_gateway, spent_today(tmp_path, Decimal("45")))
    returncode, stdout, stderr = await run_claude_at(
        claude, gateway.url, "", tmp_path, ANTHROPIC_AUTH_TOKEN=keys.alice, CLAUDE_CODE_USE_GATEWAY="1")
    assert returncode != 0
    shown = stdout + stderr
    assert "spend limit reached (daily; resets " in shown and "ai-budgets/alice-daily" in shown
    assert "not your usage limit" not in shown
    assert [line["status"] for line in gateway.ledger()] == [429]  # shown at once, not retried
    assert upstream.requests == []


async def test_claude_code_backs_off_a_rate_limit_and_gets_through(
        claude: Path, start_gateway: StartGateway, policies: Path, keys: Keys, upstream: MockUpstream,
        tmp_path: Path) -> None:
    """A bare 429 rate_limit_error is retried after retry-after: one request 58 s ago fills alice's
    1-a-minute limit, so Claude Code's turn is refused once and goes through about 2-3 s later."""
    limits = policies / "10-costcenters.yaml"
    limits.write_text(limits.read_text().replace(
        "  members: [alice, bob, carol]\n",
        "  members: [alice, bob, carol]\n  rateLimits: {perDeveloper: {requestsPerMinute: 1}}\n"))
    clock = Clock()
    gateway = await enforcing(start_gateway, SpendJournal(tmp_path / "journal"), RateLimits(clock=clock))
    clock.offset = -58.0
    async with gateway.client(keys.alice) as client:
        assert (await client.post("/v1/messages", json=message_request())).status_code == 200
    clock.offset = 0.0
    started = time.monotonic()
    returncode, stdout, stderr = await run_claude(claude, gateway, keys.alice, tmp_path)
    assert returncode == 0, stdout + stderr
    assert TEXT.content[0]["text"] in stdout
    attempts = [line["status"] for line in gateway.ledger()[1:] if line["endpoint"] == "messages"]
    assert attempts == [429, 200]
    assert time.monotonic() - started >= 2
