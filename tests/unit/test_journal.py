"""The local spend journal and the tracker built on it: nothing answered for is ever lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

from spendgate.adapters.journal import SpendJournal, read_entries, read_journal
from spendgate.logic.tracker import REWRITE_BYTES, SpendTracker

DAY = "2026-11-24"
ALICE, TEAM = ("t/alice", DAY), ("t/team", DAY)


def test_replay_rebuilds_cumulative_spend(tmp_path: Path) -> None:
    journal = SpendJournal(tmp_path / "spend.journal")
    journal.append("r1", [ALICE, TEAM], Decimal("0.004585"))
    journal.append("r2", [TEAM], Decimal("1.1"))
    journal.close()
    totals = SpendJournal(tmp_path / "spend.journal").replay()
    assert (totals[ALICE].spent, totals[ALICE].requests) == (Decimal("0.004585"), 1)
    assert (totals[TEAM].spent, totals[TEAM].requests) == (Decimal("1.104585"), 2)


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "spend.journal"
    journal = SpendJournal(path)
    journal.append("r1", [ALICE], Decimal("2"))
    with path.open("ab") as handle:
        handle.write(b'{"r":"r2","c":"9.9","b":[["t/al')
    journal.close()
    restarted = SpendJournal(path)
    assert restarted.replay()[ALICE].spent == Decimal("2")
    restarted.append("r3", [ALICE], Decimal("1"))
    assert [e.request_id for e in read_entries(path)] == ["r1", "r3"]


def test_sigkill_loses_nothing_that_was_acknowledged(tmp_path: Path) -> None:
    """A child journals requests and acknowledges each; we SIGKILL it mid-stream."""
    path = tmp_path / "spend.journal"
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from decimal import Decimal
        from pathlib import Path
        from spendgate.adapters.journal import SpendJournal
        journal = SpendJournal(Path({str(path)!r}))
        i = 0
        while True:
            journal.append(f"r{{i}}", [("t/alice", "{DAY}")], Decimal("0.01"))
            print(i, flush=True)   # the acknowledgement: the client got its answer
            i += 1
    """)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    acknowledged = -1
    for line in child.stdout:
        acknowledged = int(line)
        if acknowledged >= 2000:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    replayed = SpendJournal(path).replay()[ALICE]
    assert replayed.requests >= acknowledged + 1
    assert replayed.spent == Decimal("0.01") * replayed.requests


def test_compaction_keeps_current_windows_exactly(tmp_path: Path) -> None:
    path = tmp_path / "spend.journal"
    tracker = SpendTracker(SpendJournal(path))
    old = ("t/alice", "2026-11-23")
    for i in range(5):
        tracker.settle(tracker.reserve([ALICE, old], Decimal(0)), f"r{i}", Decimal("0.1"))
    tracker.forget([ALICE])
    tracker.settle(tracker.reserve([ALICE], Decimal(0)), "r9", Decimal("0.05"))
    totals = SpendJournal(path).replay()
    assert old not in totals
    assert (totals[ALICE].spent, totals[ALICE].requests) == (Decimal("0.55"), 6)
    assert len(path.read_text().splitlines()) == 2


