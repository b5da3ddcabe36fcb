"""Dry-run benchmark: a 30-day ledger of exactly 100,000 requests replayed through two policy sets (target: under 5 s).

The ledger is synthetic (spendgate ledger synth: seed 1, 40 developers, from 2026-11-01, examples/policies),
written to a file, then read and replayed exactly as `spendgate dry-run --output json` does: read_ledgers
(parse every line, sort by time), DryRun over base (examples/policies) and head (examples/gitops/policies),
the report rendered as JSON. Each phase is timed separately, `--repeats` times; the SHA-256 of the JSON
report shows that a faster replay still reports the same numbers.

`ledger synth --requests N` asks for about N: a paused developer leaves the session, so fewer come out
(86,914 for 100,000). This benchmark raises the request target until at least N come out and keeps the
first N in time order. A prefix of a ledger replays exactly as the whole did up to its last request;
the span it covers is reported (`span_days`).

The machine may be shared: `cpu_median_s` (this process's CPU time) and the load average beside the wall-clock
figures tell a slow run from a busy machine.

    python bench/replay_bench.py                                   # prints JSON; the README quotes it
    python bench/replay_bench.py --ledger var/bench-100k.jsonl     # keep the ledger (reused if present)
    farm-bench -n 5 -- spendgate dry-run --base examples/policies --head examples/gitops/policies \\
        --ledger var/bench-100k.jsonl --output json                # the whole command, start-up included
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import tempfile
import time
from datetime import date
from itertools import islice
from pathlib import Path
from typing import Any

from spendgate.adapters.ledgerfiles import read_ledgers, write_ledger
from spendgate.adapters.policysource import open_policies
from spendgate.cli.dryrun import dry_run_document
from spendgate.cli.output import render
from spendgate.logic.dryrun import DryRun
from spendgate.logic.policydiff import diff_bundles
from spendgate.logic.synth import SynthSettings, synthesize
from spendgate.policy.bundle import SignedBundle

ROOT = Path(__file__).resolve().parents[1]
BASE, HEAD = ROOT / "examples" / "policies", ROOT / "examples" / "gitops" / "policies"
ATTEMPTS = 6


def synthesize_exactly(base: SignedBundle, requests: int, ledger: Path) -> dict[str, Any]:
    """Write the first `requests` lines of a synthetic ledger that has at least that many."""
    target, started = requests, time.perf_counter()
    for _ in range(ATTEMPTS):
        settings = SynthSettings(start=date(2026, 11, 1), days=30, developers=40, seed=1, requests=target)
        written = sum(1 for _ in write_ledger(islice(synthesize(base, settings), requests), str(ledger)))
        if written == requests:
            return {"synth_target": target, "synth_s": round(time.perf_counter() - started, 1)}
        target = math.ceil(target * requests / written * 1.01)
    raise SystemExit(f"no synthetic ledger of {requests} requests after {ATTEMPTS} attempts (last: {written})")


def replay_once(ledger: Path, base: SignedBundle, head: SignedBundle) -> tuple[dict[str, float], str, Any]:
    cpu_started, started = time.process_time(), time.perf_counter()
    records = read_ledgers([ledger]).records
    read = time.perf_counter()
    replay = DryRun(base.bundle, head.bundle)
    replay.feed(records)
    report = replay.report()
    replayed = time.perf_counter()
    changes = [str(change) for change in diff_bundles(base.bundle, head.bundle)]
    document = dry_run_document(report, str(BASE.relative_to(ROOT)), str(HEAD.relative_to(ROOT)), changes, 0, [], 10)
    text = render(document, "json")
    rendered = time.perf_counter()
    phases = {"read": read - started, "replay": replayed - read, "render": rendered - replayed,
              "total": rendered - started, "cpu": time.process_time() - cpu_started}
    return phases, text, report


def run(requests: int, repeats: int, ledger: Path) -> dict[str, Any]:
    base, head = open_policies(str(BASE)).result.bundle, open_policies(str(HEAD)).result.bundle
    made = synthesize_exactly(base, requests, ledger) if not ledger.exists() else {"synth_target": None}
    runs = [replay_once(ledger, base, head) for _ in range(repeats)]
    digests = {hashlib.sha256(text.encode()).hexdigest() for _, text, _ in runs}
    report = runs[-1][2]
    assert report.first is not None and report.last is not None

    def spread(phase: str) -> list[float]:
        return [round(min(p[phase] for p, _, _ in runs), 2), round(max(p[phase] for p, _, _ in runs), 2)]

    return {"requests": report.ledger_requests, "span_days": round((report.last - report.first).total_seconds()
                                                                    / 86400, 2),
            "ledger_mib": round(ledger.stat().st_size / 2**20, 1), **made, "repeats": repeats,
            "total_median_s": round(statistics.median(p["total"] for p, _, _ in runs), 2),
            "total_s": spread("total"), "cpu_median_s": round(statistics.median(p["cpu"] for p, _, _ in runs), 2),
            "load_average": [round(load, 1) for load in os.getloadavg()],
            "read_s": spread("read"), "replay_s": spread("replay"),
            "render_s": spread("render"), "per_request_us": {
                phase: round(statistics.median(p[phase] for p, _, _ in runs) / report.ledger_requests * 1e6, 1)
                for phase in ("read", "replay")},
            "replayed": report.replayed, "base_reproduces": report.base_matches,
            "report_sha256": digests.pop()[:16] if len(digests) == 1 else "DIFFERS BETWEEN RUNS"}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ledger", type=Path, help="keep the ledger here (reused if it exists; delete it after "
                                                    "changing the synthetic ledger or the policies)")
    args = parser.parse_args()
    if args.ledger is not None:
        print(json.dumps(run(args.requests, args.repeats, args.ledger)))
        return
    with tempfile.TemporaryDirectory() as directory:
        print(json.dumps(run(args.requests, args.repeats, Path(directory) / "ledger.jsonl")))


if __name__ == "__main__":
    main()
