"""Dry-run benchmark: a 30-day ledger of 100,000 requests replayed through two policy sets (target: under 5 s).

The ledger is synthetic (spendgate ledger synth, seed 1, 40 developers), written to a file, then read and
replayed exactly as `spendgate dry-run` does: read_ledgers (parse every line), DryRun over base and head.

    python bench/replay_bench.py           # prints JSON; the README quotes it
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from spendgate.adapters.ledgerfiles import read_ledgers, write_ledger
from spendgate.adapters.policysource import open_policies
from spendgate.logic.dryrun import DryRun
from spendgate.logic.synth import SynthSettings, synthesize

ROOT = Path(__file__).resolve().parents[1]
BASE, HEAD = ROOT / "examples" / "policies", ROOT / "examples" / "gitops" / "policies"


def run(requests: int, repeats: int) -> dict[str, Any]:
    base, head = open_policies(str(BASE)).result.bundle, open_policies(str(HEAD)).result.bundle
    with tempfile.TemporaryDirectory() as directory:
        ledger = Path(directory) / "ledger.jsonl"
        settings = SynthSettings(start=date(2026, 11, 1), days=30, developers=40, seed=1, requests=requests)
        started = time.perf_counter()
        written = sum(1 for _ in write_ledger(synthesize(base, settings), str(ledger)))
        synth_seconds = time.perf_counter() - started
        reads, replays, totals = [], [], []
        for _ in range(repeats):
            started = time.perf_counter()
            records = read_ledgers([ledger]).records
            read_done = time.perf_counter()
            replay = DryRun(base.bundle, head.bundle)
            replay.feed(records)
            report = replay.report()
            finished = time.perf_counter()
            reads.append(read_done - started)
            replays.append(finished - read_done)
            totals.append(finished - started)
    return {"requests": written, "ledger_mib": round(ledger.stat().st_size / 2**20, 1) if ledger.exists() else None,
            "synth_s": round(synth_seconds, 2), "read_s": [round(t, 2) for t in reads],
            "replay_s": [round(t, 2) for t in replays], "total_median_s": round(statistics.median(totals), 2),
            "base_reproduces": report.base_matches, "replayed": report.replayed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.requests, args.repeats)))


if __name__ == "__main__":
    main()
