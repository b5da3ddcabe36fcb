"""After a restart: settle the requests a killed proxy had started and never settled.

Anthropic bills what it served, so a request in flight when the proxy died (SIGKILL, OOM, a node
lost) must still reach the ledger and the budgets. Its start line in the spend journal
(spendgate.adapters.journal) holds the ledger line it gets in that case: its attribution, and
admission's estimate as its cost, flagged `interrupted` and `estimated`.

For each start line without a settle line, in the order settle writes them (ledger line, then
settle line):
- its ledger line is in the ledger file: the proxy died between the two writes; the journal is
  settled with the ledger line's cost, so the two agree;
- it is not: the proxy died before answering; the estimated line is written, then the journal
  settled with the same estimate.
A kill during recovery is harmless: the next start finds what this one wrote and finishes it.

A stdout ledger cannot be read back: every unsettled request then gets its estimated line, and a
kill in the microseconds between a ledger write and its settle line can leave a request with two
lines (the real one and an `interrupted` one sharing its exchangeId). docs/proxy.md says so.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from spendgate.adapters.journal import SpendJournal, Started
from spendgate.logic.tracker import Reservation, SpendTracker
from spendgate.proxy.ledger import LedgerWriter

logger = logging.getLogger("spendgate.proxy")


def settle_interrupted(journal: SpendJournal, tracker: SpendTracker, ledger: LedgerWriter) -> int:
    """Settle every started, unsettled request; returns how many there were."""
    unfinished = journal.read().unfinished()
    if not unfinished:
        return 0
    in_ledger = ledger.find({started.exchange_id for started in unfinished})
    estimated = 0
    for started in unfinished:
        line = in_ledger.get(started.exchange_id)
        if line is None:
            line = dict(started.context)
            ledger.write(line, now=True)
            estimated += 1
        _settle(tracker, started, str(line["requestId"]), Decimal(str(line["costUSD"])))
    logger.warning("settled %d requests a previous run left unsettled: %d from their ledger lines, %d at their "
                   "estimate (flagged interrupted)", len(unfinished), len(unfinished) - estimated, estimated)
    return len(unfinished)


def _settle(tracker: SpendTracker, started: Started, request_id: str, cost: Decimal) -> None:
    nothing_in_flight = Reservation(started.charges, Decimal(0))  # a new process holds no reservation
    if cost:
        tracker.settle(nothing_in_flight, request_id, cost, started.exchange_id)
    else:
        tracker.release(nothing_in_flight, request_id, started.exchange_id)
