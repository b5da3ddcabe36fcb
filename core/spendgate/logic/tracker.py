"""A proxy's view of spend: the fleet's, its own, and what is in flight.

It implements enforcement's SpendView. For one (budget, window):

    settled = global - reported + local

`global` is Budget.status.spentUSD as the operator folded it from every proxy's SpendReport,
`local` what this proxy has journaled, and `reported` the most this proxy's SpendReport could hold
when that status arrived: the status folded some report of ours that was in the API before the
operator wrote it, and every report counts here from the moment it is *sent* (not when the API
accepts it), so `reported` is never less than what the status includes. The sum therefore never
exceeds the true fleet-wide spend: a pause decided on it is never a false one. Our own spend always
counts in full, even when no status comes (the operator is down); what is missing is the other
proxies' spend since the status was written, the overshoot bench/overshoot.py measures.
Standalone, global and reported are zero.

In-flight reservations are estimates held from admission to settlement; they can push a budget
to Downgrade but never pause anyone (see enforcement.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Protocol

Charge = tuple[str, str]  # (budget id, window id)


@dataclass
class Totals:
    spent: Decimal
    requests: int


class SpendLog(Protocol):
    """Where requests and their settled spend are made durable (spendgate.adapters.journal.SpendJournal)."""

    def start(self, exchange_id: str, charges: Sequence[Charge], estimate: Decimal, context: Mapping[str, Any],
              ledger_position: tuple[int, int] | None) -> bytes:
        """Journal a request as started; returns the line written (kept until it settles)."""

    def append(self, request_id: str, charges: Sequence[Charge], cost: Decimal, exchange_id: str | None = None
               ) -> None: ...

    def replay(self) -> dict[Charge, Totals]: ...

    def written_since_rewrite(self) -> int:
        """Bytes appended since the journal was last rewritten."""

    def rewrite(self, totals: Mapping[Charge, Totals], open_lines: Iterable[bytes]) -> None:
        """Replace the journal with these totals and the start lines of requests not settled in it."""


# The journal is rewritten from memory (totals and open start lines) once this much was appended,
# so it stays small whatever the traffic: replaying it at start-up is quick and bounded.
REWRITE_BYTES: Final = 8 * 1024 * 1024


@dataclass(frozen=True)
class Reservation:
    """An admitted request's estimated cost, held against its budgets until it settles."""

    charges: tuple[Charge, ...]
    amount: Decimal


