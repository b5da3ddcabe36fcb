"""`spendgate chargeback` end to end: a CSV a spreadsheet opens as it is, totals that add up to the cent, the
same numbers from ledger files and from PostgreSQL, and the FOCUS file."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from database.postgres import PostgresServer
from spendgate.adapters.ledgerfiles import read_ledgers
from spendgate.logic.focus import COLUMNS
from spendgate.logic.usage import Month

REPO_ROOT = Path(__file__).resolve().parents[2]
LEDGER = REPO_ROOT / "examples" / "reconcile" / "ledger-2026-11.jsonl"
POLICIES = REPO_ROOT / "examples" / "policies"
SPENDGATE = str(REPO_ROOT / ".venv" / "bin" / "spendgate")
NOVEMBER = Month(2026, 11)
EXPONENT = re.compile(r"^-?[0-9.]+[eE][-+]?[0-9]+$")


def chargeback(*arguments: str, ledger: str = str(LEDGER)) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SPENDGATE, "chargeback", "--period", "2026-11", "--ledger", ledger,
                           "--policies", str(POLICIES), *arguments], capture_output=True, text=True)


def ledger_total() -> Decimal:
    records = read_ledgers([LEDGER]).records
    return sum((record.cost for record in records if NOVEMBER.start <= record.time < NOVEMBER.end), Decimal(0))


def csv_rows(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff")  # spreadsheets read it as UTF-8
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))


def test_the_csv_opens_in_a_spreadsheet_as_it_is_and_adds_up_to_the_cent(tmp_path: Path) -> None:
    result = chargeback("--output", "csv", "--out", str(tmp_path / "chargeback.csv"))

    assert result.returncode == 0, result.stderr
    data = (tmp_path / "chargeback.csv").read_bytes()
    assert data.count(b"\r\n") == data.count(b"\n")  # RFC 4180 line ends
    rows = csv_rows(data.decode("utf-8"))
    numeric = [name for name in rows[0] if name.endswith(("_usd", "_tokens", "_percent")) or name in
               ("requests", "web_searches")]
    assert all(not EXPONENT.match(row[name]) for row in rows for name in numeric)
    assert all(re.fullmatch(r"-?[0-9]+\.[0-9]{2}", row["cost_usd"]) for row in rows)
    own = [row for row in rows if row["row_type"] == "cost-center"]
    (total,) = [row for row in rows if row["row_type"] == "total"]
    assert sum(Decimal(row["cost_usd"]) for row in own) == Decimal(total["cost_usd"])
    assert sum(Decimal(row["cost_usd_exact"]) for row in own) == Decimal(total["cost_usd_exact"]) == ledger_total()
    (subtotal,) = [row for row in rows if row["row_type"] == "subtotal"]  # engineering = itself + platform
    assert Decimal(subtotal["cost_usd"]) == sum(Decimal(row["cost_usd"]) for row in own
                                                if row["cost_center_path"].startswith("ENG-1000"))
    assert [(row["cost_center_code"], row["cost_center_name"], row["cost_center_path"]) for row in own] == [
        ("ENG-1000", "Engineering", "ENG-1000"), ("ENG-1200", "Platform Engineering", "ENG-1000 > ENG-1200")]
    platform = own[1]
    assert platform["budget"] == "ai-budgets/platform-monthly" and platform["budget_limit_usd"] == "5000"
    assert platform["budget_window"] == ("monthly 2026-11 in America/New_York: 2026-11-01T04:00:00Z to "
                                         "2026-12-01T05:00:00Z")
    assert {row["basis"] for row in rows} == {"UTC month 2026-11-01T00:00:00Z to 2026-12-01T00:00:00Z"}


def test_the_table_labels_each_basis() -> None:
    result = chargeback()

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Chargeback 2026-11 (UTC month): $")
    assert "the UTC calendar month, 2026-11-01T00:00:00Z to 2026-12-01T00:00:00Z (end exclusive)" in result.stdout
    assert "Budgets: limits and spend in each budget's own window" in result.stdout
    assert "UTC 2026-11" in result.stdout


def test_grouped_by_developer_the_rows_add_up_within_each_cost_center() -> None:
    data = json.loads(chargeback("--by", "developer", "--output", "json").stdout)

    rows = data["rows"]
    items = [row for row in rows if row["kind"] == "item"]
    subtotals = {row["costCenter"]: row for row in rows if row["kind"] == "subtotal"}
    for name, subtotal in subtotals.items():
        below = [row for row in items if row["costCenter"] == name]
        children = [other for other, row in subtotals.items() if row["path"].startswith(subtotal["path"] + " > ")]
        parts = [Decimal(row["costUSD"]) for row in below] + [Decimal(subtotals[c]["costUSD"]) for c in children]
        assert sum(parts, Decimal(0)) == Decimal(subtotal["costUSD"]), name
    assert Decimal(rows[-1]["costUSDExact"]) == ledger_total()
    assert {row["developer"] for row in items} >= {"alice", "bob"}


def test_the_focus_file_has_the_mandatory_columns_and_the_ledger_total(tmp_path: Path) -> None:
    out = tmp_path / "focus.csv"

    result = chargeback("--output", "focus", "--out", str(out), "--billing-account-id", "org-0b1c")

    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert list(rows[0]) == list(COLUMNS)
    assert sum(Decimal(row["BilledCost"]) for row in rows) == ledger_total()
    assert all(row["ChargePeriodStart"] < row["ChargePeriodEnd"] and row["ChargePeriodEnd"].endswith("T00:00:00Z")
               for row in rows)
    assert {row["ConsumedUnit"] for row in rows} <= {"Tokens", "Requests"}
    assert {row["BillingAccountId"] for row in rows} == {"org-0b1c"}
    assert all(not EXPONENT.match(row[name]) for row in rows for name in ("BilledCost", "ListCost", "PricingQuantity"))


@pytest.fixture
def postgres_ledger(postgres: PostgresServer) -> str:
    dsn = postgres.new_database()
    loaded = subprocess.run([SPENDGATE, "ledger", "load", str(LEDGER), "--postgres", dsn], capture_output=True,
                            text=True)
    assert loaded.returncode == 0, loaded.stderr
    return dsn


def _without_source(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key != "source"}


def test_the_same_numbers_from_postgresql_as_from_the_files(postgres_ledger: str) -> None:
    from_files = json.loads(chargeback("--output", "json").stdout)
    from_database = json.loads(chargeback("--output", "json", ledger=postgres_ledger).stdout)

    assert _without_source(from_database) == _without_source(from_files)
    assert from_database["source"].startswith("PostgreSQL database test_")
    again = subprocess.run([SPENDGATE, "ledger", "load", str(LEDGER), "--postgres", postgres_ledger],
                           capture_output=True, text=True)
    assert again.returncode == 0 and again.stderr.startswith("0 records stored, ")  # a replay changes nothing
    assert json.loads(chargeback("--output", "json", ledger=postgres_ledger).stdout) == from_database


@pytest.mark.parametrize(("arguments", "message"), [
    (["--ledger", "no/such/ledger"], "error: no/such/ledger: no such ledger file or directory"),
    (["--policies", "no/such/policies"], "does not compile"),
    (["--ledger", "postgresql://nobody@127.0.0.1:1/none"], "error: PostgreSQL: connection"),
    (["--ledger", str(LEDGER), "postgresql://x@127.0.0.1:1/y"], "a PostgreSQL DSN is the whole ledger; give it alone"),
])
def test_bad_input_is_one_line_naming_it(arguments: list[str], message: str) -> None:
    result = subprocess.run([SPENDGATE, "chargeback", "--period", "2026-11", "--ledger", str(LEDGER),
                             "--policies", str(POLICIES), *arguments], capture_output=True, text=True)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
