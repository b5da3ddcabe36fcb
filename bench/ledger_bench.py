"""The ledger store benchmark.

1. Reports: `spendgate chargeback` and `spendgate reconcile` over a million ledger records (30 days
   of the synthetic ledger), each a whole command run (start-up included), several times:
   - embedded, over the JSON lines as the proxies write them;
   - embedded, over the days `spendgate ledger compact` made of them (Parquet);
   - through PostgreSQL (after `spendgate ledger load`, which is timed too).
2. The gateway with the PostgreSQL ledger sink on, against the same gateway with the file ledger
   alone: paired wrk rounds (A B A B ...), the other gateway frozen meanwhile, the ratio taken pair
   by pair so that the machine's drift cancels out. Gateways on core 0; the mock upstream, wrk and
   PostgreSQL on core 1, as in bench/run.py.

The data (about 1 GB) is built on the first run and kept under the bench cache
(~/.cache/spendgate/bench/ledger). Results go to bench/results/ledger-<date>.md.

    .venv/bin/python bench/ledger_bench.py [--only reports|proxy] [--runs 3] [--pairs 5] [--seconds 10]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO / "tests"))  # the suite's throwaway PostgreSQL server

import machine  # noqa: E402
import run as gateway_bench  # noqa: E402
from database.postgres import PostgresServer  # noqa: E402

PERIOD = "2026-11"
RECORDS = 1_000_000
GATEWAY_KEY = "apikey_01GatewaySpendgateExample"


def log(message: str) -> None:
    print(f"[ledger bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def spendgate(*args: str) -> list[str]:
    return [*gateway_bench.spendgate_command(), *args]


def data_dir() -> Path:
    return gateway_bench.cache_dir() / "ledger"


def build_data() -> dict[str, Path]:
    """The million-record ledger, its Anthropic reports and its compacted days, built once."""
    folder = data_dir()
    ledger = folder / "jsonl" / "ledger.jsonl"
    compacted = folder / "compacted"
    reports = folder / "reports"
    if not ledger.exists():
        log(f"writing a synthetic ledger of about {RECORDS:,} records (30 days; a few minutes, once)")
        ledger.parent.mkdir(parents=True, exist_ok=True)
        partial = ledger.with_suffix(".partial")
        # The example cost centers without their budgets: a month of 400 developers would pause most of them.
        policies = folder / "policies"
        policies.mkdir(exist_ok=True)
        shutil.copy(REPO / "examples" / "policies" / "10-costcenters.yaml", policies)
        subprocess.run(spendgate("ledger", "synth", "--days", "30", "--start", f"{PERIOD}-01", "--developers", "400",
                                 "--requests", str(RECORDS), "--seed", "42", "--out", str(partial),
                                 "--policies", str(policies)), check=True)
        partial.replace(ledger)
    if not (reports / f"usage-report-{PERIOD}.json").exists():
        log("writing the Anthropic reports for it (once)")
        subprocess.run([sys.executable, "-m", "spendgate.testing.adminreports", "--ledger", str(ledger), "--period",
                        PERIOD, "--out", str(reports)], check=True, capture_output=True)
    if not compacted.exists():
        work = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
        started = time.monotonic()
        subprocess.run(spendgate("ledger", "compact", str(ledger.parent), "--out", str(work / "days"), "--now",
                                 "2026-12-03T00:00:00Z"), check=True, capture_output=True)
        (folder / "compaction-seconds").write_text(f"{time.monotonic() - started:.2f}")
        (work / "days").replace(compacted)
        shutil.rmtree(work)
    return {"ledger": ledger.parent, "compacted": compacted, "reports": reports}


def timed(argv: list[str], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        machine.wait_quiet()
        started = time.monotonic()
        completed = subprocess.run(argv, capture_output=True, text=True)
        seconds.append(time.monotonic() - started)
        if completed.returncode not in (0, 1):  # reconcile exits 1 on a mismatch
            raise RuntimeError(f"{' '.join(argv[:3])} failed: {completed.stderr[-500:]}")
    return seconds


def report_commands(source: str, reports: Path) -> dict[str, list[str]]:
    """`source`: paths separated by spaces, or a DSN."""
    return {
        "chargeback": spendgate("chargeback", "--period", PERIOD, "--ledger", *source.split(), "--policies",
                                str(REPO / "examples" / "policies"), "--output", "csv", "--out", os.devnull),
        "reconcile": spendgate("reconcile", "--period", PERIOD, "--ledger", *source.split(), "--cost-report",
                               str(reports / f"cost-report-{PERIOD}.json"), "--usage-report",
                               str(reports / f"usage-report-{PERIOD}.json"), "--gateway-key", GATEWAY_KEY,
                               "--output", "json", "--out", os.devnull),
    }


def bench_reports(runs: int) -> list[tuple[str, list[float]]]:
    data = build_data()
    rows: list[tuple[str, list[float]]] = []
    for label, sources in (("embedded, JSON lines", [data["ledger"]]),
                           ("embedded, compacted days", [data["compacted"]]),
                           ("embedded, JSON lines and their compacted days", [data["ledger"], data["compacted"]])):
        for name, argv in report_commands(" ".join(map(str, sources)), data["reports"]).items():
            rows.append((f"{name}, {label}", timed(argv, runs)))
            log(f"{rows[-1][0]}: {summary(rows[-1][1])}")
    rows.append(("ledger compact (30 days)", [float((data_dir() / "compaction-seconds").read_text())]))
    with PostgresServer.start_new() as postgres:
        dsn = postgres.new_database()
        load = timed(spendgate("ledger", "load", str(data["compacted"]), "--postgres", dsn), 1)
        rows.append(("ledger load into PostgreSQL", load))
        log(f"loaded into PostgreSQL in {load[0]:.1f} s")
        for name, argv in report_commands(dsn, data["reports"]).items():
            rows.append((f"{name}, PostgreSQL", timed(argv, runs)))
            log(f"{rows[-1][0]}: {summary(rows[-1][1])}")
    return rows


def summary(seconds: list[float]) -> str:
    return f"median {statistics.median(seconds):.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f}, " \
           f"{len(seconds)} runs)"


def pin_server(postgres: PostgresServer, cpu: str) -> None:
    """The postmaster and the processes it already started, onto the load core (new ones inherit it)."""
    pid = (postgres.data / "postmaster.pid").read_text().splitlines()[0]
    children = subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True).stdout.split()
    for process in (pid, *children):
        subprocess.run(["taskset", "-a", "-pc", cpu, process], capture_output=True, check=False)


def cpu_seconds(service: gateway_bench.Service) -> float:
    """The gateway process's user + system CPU seconds so far (what the sink costs it, whatever wrk manages)."""
    assert service.process is not None
    fields = Path(f"/proc/{service.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(service: gateway_bench.Service, body: Path, seconds: float) -> tuple[float, float]:
    """(requests a second, gateway CPU microseconds a request) of one wrk run; again after a quiet spell when
    other processes took CPU meanwhile (twice at most), as bench/run.py does."""
    for attempt in range(3):
        before = cpu_seconds(service)
        result = gateway_bench.run_wrk(service.target(), body, seconds)
        cost = (cpu_seconds(service) - before) / max(result.requests, 1) * 1e6
        if result.foreign_percent < machine.QUIET_PERCENT or attempt == 2 or not machine.budget_left():
            return result.rps, cost
        machine.wait_quiet()
    raise AssertionError("unreachable")


def bench_proxy(pairs: int, seconds: float) -> tuple[list[tuple[float, float, float, float]], dict[str, int]]:
    workdir = Path(tempfile.mkdtemp(prefix="ledger-bench-proxy-"))
    body_files = gateway_bench.write_bodies(workdir)
    mock = gateway_bench.start_mock(workdir)
    services: list[gateway_bench.Service] = []
    try:
        with PostgresServer.start_new() as postgres:
            pin_server(postgres, gateway_bench.LOAD_CPU)
            dsn = postgres.new_database()
            upstream = f"http://{gateway_bench.HOST}:{mock.port}"
            file_only = gateway_bench.spendgate_service(workdir, upstream, gateway_bench.free_port())
            with_sink = gateway_bench.spendgate_service(workdir, upstream, gateway_bench.free_port())
            with_sink.name, with_sink.env = "spendgate-postgres", {**with_sink.env, "SPENDGATE_LEDGER_POSTGRES": dsn}
            for service in (file_only, with_sink):
                spawned = service.start(workdir)
                gateway_bench.wait_ready(service, spawned, gateway_bench.bodies.small_body(), limit_s=60)
                services.append(service)
            for service in services:
                gateway_bench.run_wrk(service.target(), body_files["small"], 3)  # warm-up
            results = []
            for pair in range(pairs):
                rates, costs = {}, {}
                for service in (with_sink, file_only) if pair % 2 == 0 else (file_only, with_sink):
                    other = [candidate for candidate in services if candidate is not service]
                    with gateway_bench.frozen(other):
                        rates[service.name], costs[service.name] = measured(service, body_files["small"], seconds)
                results.append((rates["spendgate-postgres"], rates["spendgate"], costs["spendgate-postgres"],
                                costs["spendgate"]))
                log(f"pair {pair + 1}/{pairs}: PostgreSQL sink {rates['spendgate-postgres']:,.0f} RPS "
                    f"({costs['spendgate-postgres']:.0f} us CPU a request), file ledger {rates['spendgate']:,.0f} RPS "
                    f"({costs['spendgate']:.0f} us), ratio {rates['spendgate-postgres'] / rates['spendgate']:.3f}")
            time.sleep(2)  # the sink's last batches
            counts = stored_and_written(dsn, workdir)
    finally:
        for service in (*services, mock):
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return results, counts


def stored_and_written(dsn: str, workdir: Path) -> dict[str, int]:
    import psycopg

    with psycopg.connect(dsn) as connection:
        stored = connection.execute("SELECT count(*) FROM ledger_records").fetchone()
    written: dict[str, int] = {}
    for path in workdir.glob("spendgate-*/ledger.jsonl*"):  # with the rotated files
        written[path.parent.name] = written.get(path.parent.name, 0) + sum(1 for _ in path.open("rb"))
    return {"stored": int(stored[0]) if stored else 0, **written}


def markdown(rows: list[tuple[str, list[float]]], pairs: list[tuple[float, float, float, float]],
             counts: dict[str, int]) -> str:
    today = datetime.date.today().isoformat()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    lines = [f"# Ledger store benchmark, {today} at {commit}", "",
             f"{RECORDS:,} synthetic records over 30 days ({PERIOD}), this machine ({os.cpu_count()} cores, shared).",
             ""]
    if rows:
        lines += ["| command | median | min | max | runs |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {statistics.median(s):.2f} s | {min(s):.2f} s | {max(s):.2f} s | {len(s)} |"
                  for name, s in rows]
        lines.append("")
    if pairs:
        ratios = [sink / file for sink, file, _, _ in pairs]
        cpu = [sink_cpu / file_cpu for _, _, sink_cpu, file_cpu in pairs]
        lines += ["| pair | PostgreSQL sink RPS | file ledger RPS | RPS ratio | gateway CPU a request, sink / file | "
                  "CPU ratio |", "|---|---|---|---|---|---|"]
        lines += [f"| {number} | {sink:,.0f} | {file:,.0f} | {sink / file:.3f} | {sink_cpu:.0f} / {file_cpu:.0f} us "
                  f"| {sink_cpu / file_cpu:.3f} |"
                  for number, (sink, file, sink_cpu, file_cpu) in enumerate(pairs, start=1)]
        lines += ["", f"RPS ratio: median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, "
                      f"max {max(ratios):.3f}; CPU a request ratio: median {statistics.median(cpu):.3f}, "
                      f"min {min(cpu):.3f}, max {max(cpu):.3f}. Lines stored by the sink, and in the file ledgers: "
                      f"{json.dumps(counts)}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("reports", "proxy"))
    parser.add_argument("--runs", type=int, default=3, help="runs of each report command (default 3)")
    parser.add_argument("--pairs", type=int, default=5, help="A/B pairs of the proxy benchmark (default 5)")
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk seconds per proxy run (default 10)")
    args = parser.parse_args()
    rows = bench_reports(args.runs) if args.only != "proxy" else []
    pairs, counts = bench_proxy(args.pairs, args.seconds) if args.only != "reports" else ([], {})
    text = markdown(rows, pairs, counts)
    out = BENCH_DIR / "results" / f"ledger-{datetime.date.today().isoformat()}.md"
    out.write_text(text)
    print(text)
    log(f"written to {out}")


if __name__ == "__main__":
    main()