def test_the_journal_is_rewritten_from_memory_and_stays_small(tmp_path: Path) -> None:
    """Start and settle lines of every request would grow the journal for ever; past REWRITE_BYTES it
    is rewritten as totals plus the start lines of requests still open, so nothing open is lost."""
    path = tmp_path / "spend.journal"
    journal = SpendJournal(path)
    tracker = SpendTracker(journal)
    context = {"pad": "x" * 4000}
    in_flight = tracker.reserve([ALICE], Decimal("0.5"))
    tracker.begin(in_flight, "xg_open", context, None)
    for number in range(REWRITE_BYTES // 4000 + 10):
        held = tracker.reserve([ALICE], Decimal("0.5"))
        tracker.begin(held, f"xg_{number}", context, None)
        tracker.settle(held, f"r{number}", Decimal("0.01"), f"xg_{number}")
    assert path.stat().st_size < REWRITE_BYTES
    contents = read_journal(path)
    assert [started.exchange_id for started in contents.unfinished()] == ["xg_open"]
    replayed = SpendTracker(SpendJournal(path)).local_totals()[ALICE]
    assert replayed.spent == tracker.local_totals()[ALICE].spent == Decimal("0.01") * (REWRITE_BYTES // 4000 + 10)


def test_tracker_adds_the_fleet_and_holds_reservations(tmp_path: Path) -> None:
    tracker = SpendTracker(SpendJournal(tmp_path / "j"))
    tracker.set_global(*ALICE, Decimal("7"))  # the status: other proxies' 7, none of ours yet
    held = tracker.reserve([ALICE], Decimal("0.5"))
    assert (tracker.settled(*ALICE), tracker.in_flight(*ALICE)) == (Decimal("7"), Decimal("0.5"))
    tracker.settle(held, "r1", Decimal("0.25"))
    assert (tracker.settled(*ALICE), tracker.in_flight(*ALICE)) == (Decimal("7.25"), Decimal("0"))
    assert tracker.local_totals()[ALICE].spent == Decimal("0.25")

    restarted = SpendTracker(SpendJournal(tmp_path / "j"))
    assert restarted.local_totals()[ALICE].spent == Decimal("0.25")


def test_own_reported_spend_is_never_counted_twice() -> None:
    tracker = SpendTracker()
    tracker.settle(tracker.reserve([ALICE], Decimal(0)), "r1", Decimal("2"))
    tracker.set_reported({ALICE: Decimal("2")})
    assert tracker.settled(*ALICE) == Decimal("2")  # the status has not folded our report yet
    tracker.set_global(*ALICE, Decimal("5"))  # now it has: 3 from others + our 2
    assert tracker.settled(*ALICE) == Decimal("5")
    tracker.settle(tracker.reserve([ALICE], Decimal(0)), "r2", Decimal("1"))
    assert tracker.settled(*ALICE) == Decimal("6")
    tracker.set_global("t/alice", "2026-11-25", Decimal("0.5"))  # the window rolled over
    assert tracker.settled(*ALICE) == Decimal("3")  # our own spend in the old window, never less


def test_own_spend_counts_in_full_when_no_status_comes() -> None:
    """The operator is down: our reports go on, the status stays where it was."""
    tracker = SpendTracker()
    tracker.settle(tracker.reserve([ALICE], Decimal(0)), "r1", Decimal("2"))
    tracker.set_reported({ALICE: Decimal("2")})
    tracker.set_global(*ALICE, Decimal("5"))  # 3 from others + our 2; the last status for a while
    for number in range(3):  # we spend 1 and report it, three times over
        tracker.settle(tracker.reserve([ALICE], Decimal(0)), f"r{number + 2}", Decimal("1"))
        tracker.set_reported({ALICE: Decimal(3 + number)})
    assert tracker.settled(*ALICE) == Decimal("8")  # others' 3 as last seen + all 5 of ours


def test_a_status_that_overtakes_our_report_reply_counts_nothing_twice() -> None:
    """The operator may fold a report and its status arrive before the report's own reply: the
    report counts as reported from the moment it is sent."""
    tracker = SpendTracker()
    tracker.settle(tracker.reserve([ALICE], Decimal(0)), "r1", Decimal("2"))
    tracker.set_reported({ALICE: Decimal("2")})  # sending; no reply yet
    tracker.set_global(*ALICE, Decimal("2"))  # the status already includes it
    assert tracker.settled(*ALICE) == Decimal("2")



def test_released_reservations_cost_nothing() -> None:
    tracker = SpendTracker()
    tracker.release(tracker.reserve([ALICE, TEAM], Decimal("1")))
    assert tracker.in_flight(*ALICE) == tracker.in_flight(*TEAM) == Decimal(0)
    assert tracker.settled(*ALICE) == Decimal(0)
