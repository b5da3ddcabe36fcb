"""The FOCUS export: the month's usage as a FinOps FOCUS 1.4 Cost and Usage dataset. Pure.

One row per UTC day x cost center x developer x repository x session x priced model x meter (a
token type, or web searches). docs/chargeback.md documents every column. The essentials:

- every mandatory column of FOCUS 1.4, plus the conditional ones a metered API has (ConsumedQuantity
  and ConsumedUnit in Tokens, ListUnitPrice, SkuId, SkuMeter, SkuPriceId, ServiceSubcategory);
- UTC timestamps, `YYYY-MM-DDTHH:MM:SSZ`, period ends exclusive (ChargePeriodEnd of a day is the
  next midnight; BillingPeriodEnd the first of the next month);
- PricingUnit `1000000 Tokens` (`1000 Requests` for web searches), the unit Anthropic's prices use;
- custom columns after the FOCUS ones, prefixed `x_`: cost center code, name and path, developer,
  repository, session.

Costs: the ledger prices each request as a whole (tiers, iterations, negotiated prices), so a
group's exact cost is split over its meters in proportion to their list cost (genai-prices' base
rates), at the cost's own decimal places, by largest remainder: the BilledCost of a group's rows
adds up to the ledger's cost exactly, and so does the file's total. ListCost is the list price of
the row's own tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Final

from spendgate.logic.pricing import MILLION, THOUSAND, ModelRates, PriceBook
from spendgate.logic.spend import exact
from spendgate.logic.usage import Month, UsageRow, utc_day_bounds
from spendgate.logic.windows import rfc3339
from spendgate.policy.bundle import CostCenterEntry

FOCUS_VERSION: Final = "1.4"
PROVIDER: Final = "Anthropic"
SERVICE_NAME: Final = "Claude API"
SERVICE_CATEGORY: Final = "AI and Machine Learning"
SERVICE_SUBCATEGORY: Final = "Generative AI"
TOKENS_UNIT: Final = "Tokens"
TOKENS_PRICING_UNIT: Final = "1000000 Tokens"
REQUESTS_UNIT: Final = "Requests"
REQUESTS_PRICING_UNIT: Final = "1000 Requests"
MAX_PLACES: Final = -24  # a split finer than this is rounded by largest remainder; the sums stay exact


@dataclass(frozen=True)
class Meter:
    field: str  # the Tokens attribute
    name: str  # SkuMeter
    per: Decimal  # units per PricingUnit


METERS: Final = (
    Meter("input", "Input Tokens", MILLION),
    Meter("cache_write_5m", "Cache Write 5m Tokens", MILLION),
    Meter("cache_write_1h", "Cache Write 1h Tokens", MILLION),
    Meter("cache_read", "Cache Read Tokens", MILLION),
    Meter("output", "Output Tokens", MILLION),
    Meter("web_searches", "Web Search Requests", THOUSAND),
)

FOCUS_COLUMNS: Final = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "EffectiveCost", "HostProviderName",
    "InvoiceIssuerName", "ListCost", "ListUnitPrice", "PricingQuantity", "PricingUnit", "ServiceCategory",
    "ServiceName", "ServiceProviderName", "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceId",
)
CUSTOM_COLUMNS: Final = ("x_CostCenterCode", "x_CostCenterName", "x_CostCenterPath", "x_Developer", "x_Repository",
                         "x_Session")
COLUMNS: Final = FOCUS_COLUMNS + CUSTOM_COLUMNS


@dataclass(frozen=True)
class Account:
    """The billing account the rows belong to: the Anthropic organization."""

    id: str
    name: str | None = None


def meter_rate(rates: ModelRates, meter: Meter) -> Decimal:
    """The list price of one PricingUnit of the meter."""
    if meter.field == "web_searches":
        return rates.web_searches_per_thousand
    rate = {"input": rates.input, "cache_write_5m": rates.cache_write_5m, "cache_write_1h": rates.cache_write_1h,
            "cache_read": rates.cache_read, "output": rates.output}[meter.field]
    return rate.base


def _exponent(amount: Decimal) -> int:
    exponent = amount.normalize().as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


def split_exactly(whole: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """`whole` split in proportion to `weights`, adding up exactly, at the finest decimal place of `whole`
    and the weights (so weights that add up to `whole` come back unchanged), by largest remainder."""
    if whole == 0:
        return [Decimal(0)] * len(weights)
    weight = sum(weights, Decimal(0))
    if weight == 0:
        return [whole, *([Decimal(0)] * (len(weights) - 1))]
    places = min([_exponent(whole), *(_exponent(part) for part in weights if part), 0])
    quantum = Decimal(1).scaleb(max(places, MAX_PLACES))
    with localcontext() as context:
        context.prec = 60
        shares = [whole * part / weight for part in weights]
    floors = [share.quantize(quantum, rounding=ROUND_FLOOR) for share in shares]
    left = int((whole - sum(floors, Decimal(0))) / quantum)
    for index in sorted(range(len(shares)), key=lambda i: (-(shares[i] - floors[i]), i))[:left]:
        floors[index] += quantum
    return floors


def _paths(cost_centers: Sequence[CostCenterEntry]) -> dict[str, tuple[str, str, str]]:
    """Cost center name -> (code, display name, path of codes from the root)."""
    by_name = {entry.name: entry for entry in cost_centers}
    return {entry.name: (entry.code, entry.displayName or entry.name,
                         " > ".join(by_name[name].code for name in reversed([entry.name, *entry.ancestors])
                                    if name in by_name))
            for entry in cost_centers}


def focus_rows(period: Month, rows: Sequence[UsageRow], cost_centers: Sequence[CostCenterEntry], book: PriceBook,
               account: Account) -> list[tuple[str, ...]]:
    """Rows in COLUMNS order, as text; `rows` keyed by (day, cost center, developer, repository, session,
    priced model) as `usage` returns them for those dimensions."""
    paths = _paths(cost_centers)
    fixed: Mapping[str, str] = {
        "BillingAccountId": account.id, "BillingAccountName": account.name or "", "BillingCurrency": "USD",
        "BillingPeriodStart": rfc3339(period.start), "BillingPeriodEnd": rfc3339(period.end),
        "ChargeCategory": "Usage", "ChargeClass": "", "HostProviderName": PROVIDER, "InvoiceIssuerName": PROVIDER,
        "ServiceCategory": SERVICE_CATEGORY, "ServiceName": SERVICE_NAME, "ServiceProviderName": PROVIDER,
        "ServiceSubcategory": SERVICE_SUBCATEGORY,
    }
    result = []
    for row in sorted(rows, key=lambda r: tuple(value or "" for value in r.key)):
        day_text, cost_center, developer, repository, session, model = row.key
        if day_text is None or not row.totals.records:
            continue
        day = date.fromisoformat(day_text)
        model_id = model or "unknown"
        rates = book.rates(model_id, day)
        counts = [Decimal(getattr(row.totals.tokens, meter.field)) for meter in METERS]
        list_costs = [count * meter_rate(rates, meter) / meter.per for count, meter in zip(counts, METERS, strict=True)]
        billed = split_exactly(row.totals.cost, list_costs)
        code, name, path = paths.get(cost_center or "", (cost_center or "", cost_center or "", cost_center or ""))
        start, end = (rfc3339(bound) for bound in utc_day_bounds(day))
        for meter, count, list_cost, cost in zip(METERS, counts, list_costs, billed, strict=True):
            if not count and not cost:
                continue
            tokens = meter.field != "web_searches"
            values = {
                **fixed,
                "BilledCost": exact(cost), "ContractedCost": exact(cost), "EffectiveCost": exact(cost),
                "ChargeDescription": f"{model_id} {meter.name.lower()}",
                "ChargePeriodStart": start, "ChargePeriodEnd": end,
                "ConsumedQuantity": str(int(count)), "ConsumedUnit": TOKENS_UNIT if tokens else REQUESTS_UNIT,
                "ListCost": exact(list_cost), "ListUnitPrice": exact(meter_rate(rates, meter)),
                "PricingQuantity": exact(count / meter.per),
                "PricingUnit": TOKENS_PRICING_UNIT if tokens else REQUESTS_PRICING_UNIT,
                "SkuId": model_id, "SkuMeter": meter.name, "SkuPriceId": f"{model_id}:{meter.field}",
                "x_CostCenterCode": code, "x_CostCenterName": name, "x_CostCenterPath": path,
                "x_Developer": developer or "", "x_Repository": repository or "", "x_Session": session or "",
            }
            result.append(tuple(values[column] for column in COLUMNS))
    return result