class SpendTracker:
    def __init__(self, journal: SpendLog | None = None) -> None:
        self._journal = journal
        self._local: dict[Charge, Totals] = journal.replay() if journal else {}
        # Start lines of requests whose settle line is not in the journal: in flight, or settled in
        # memory while their ledger line could not be written yet (with what they cost).
        self._open: dict[str, bytes] = {}
        self._unjournaled: dict[str, tuple[bytes, tuple[Charge, ...], Decimal]] = {}
        # The fleet's spend of each budget's current window (from its FleetSpend), with `reported` as it
        # was when it came: budget id -> (window id, spent, reported). One entry per budget, so learning
        # a figure costs one lookup, however many budgets the proxy knows.
        self._global: dict[str, tuple[str, Decimal, Decimal]] = {}
        self._reported: dict[Charge, Decimal] = {}
        self._in_flight: dict[Charge, Decimal] = defaultdict(Decimal)
        self.version = 0  # bumps on every local change, so a reporter knows when to report

    # SpendView -----------------------------------------------------------------------------

    def settled(self, budget_id: str, window_id: str) -> Decimal:
        charge = (budget_id, window_id)
        local = self._local.get(charge)
        own = local.spent if local else Decimal(0)
        fleet = self._global.get(budget_id)
        if fleet is None or fleet[0] != window_id:
            return own
        return max(own, fleet[1] - fleet[2] + own)

    def in_flight(self, budget_id: str, window_id: str) -> Decimal:
        return self._in_flight.get((budget_id, window_id), Decimal(0))

    # the request path ----------------------------------------------------------------------

    def reserve(self, charges: Sequence[Charge], amount: Decimal) -> Reservation:
        for charge in charges:
            self._in_flight[charge] += amount
        return Reservation(tuple(charges), amount)

    def begin(self, reservation: Reservation, exchange_id: str, context: Mapping[str, Any],
              ledger_position: tuple[int, int] | None) -> None:
        """Before the request goes upstream: journal that it started, so a proxy killed before it
        settles still accounts for it on restart (at its estimate). May raise the journal's error."""
        if self._journal is not None:
            self._open[exchange_id] = self._journal.start(exchange_id, reservation.charges, reservation.amount,
                                                          context, ledger_position)

    def settle(self, reservation: Reservation, request_id: str, cost: Decimal, exchange_id: str | None = None,
               journal: bool = True) -> None:
        """Count and release in memory (this cannot fail), then journal, before the response completes.

        `journal=False` when the request's ledger line could not be written yet: the journal must
        never be ahead of the ledger (its start line lets a restart settle it from the ledger). A
        journal error propagates after the in-memory state is consistent; the caller logs it."""
        for charge in reservation.charges:
            totals = self._local.setdefault(charge, Totals(Decimal(0), 0))
            totals.spent += cost
            totals.requests += 1
            self._release(charge, reservation.amount)
        self.version += 1
        started = self._open.pop(exchange_id, None) if exchange_id is not None else None
        if not journal:
            if started is not None:
                self._unjournaled[str(exchange_id)] = (started, reservation.charges, cost)
            return
        if self._journal is not None and (reservation.charges or exchange_id is not None):
            self._journal.append(request_id, reservation.charges, cost, exchange_id)
            self._rewrite_when_due()

    def release(self, reservation: Reservation, request_id: str = "", exchange_id: str | None = None) -> None:
        """A request that was never answered (refused, failed before any usage): it costs nothing.
        With its exchange id, the journal closes the request's start line."""
        for charge in reservation.charges:
            self._release(charge, reservation.amount)
        if exchange_id is not None and self._journal is not None:
            self._open.pop(exchange_id, None)
            self._journal.append(request_id, (), Decimal(0), exchange_id)
            self._rewrite_when_due()

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

    def set_global(self, budget_id: str, window_id: str, spent: Decimal | None) -> None:
        """The fleet-wide spend of a budget's current window, as the operator published it (None: unknown)."""
        if spent is None:
            self._global.pop(budget_id, None)
        else:
            self._global[budget_id] = (window_id, spent, self._reported.get((budget_id, window_id), Decimal(0)))

    def forget_global(self, budget_ids: Iterable[str]) -> None:
        """Drop what is known of the fleet's spend of these budgets."""
        for budget_id in budget_ids:
            self._global.pop(budget_id, None)

    def budgets(self) -> set[str]:
        """The budgets this proxy has spend on (journaled or in flight): whose fleet spend it needs."""
        return {budget_id for budget_id, _ in self._local} | {budget_id for budget_id, _ in self._in_flight}

    def set_reported(self, totals: Mapping[Charge, Decimal]) -> None:
        """The most this proxy's SpendReport may hold, per (budget, window): call it with a report's
        values before sending it, and with what the API holds after reading it back."""
        self._reported = dict(totals)

    def adopt(self, totals: Mapping[Charge, Decimal]) -> None:
        """Raise local totals to values found elsewhere (a SpendReport that outlived the journal)."""
        for charge, spent in totals.items():
            current = self._local.setdefault(charge, Totals(Decimal(0), 0))
            current.spent = max(current.spent, spent)

    def forget(self, keep: Iterable[Charge]) -> None:
        """Drop windows that are over; rewrites the journal too."""
        kept = set(keep)
        self._local = {charge: totals for charge, totals in self._local.items() if charge in kept}
        self._rewrite()

    def _rewrite_when_due(self) -> None:
        assert self._journal is not None
        if self._journal.written_since_rewrite() >= REWRITE_BYTES:
            self._rewrite()

    def _rewrite(self) -> None:
        """The journal as memory knows it: totals (less what is settled here but not yet journaled) and
        the start lines of every request not settled in the journal. Costs a few writes, not a replay."""
        if self._journal is None:
            return
        totals = {charge: Totals(t.spent, t.requests) for charge, t in self._local.items()}
        for _, charges, cost in self._unjournaled.values():
            for charge in charges:
                if charge in totals:
                    totals[charge].spent -= cost
                    totals[charge].requests -= 1
        self._journal.rewrite(totals, [*self._open.values(), *(line for line, _, _ in self._unjournaled.values())])
