"""The FOCUS rows, pure: FOCUS 1.4's mandatory columns, UTC periods with exclusive ends, token units,
x_ custom columns, and BilledCost that adds up to the ledger's cost exactly."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from spendgate.logic.focus import COLUMNS, Account, focus_rows, split_exactly
from spendgate.logic.pricing import PriceBook, Tokens
from spendgate.logic.usage import Month, UsageRow, UsageTotals
from spendgate.policy.bundle import CostCenterEntry, PricingEntry

NOVEMBER = Month(2026, 11)
BOOK = PriceBook(PricingEntry())
COST_CENTERS = [CostCenterEntry(name="engineering", code="ENG-1000", displayName="Engineering"),
                CostCenterEntry(name="platform", code="ENG-1200", displayName="Platform Engineering",
                                parent="engineering", ancestors=["engineering"])]
# FOCUS 1.4, Cost and Usage dataset, feature level Mandatory (specification/datasets/cost_and_usage/columns).
MANDATORY = {"BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
             "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
             "ChargePeriodStart", "ContractedCost", "EffectiveCost", "HostProviderName", "InvoiceIssuerName",
             "ListCost", "PricingQuantity", "PricingUnit", "ServiceCategory", "ServiceName", "ServiceProviderName"}
KEY = ("2026-11-30", "platform", "alice", "acme/payments-api", "s-1", "claude-opus-5-5")


def rows_of(tokens: Tokens, cost: Decimal, key: tuple[str, ...] = KEY) -> list[dict[str, str]]:
    usage = [UsageRow(key, UsageTotals(requests=1, tokens=tokens, cost=cost, records=1))]
    return [dict(zip(COLUMNS, row, strict=True)) for row in
            focus_rows(NOVEMBER, usage, COST_CENTERS, BOOK, Account("org-123", "ACME"))]


def test_every_mandatory_column_then_the_custom_ones() -> None:
    focus = [column for column in COLUMNS if not column.startswith("x_")]
    custom = COLUMNS[len(focus):]
    assert set(focus) >= MANDATORY
    assert custom and all(column.startswith("x_") for column in custom)
    assert list(COLUMNS[:len(focus)]) == focus  # FOCUS columns come first


def test_one_row_per_token_type_in_utc_with_exclusive_ends_and_list_prices() -> None:
    tokens = Tokens(input=1000, cache_read=2_000_000, output=500)
    rates = BOOK.rates("claude-opus-5-5", date(2026, 11, 30))
    list_cost = tokens.cost(rates)

    rows = rows_of(tokens, list_cost)

    assert [row["SkuMeter"] for row in rows] == ["Input Tokens", "Cache Read Tokens", "Output Tokens"]
    first = rows[0]
    assert (first["ChargePeriodStart"], first["ChargePeriodEnd"]) == ("2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z")
    assert (first["BillingPeriodStart"], first["BillingPeriodEnd"]) == ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
    assert (first["ConsumedQuantity"], first["ConsumedUnit"], first["PricingQuantity"], first["PricingUnit"]) == (
        "1000", "Tokens", "0.001", "1000000 Tokens")
    assert first["ListUnitPrice"] == str(rates.input.base.normalize())
    assert all(row["BilledCost"] == row["ListCost"] == row["EffectiveCost"] == row["ContractedCost"] for row in rows)
    assert sum(Decimal(row["BilledCost"]) for row in rows) == list_cost
    assert (first["x_CostCenterCode"], first["x_CostCenterName"], first["x_CostCenterPath"], first["x_Developer"],
            first["x_Repository"], first["x_Session"]) == ("ENG-1200", "Platform Engineering", "ENG-1000 > ENG-1200",
                                                            "alice", "acme/payments-api", "s-1")
    assert (first["ChargeCategory"], first["ChargeClass"], first["BillingCurrency"], first["BillingAccountId"]) == (
        "Usage", "", "USD", "org-123")


def test_a_cost_unlike_the_list_price_is_split_over_the_meters_and_adds_up_exactly() -> None:
    tokens = Tokens(input=333, output=777, web_searches=3)
    negotiated = Decimal("0.0271234567")

    rows = rows_of(tokens, negotiated)

    assert sum(Decimal(row["BilledCost"]) for row in rows) == negotiated
    searches = rows[-1]
    assert (searches["SkuMeter"], searches["ConsumedUnit"], searches["PricingUnit"], searches["PricingQuantity"]) == (
        "Web Search Requests", "Requests", "1000 Requests", "0.003")


@given(whole=st.decimals(min_value=0, max_value=1000, places=12),
       weights=st.lists(st.decimals(min_value=0, max_value=1000, places=9), min_size=1, max_size=6))
def test_a_split_always_adds_up_exactly(whole: Decimal, weights: list[Decimal]) -> None:
    parts = split_exactly(whole, weights)

    assert sum(parts, Decimal(0)) == whole
    assert all(part >= 0 for part in parts)
