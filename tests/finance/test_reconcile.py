"""`spendgate reconcile` on sample Admin API reports (the documented shape) for the example ledger: a matching
month, a mismatching one, a partial month, and traffic outside the gateway; fetching them with an admin key.

The sample reports live in examples/reconcile/ (matching, with another key's traffic) and
tests/finance/reports/ (mismatching, partial). They are what spendgate.testing.adminreports makes of
examples/reconcile/ledger-2026-11.jsonl; `python tests/finance/test_reconcile.py` writes them again.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from spendgate.testing.adminreports import REQUESTS

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples" / "reconcile"
REPORTS = Path(__file__).resolve().parent / "reports"
LEDGER = EXAMPLES / "ledger-2026-11.jsonl"
GATEWAY = "apikey_01GatewaySpendgateExample"
ADMIN_KEY = "admin-key-of-this-test"  # the local Admin API accepts it; never a real key
SPENDGATE = str(REPO_ROOT / ".venv" / "bin" / "spendgate")


def scenarios() -> dict[Path, tuple[list[Any], date | None]]:
    """Where each sample goes: (the changes to the truth, the day the reports end before)."""
    from spendgate.testing.adminreports import Change

    return {
        EXAMPLES: ([], None),
        REPORTS / "mismatching": ([Change(date(2026, 11, 5), "claude-opus-5-5", extra=Decimal("0.15")),
                                   Change(date(2026, 11, 12), "claude-sonnet-5-5", price=Decimal("1.02")),
                                   Change(date(2026, 11, 20), "claude-opus-5-5", to_next_day=Decimal("0.1"))], None),
        REPORTS / "partial": ([], date(2026, 11, 18)),
    }


def write_samples() -> None:
    from datetime import UTC, datetime

    from spendgate.adapters.ledgerfiles import read_ledgers
    from spendgate.logic.usage import Month
    from spendgate.testing.adminreports import apply, from_ledger, other_traffic, write_reports

    month = Month(2026, 11)
    truth = [*from_ledger(read_ledgers([LEDGER]).records), *other_traffic(month)]
    for folder, (changes, until) in scenarios().items():
        end = datetime(until.year, until.month, until.day, tzinfo=UTC) if until else month.end
        write_reports(apply(truth, changes), month.start, end, folder, month)


def reconcile(*arguments: str, folder: Path = EXAMPLES) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SPENDGATE, "reconcile", "--period", "2026-11", "--ledger", str(LEDGER),
                           "--cost-report", str(folder / "cost-report-2026-11.json"),
                           "--usage-report", str(folder / "usage-report-2026-11.json"), *arguments],
                          capture_output=True, text=True)


def as_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_the_samples_are_what_the_generator_makes(tmp_path: Path) -> None:
    committed = {path: path.read_bytes() for folder in scenarios() for path in folder.glob("*-report-*.json")}
    assert len(committed) == 6
    try:
        write_samples()
        assert {path: path.read_bytes() for path in committed} == committed
    finally:
        for path, data in committed.items():
            path.write_bytes(data)


def test_a_matching_month_exits_0_with_the_spend_outside_the_gateway_on_its_own_line() -> None:
    result = reconcile("--gateway-key", GATEWAY, "--output", "json")

    assert result.returncode == 0, result.stderr
    data = as_json(result)
    assert data["matched"] is True
    assert data["ledgerDollars"] == data["anthropicGatewayDollars"]
    assert {line["status"] for line in data["lines"]} == {"match"}
    assert data["outside"]["keys"] == ["apikey_01DataTeamNightlyBatch"]
    outside, organisation = Decimal(data["outsideDollars"]), Decimal(data["organisationDollars"])
    assert outside + Decimal(data["anthropicGatewayDollars"]) == organisation  # nothing unaccounted for
    assert Decimal(data["outsideShare"]) == outside / organisation
    text = reconcile("--gateway-key", GATEWAY).stdout
    assert "Outside the gateway (other API keys): $86.14, 81.262% of the organisation's $106.01" in text
    assert "Basis: UTC days" in text


def test_a_mismatching_month_exits_1_and_names_the_likely_causes() -> None:
    result = reconcile("--gateway-key", GATEWAY, "--output", "json", folder=REPORTS / "mismatching")

    assert result.returncode == 1, result.stderr
    causes = {(line["day"], line["model"]): line["causes"] for line in as_json(result)["lines"]
              if line["status"] == "mismatch"}
    assert set(causes) == {("2026-11-05", "claude-opus-5-5"), ("2026-11-12", "claude-sonnet-5-5"),
                           ("2026-11-20", "claude-opus-5-5"), ("2026-11-21", "claude-opus-5-5")}
    assert "fewer tokens: a proxy's ledger missing for part of the day" in causes[("2026-11-05", "claude-opus-5-5")][0]
    assert causes[("2026-11-12", "claude-sonnet-5-5")][0].startswith(
        "the price differs: Anthropic billed 1.0200x the gateway's price for the same tokens")
    assert causes[("2026-11-20", "claude-opus-5-5")][0].startswith(
        "day boundary: the usage of 2026-11-20 and 2026-11-21 matches in sum")
    text = reconcile("--gateway-key", GATEWAY, folder=REPORTS / "mismatching").stdout
    assert "4 of " in text and "day x model lines do not match" in text


def test_a_partial_month_compares_the_days_it_covers_and_lists_the_others() -> None:
    result = reconcile("--gateway-key", GATEWAY, "--output", "json", folder=REPORTS / "partial")

    data = as_json(result)
    assert result.returncode == 0, result.stderr
    assert data["uncoveredDays"] == [f"2026-11-{day}" for day in range(18, 31)]
    statuses = {line["day"]: line["status"] for line in data["lines"]}
    assert {status for day, status in statuses.items() if day < "2026-11-18"} == {"match"}
    assert {status for day, status in statuses.items() if day >= "2026-11-18"} == {"not covered"}


def test_without_a_gateway_key_two_keys_are_ambiguous_and_the_error_says_what_to_do() -> None:
    result = reconcile()

    assert result.returncode == 2
    assert result.stderr == ("error: the usage report has 2 API keys (apikey_01DataTeamNightlyBatch, "
                             f"{GATEWAY}); name the gateway's with --gateway-key\n")


@pytest.mark.parametrize(("arguments", "message"), [
    (["--tolerance=-1%"], "tolerance '-1%' must be zero or a positive number like 0.05%"),
    (["--tolerance", "lots"], "tolerance 'lots' is not a number like 0.05%"),
    (["--period", "2026-13"], "period '2026-13' is not a month like 2026-11"),
])
def test_bad_arguments_are_named(arguments: list[str], message: str) -> None:
    result = reconcile("--gateway-key", GATEWAY, *arguments)

    assert result.returncode == 2
    assert message in result.stderr


def test_a_report_that_is_not_the_documented_shape_is_refused_with_the_place(tmp_path: Path) -> None:
    pages = json.loads((EXAMPLES / "cost-report-2026-11.json").read_text())
    pages[0]["data"][2]["results"][0]["amount"] = 12.5
    (tmp_path / "cost-report-2026-11.json").write_text(json.dumps(pages))
    (tmp_path / "usage-report-2026-11.json").write_bytes((EXAMPLES / "usage-report-2026-11.json").read_bytes())

    result = reconcile("--gateway-key", GATEWAY, folder=tmp_path)

    assert result.returncode == 2
    assert "cost-report-2026-11.json: data[2].results[0].amount: Input should be a valid string" in result.stderr


@pytest.fixture
def admin_api() -> Iterator[tuple[str, web.Application]]:
    """The local Admin API serving the matching month's truth to one admin key."""
    from spendgate.adapters.ledgerfiles import read_ledgers
    from spendgate.logic.usage import Month
    from spendgate.testing.adminreports import admin_api as application
    from spendgate.testing.adminreports import from_ledger, other_traffic

    app = application([*from_ledger(read_ledgers([LEDGER]).records), *other_traffic(Month(2026, 11))],
                      ADMIN_KEY)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", app
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def fetching(url: str, tmp_path: Path, key: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """reconcile fetching the reports from the local Admin API with the key in a file."""
    key_file = tmp_path / "admin.key"
    key_file.write_text(key)
    return subprocess.run([SPENDGATE, "reconcile", "--period", "2026-11", "--ledger", str(LEDGER),
                           "--admin-key-file", str(key_file), "--admin-api-url", url, *arguments],
                          capture_output=True, text=True)


def test_fetching_the_reports_with_an_admin_key_file_follows_every_page(admin_api: tuple[str, web.Application],
                                                                       tmp_path: Path) -> None:
    url, app = admin_api

    result = fetching(url, tmp_path, ADMIN_KEY + "\n", "--gateway-key", GATEWAY,
                      "--save-reports", str(tmp_path / "saved"), "--output", "json")

    assert result.returncode == 0, result.stderr
    assert as_json(result)["matched"] is True
    requests = app[REQUESTS]
    paths = [path for path, _ in requests]
    assert paths.count("/v1/organizations/cost_report") == 5  # 30 days at 7 buckets a page
    assert paths.count("/v1/organizations/usage_report/messages") == 5
    query = dict(requests[0][1])
    assert (query["starting_at"], query["ending_at"], query["bucket_width"]) == (
        "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "1d")
    assert ("group_by[]", "description") in requests[0][1]
    assert dict(requests[1][1])["page"] == "page_2026-11-08T00:00:00Z"
    saved = json.loads((tmp_path / "saved" / "cost-report-2026-11.json").read_text())
    assert [page["has_more"] for page in saved] == [True, True, True, True, False]
    assert ADMIN_KEY not in result.stdout + result.stderr
    assert ADMIN_KEY not in (tmp_path / "saved" / "usage-report-2026-11.json").read_text()


def test_a_refused_admin_key_is_reported_without_the_key(admin_api: tuple[str, web.Application],
                                                         tmp_path: Path) -> None:
    url, _ = admin_api

    result = fetching(url, tmp_path, "another-admin-key-of-this-test")

    assert result.returncode == 2
    assert result.stderr == ("error: Admin API /v1/organizations/cost_report: HTTP 401 authentication_error: "
                             "invalid x-api-key\n")


if __name__ == "__main__":
    write_samples()
    print("written", file=sys.stderr)


@pytest.mark.cluster
def test_the_admin_key_can_come_from_a_secret(admin_api: tuple[str, web.Application], control_plane: Any,
                                              tmp_path: Path) -> None:
    url, _ = admin_api
    control_plane.kubectl("create", "namespace", "finance-reconcile", check=False)
    control_plane.kubectl("create", "secret", "generic", "anthropic-admin", "-n", "finance-reconcile",
                          f"--from-literal=api-key={ADMIN_KEY}", check=False)
    environment = {"KUBECONFIG": str(control_plane.kubeconfig), "PATH": "/usr/bin:/bin"}

    result = subprocess.run([SPENDGATE, "reconcile", "--period", "2026-11", "--ledger", str(LEDGER),
                             "--admin-key-secret", "finance-reconcile/anthropic-admin", "--admin-api-url", url,
                             "--gateway-key", GATEWAY], capture_output=True, text=True, env=environment)
    missing = subprocess.run([SPENDGATE, "reconcile", "--period", "2026-11", "--ledger", str(LEDGER),
                              "--admin-key-secret", "finance-reconcile/anthropic-admin:token", "--admin-api-url", url],
                             capture_output=True, text=True, env=environment)

    assert result.returncode == 0, result.stderr
    assert "matches Anthropic's reports" in result.stdout
    assert missing.returncode == 2
    assert missing.stderr == ("error: Secret finance-reconcile/anthropic-admin has no key 'token' (it has: api-key)\n")
