"""A proxy's view of spend: what it settled itself, what other proxies reported, what is in flight.

It implements enforcement's SpendView. Settled spend is this proxy's journaled spend plus the
latest cumulative figures the other proxies reported (each proxy's report replaces its previous
one, so nothing is counted twice). In-flight reservations are estimates held from admission to
settlement; they can push a budget to Downgrade but never pause anyone (see enforcement.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from spendgate.journal import Charge, SpendJournal, Totals


@dataclass(frozen=True)
class Reservation:
    charges: tuple[Charge, ...]
    amount: Decimal


class SpendTracker:
    def __init__(self, journal: SpendJournal | None = None) -> None:
        self._journal = journal
        self._local: dict[Charge, Totals] = journal.replay() if journal else {}
        self._others: dict[Charge, Decimal] = {}
        self._in_flight: dict[Charge, Decimal] = defaultdict(Decimal)
        self.version = 0  # bumps on every local change, so a reporter knows when to report

    # SpendView -----------------------------------------------------------------------------

    def settled(self, budget_id: str, window_id: str) -> Decimal:
        charge = (budget_id, window_id)
        local = self._local.get(charge)
        return self._others.get(charge, Decimal(0)) + (local.spent if local else Decimal(0))

    def in_flight(self, budget_id: str, window_id: str) -> Decimal:
        return self._in_flight.get((budget_id, window_id), Decimal(0))

    # the request path ----------------------------------------------------------------------

    def reserve(self, charges: Sequence[Charge], amount: Decimal) -> Reservation:
        for charge in charges:
            self._in_flight[charge] += amount
        return Reservation(tuple(charges), amount)

    def settle(self, reservation: Reservation, request_id: str, cost: Decimal) -> None:
        """Journal first (it must survive a crash), then count, then release the reservation."""
        if self._journal is not None and reservation.charges:
            self._journal.append(request_id, reservation.charges, cost)
        for charge in reservation.charges:
            totals = self._local.setdefault(charge, Totals(Decimal(0), 0))
            totals.spent += cost
            totals.requests += 1
            self._release(charge, reservation.amount)
        self.version += 1

    def release(self, reservation: Reservation) -> None:
        """A request that was never answered (refused, failed before any usage)."""
        for charge in reservation.charges:
            self._release(charge, reservation.amount)

    def _release(self, charge: Charge, amount: Decimal) -> None:
        remaining = self._in_flight[charge] - amount
        if remaining > 0:
            self._in_flight[charge] = remaining
        else:
            del self._in_flight[charge]

    # the report loop -----------------------------------------------------------------------

    def local_totals(self) -> dict[Charge, Totals]:
        """This proxy's cumulative spend per (budget, window): what it reports."""
        return {charge: Totals(t.spent, t.requests) for charge, t in self._local.items()}

    def set_others(self, reported: Iterable[tuple[Charge, Decimal]]) -> None:
        """Replace what the other proxies reported (their latest cumulative values, summed)."""
        others: dict[Charge, Decimal] = defaultdict(Decimal)
        for charge, spent in reported:
            others[charge] += spent
        self._others = dict(others)

    def forget(self, keep: Iterable[Charge]) -> None:
        """Drop windows that are over; compacts the journal too."""
        kept = set(keep)
        self._local = {charge: totals for charge, totals in self._local.items() if charge in kept}
        if self._journal is not None:
            self._journal.compact(kept)
