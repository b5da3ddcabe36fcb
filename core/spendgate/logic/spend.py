"""Budget arithmetic shared by the proxy and the operator: states, percentages, report folding.

All money is Decimal. Reports are cumulative per (proxy, budget, window), so folding takes each
proxy's latest report and sums across proxies: a duplicated or reordered report changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

from spendgate.api.v1alpha1 import BudgetState, SpendEntry, SpendReportSpec
from spendgate.policy.bundle import ThresholdEntry

CENT = Decimal("0.01")
HUNDRED = Decimal(100)
# The states as plain names for per-request code: on Python 3.11 reading `BudgetState.PAUSED` goes through
# the enum's metaclass (~0.15 us, several times a decision); a module global is a dictionary hit.
OK, ALERT, DOWNGRADE, PAUSED = BudgetState.OK, BudgetState.ALERT, BudgetState.DOWNGRADE, BudgetState.PAUSED
SEVERITY = {OK: 0, ALERT: 1, DOWNGRADE: 2, PAUSED: 3}


def percent_used(spent: Decimal, limit: Decimal) -> Decimal:
    return spent * HUNDRED / limit


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A budget's thresholds as dollar amounts: states are then plain comparisons (no division)."""

    alert: Decimal
    downgrade: Decimal
    pause: Decimal

    @classmethod
    def of(cls, limit: Decimal, thresholds: ThresholdEntry) -> Thresholds:
        return cls(limit * thresholds.alertPercent / HUNDRED, limit * thresholds.downgradePercent / HUNDRED,
                   limit * thresholds.pausePercent / HUNDRED)

    def state(self, spent: Decimal) -> BudgetState:
        if spent >= self.pause:
            return PAUSED
        if spent >= self.downgrade:
            return DOWNGRADE
        if spent >= self.alert:
            return ALERT
        return OK


def state_for(spent: Decimal, limit: Decimal, thresholds: ThresholdEntry) -> BudgetState:
    return Thresholds.of(limit, thresholds).state(spent)


def most_severe(states: Iterable[BudgetState]) -> BudgetState:
    return max(states, key=SEVERITY.__getitem__, default=BudgetState.OK)


def at_least(state: BudgetState, floor: BudgetState) -> bool:
    return SEVERITY[state] >= SEVERITY[floor]


def to_cents(amount: Decimal) -> str:
    """For people (status columns, messages): rounded half-up to the cent."""
    return str(amount.quantize(CENT, rounding=ROUND_HALF_UP))


def format_usd(amount: Decimal, signed: bool = False) -> str:
    """For reports: dollars to the cent with thousands separators, "$1,234.56" ("+$1.20" when signed)."""
    cents = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    sign = "-" if cents < 0 else ("+" if signed and cents > 0 else "")
    return f"{sign}${abs(cents):,.2f}"


def format_money(amount: Decimal) -> str:
    """For people, whatever the size (messages, `spendgate status`, the status line): dollars with
    thousands separators and at least two decimals, and at least two significant digits, so an amount
    under a cent stays readable: "$1,234.56", "$0.014", "$0.0042", "-$0.00000004", never "$0.00"
    for something that is not zero. Rounded half-up; trailing zeros past the cent are dropped."""
    if not amount:
        return "$0.00"
    # Two significant digits: the first is at 10**adjusted(), so quantize to one place below it.
    places = max(2, 1 - abs(amount).adjusted())
    with localcontext() as context:  # enough digits for any magnitude: quantize never raises
        context.prec = max(28, abs(amount).adjusted() + places + 2)
        rounded = abs(amount).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    whole, _, fraction = f"{rounded:,f}".partition(".")
    fraction = fraction[:2] + fraction[2:].rstrip("0")
    return f"{'-' if amount < 0 else ''}${whole}.{fraction}"


def exact(amount: Decimal) -> str:
    """For machines (reports, ledger): every digit, no exponent, no trailing zeros."""
    text = format(amount.normalize(), "f")
    return text if text != "-0" else "0"


def format_percent(spent: Decimal, limit: Decimal) -> str:
    return f"{percent_used(spent, limit).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


@dataclass(frozen=True)
class FoldedSpend:
    spent: Decimal
    requests: int
    proxies: int


def fold_reports(reports: Iterable[SpendReportSpec], budget: str, window: str) -> FoldedSpend:
    """Total spend of one budget in one window: each proxy's latest cumulative entry, summed."""
    return fold_entries(
        entry for report in latest_reports(reports) for entry in report.entries
        if entry.budget == budget and entry.window == window
    )


def latest_reports(reports: Iterable[SpendReportSpec]) -> list[SpendReportSpec]:
    """Each proxy's report with the highest sequence; an older copy is superseded, never added."""
    latest: dict[str, SpendReportSpec] = {}
    for report in reports:
        known = latest.get(report.proxy)
        if known is None or report.sequence >= known.sequence:
            latest[report.proxy] = report
    return list(latest.values())


def fold_entries(entries: Iterable[SpendEntry]) -> FoldedSpend:
    """The sum of cumulative entries from distinct proxies (one entry per proxy)."""
    spent, requests, proxies = Decimal(0), 0, 0
    for entry in entries:
        spent += Decimal(entry.spentUSD)
        requests += entry.requests
        proxies += 1
    return FoldedSpend(spent=spent, requests=requests, proxies=proxies)
