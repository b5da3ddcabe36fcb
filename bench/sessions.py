"""Claude Code at scale: concurrent long, paced streaming sessions through a gateway on one core.

    python bench/sessions.py                        # 100, 1,000 and 5,000 sessions, 60 s each
    python bench/sessions.py --sessions 1000 --seconds 30 --only spendgate

The load side is a small Go program (bench/sessions/, standard library only, built once into the
bench cache): an upstream that streams Anthropic events shaped like a coding turn (200-600 ms to
the first event, 300-3,000 deltas 10-40 ms apart, text then a tool_use block, usage in
message_start and message_delta) and a client that runs N sessions (50-400 KB request bodies,
0.5-5 s between turns). Every event carries the time the upstream wrote it, so the client
measures each event's transit and the time to first byte net of the upstream's own wait, on one
clock. The gateway runs alone on core 0; the upstream and the client share core 1, each with
GOMAXPROCS=1. Each concurrency is run straight to the upstream (the floor), through the bare
passthrough and through spendgate, in that order; "added" is a gateway's figure minus the direct
one. The load side's own CPU is reported, so one can see it was not the bottleneck.

Targets (DESIGN.md section 4): at 1,000 sessions, added time to first byte p99 < 5 ms, added
inter-event delay p99 < 2 ms, RSS < 250 MB, no errors; at 5,000, no errors and the figures.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import run  # noqa: E402  (the gateway benchmark's processes and probes)

GO_DIR = BENCH_DIR / "sessions"
TARGETS = ("direct", "bare", "spendgate")


def load_binary() -> Path:
    """bench/sessions built once per source version into the bench cache."""
    digest = hashlib.sha256((GO_DIR / "main.go").read_bytes() + (GO_DIR / "go.mod").read_bytes()).hexdigest()[:12]
    binary = run.cache_dir() / f"sessions-{digest}"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        run.log(f"building the load generator into {binary}")
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=GO_DIR, check=True,
                       env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"})
    return binary


@dataclass
class Sample:
    """CPU seconds and peak RSS of one process, sampled while the load runs."""

    pid: int
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    rss_peak: int = 0

    def cpu_now(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def begin(self) -> None:
        self.cpu_start = self.cpu_now()

    def poll(self) -> None:
        self.rss_peak = max(self.rss_peak, run.process_tree_rss_bytes(self.pid))
        self.cpu_end = self.cpu_now()


def drive(binary: Path, url: str, key: str, sessions: int, seconds: float, gateway: int | None,
          upstream_pid: int) -> dict[str, Any]:
    """Run the client against `url` for `seconds`; sample the gateway (if any) and the upstream."""
    samples = [Sample(upstream_pid)] + ([Sample(gateway)] if gateway else [])
    for sample in samples:
        sample.begin()
    started = time.monotonic()
    client = subprocess.Popen(["taskset", "-c", run.LOAD_CPU, str(binary), "client", "-target", url, "-key", key,
                               "-sessions", str(sessions), "-seconds", str(seconds)],
                              stdout=subprocess.PIPE, env={**os.environ, "GOMAXPROCS": "1"})
    while client.poll() is None:
        for sample in samples:
            sample.poll()
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    out, _ = client.communicate()
    result: dict[str, Any] = json.loads(out)
    result["wallSeconds"] = elapsed
    result["upstreamCpuShare"] = (samples[0].cpu_end - samples[0].cpu_start) / elapsed
    result["loadCpuShare"] = result["upstreamCpuShare"] + result["clientCpuSeconds"] / elapsed
    if gateway:
        result["gatewayCpuShare"] = (samples[1].cpu_end - samples[1].cpu_start) / elapsed
        result["gatewayRssMB"] = samples[1].rss_peak / 1e6
    return result


def measure(levels: list[int], seconds: float, only: tuple[str, ...]) -> dict[int, dict[str, dict[str, Any]]]:
    binary = load_binary()
    workdir = Path(tempfile.mkdtemp(prefix="spendgate-sessions-"))
    upstream_port = run.free_port()
    upstream = run.Service("upstream", [str(binary), "upstream", "-listen", f"{run.HOST}:{upstream_port}"],
                           upstream_port, api_key=run.UPSTREAM_KEY, cpu=run.LOAD_CPU, env={"GOMAXPROCS": "1"})
    upstream.start(workdir)
    upstream_url = f"http://{run.HOST}:{upstream_port}"
    gateways = {"bare": run.bare_service(workdir, upstream_url, run.free_port()),
                "spendgate": run.spendgate_service(workdir, upstream_url, run.free_port())}
    probe = json.dumps({"model": "claude-opus-5-5", "max_tokens": 10, "stream": True,
                        "messages": [{"role": "user", "content": "hi"}]}).encode()
    results: dict[int, dict[str, dict[str, Any]]] = {}
    try:
        time.sleep(0.5)
        for name in only:
            if name in gateways:
                gateway = gateways[name]
                run.wait_ready(gateway, gateway.start(workdir), probe, 30)
        for sessions in levels:
            results[sessions] = {}
            for name in only:
                service = gateways.get(name)
                url = f"http://{run.HOST}:{service.port}" if service else upstream_url
                key = service.api_key if service else run.UPSTREAM_KEY
                pid = service.process.pid if service and service.process else None
                run.log(f"{sessions} sessions, {name}, {seconds:g} s")
                results[sessions][name] = drive(binary, url, key, sessions, seconds, pid,
                                                upstream.process.pid if upstream.process else 0)
    finally:
        for service in (*gateways.values(), upstream):
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def added(row: dict[str, Any], direct: dict[str, Any], kind: str, quantile: str) -> float:
    return float(row[kind][quantile]) - float(direct[kind][quantile])


def table(results: dict[int, dict[str, dict[str, Any]]]) -> str:
    lines = ["| sessions | target | turns | events | errors | TTFB net p50 / p99 | added TTFB p50 / p99 | "
             "event transit p50 / p99 | added inter-event p50 / p99 | gateway CPU | gateway RSS | load side CPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for sessions, rows in results.items():
        direct = rows.get("direct")
        for name, row in rows.items():
            ttfb, transit = row["ttfbNetMs"], row["transitMs"]
            extra = ("—", "—") if direct is None or name == "direct" else (
                f"{added(row, direct, 'ttfbNetMs', 'p50'):.2f} / {added(row, direct, 'ttfbNetMs', 'p99'):.2f} ms",
                f"{added(row, direct, 'transitMs', 'p50'):.2f} / {added(row, direct, 'transitMs', 'p99'):.2f} ms")
            errors = f"{row['errors']}" + (f" ({', '.join(row['errorKinds'])})" if row["errorKinds"] else "")
            lines.append(
                f"| {sessions:,} | {name} | {row['turns']:,} | {row['events']:,} | {errors} | "
                f"{ttfb['p50']:.2f} / {ttfb['p99']:.2f} ms | {extra[0]} | {transit['p50']:.2f} / "
                f"{transit['p99']:.2f} ms | {extra[1]} | "
                f"{row.get('gatewayCpuShare', 0) * 100:.0f}% | {row.get('gatewayRssMB', 0):.0f} MB | "
                f"{row['loadCpuShare'] * 100:.0f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement per target and level")
    parser.add_argument("--only", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args()
    only = tuple(name for name in TARGETS if name in args.only)
    results = measure(args.sessions, args.seconds, only)
    load = os.getloadavg()
    text = (f"# Claude Code-shaped sessions, {datetime.date.today()} ({os.cpu_count()} cores, load average "
            f"{load[0]:.1f} at the end)\n\n" + table(results) + "\n\n```json\n" + json.dumps(results, indent=1)
            + "\n```\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
