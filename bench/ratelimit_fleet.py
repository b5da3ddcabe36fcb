"""How far past a rate limit a fleet of proxies goes: each replica counts only what it admitted.

    python bench/ratelimit_fleet.py                         # 3 proxies, 600 requests a minute, 65 s a case
    python bench/ratelimit_fleet.py --proxies 3 --limit 300 --seconds 70 --clients 2

Three `spendgate proxy` processes (standalone: rate-limit state never leaves a replica, so a cluster
would change nothing here) share the example policies, with one developer limited per minute
(`rateLimits.perDeveloper.requestsPerMinute` on alice's cost center), and a zero-delay mock upstream
in its own process. Clients send alice's requests as fast as they are answered (a short pause after a
429), in four cases:

- spread: the clients' requests go round-robin over every proxy (a load balancer, many connections);
- one proxy: all of them to one proxy (Claude Code keeps one keep-alive connection);

each with `--rate-limit-replicas 1` (every replica enforces the whole limit: the default) and with
`--rate-limit-replicas N` (every replica enforces 1/N of it, rounded up).

Measured from the proxies' ledgers: the most requests admitted in any 60 seconds, for the fleet and
for the busiest proxy, against the limit. Results go to bench/results/ratelimit-fleet-<date>.md.
Nothing here is a test: the bound is the design's ("up to N times the limit without the division;
at most about the limit with it"), the run shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
UPSTREAM_KEY = "sk-ant-bench-upstream"
MEMBERS = "  members: [alice, bob, carol]\n"
BODY = {"model": "claude-haiku-5-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "Fix the lint."}]}


@dataclass(frozen=True)
class Case:
    spread: bool
    replicas: int  # --rate-limit-replicas

    def words(self, proxies: int) -> str:
        where = f"spread over {proxies} proxies" if self.spread else "all to one proxy"
        share = "each replica the whole limit" if self.replicas == 1 else f"each replica 1/{self.replicas}"
        return f"{where}, {share}"


@dataclass(frozen=True)
class Result:
    case: Case
    limit: int
    attempts: int
    admitted: int
    busiest_minute: int  # the fleet's most admitted requests in any 60 s
    busiest_proxy_minute: int
    seconds: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spendgate() -> list[str]:
    script = Path(sys.executable).parent / "spendgate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "spendgate.cli"]


@contextlib.contextmanager
def process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A child that dies with us (pdeathsig), stopped with SIGTERM."""
    with log.open("wb") as output:
        child = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--", *argv], stdout=output,
                                 stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def wait_ready(port: int, child: subprocess.Popen[bytes], log: Path) -> None:
    """Until the port accepts connections (the proxy binds once its bundle is loaded)."""
    for _ in range(600):
        if child.poll() is not None:
            raise RuntimeError(f"port {port}: exited with {child.returncode}:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} never answered")


def policies_with_limit(workdir: Path, limit: int) -> Path:
    policies = workdir / "policies"
    shutil.copytree(REPO / "examples" / "policies", policies)
    centers = policies / "10-costcenters.yaml"
    text = centers.read_text()
    if MEMBERS not in text:
        raise SystemExit(f"{centers} changed: cannot add the rate limit")
    limited = f"{MEMBERS}  rateLimits: {{perDeveloper: {{requestsPerMinute: {limit}}}}}\n"
    centers.write_text(text.replace(MEMBERS, limited))
    return policies


async def send(targets: list[str], key: str, clients: int, seconds: float) -> int:
    """`clients` loops, each sending to the next target in turn until `seconds` passed; returns the attempts."""
    attempts = 0
    deadline = time.monotonic() + seconds
    turn = itertools.cycle(targets)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal attempts
        while time.monotonic() < deadline:
            async with session.post(f"{next(turn)}/v1/messages", json=BODY,
                                    headers={"x-api-key": key, "anthropic-version": "2023-06-01"}) as response:
                await response.read()
                attempts += 1
                if response.status == 429:
                    await asyncio.sleep(0.02)  # a client that backs off a little, not retry-after's full wait
                elif response.status != 200:
                    raise RuntimeError(f"answered {response.status}: {await response.text()}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return attempts


def busiest_minute(times: list[float]) -> int:
    """The most instants in any 60 seconds (an interval [t, t + 60), as the limiter counts)."""
    ordered, best, start = sorted(times), 0, 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= 60:
            start += 1
        best = max(best, end - start + 1)
    return best


def admitted_times(ledger: Path) -> list[float]:
    times = []
    for line in ledger.read_text().splitlines():
        record = json.loads(line)
        if record["endpoint"] == "messages" and record["status"] == 200:
            times.append(datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp())
    return times


def one_case(case: Case, proxies: int, limit: int, clients: int, seconds: float, upstream: str,
             workdir: Path) -> Result:
    policies = policies_with_limit(workdir, limit)
    keys = workdir / "keys.json"
    created = subprocess.run([*spendgate(), "keys", "create", "--developer", "alice", "--cost-center", "platform",
                              "--keys-file", str(keys)], capture_output=True, text=True, check=True)
    key = created.stdout.strip().splitlines()[0]
    with contextlib.ExitStack() as stack:
        urls, ledgers = [], []
        for number in range(proxies):
            port, ledger, log = free_port(), workdir / f"ledger-{number}.jsonl", workdir / f"proxy-{number}.log"
            child = stack.enter_context(process(
                [*spendgate(), "proxy", "--policies", str(policies), "--keys-file", str(keys), "--upstream", upstream,
                 "--port", str(port), "--admin-port", str(free_port()), "--ledger", str(ledger),
                 "--state-dir", str(workdir / f"state-{number}"), "--rate-limit-replicas", str(case.replicas)],
                log, {"ANTHROPIC_API_KEY": UPSTREAM_KEY}))
            wait_ready(port, child, log)
            urls.append(f"http://127.0.0.1:{port}")
            ledgers.append(ledger)
        targets = urls if case.spread else urls[:1]
        started = time.monotonic()
        attempts = asyncio.run(send(targets, key, clients * proxies, seconds))  # the same clients either way
        elapsed = time.monotonic() - started
    per_proxy = [admitted_times(ledger) for ledger in ledgers]
    fleet = [at for times in per_proxy for at in times]
    return Result(case, limit, attempts, len(fleet), busiest_minute(fleet),
                  max(busiest_minute(times) for times in per_proxy), elapsed)


def table(results: list[Result], proxies: int) -> str:
    rows = ["| requests | --rate-limit-replicas | limit a minute | admitted in the busiest minute: fleet "
            "(x the limit) | busiest proxy | attempts / admitted | seconds |", "|---|---|---|---|---|---|---|"]
    for result in results:
        where = f"spread over {proxies} proxies" if result.case.spread else "all to one proxy"
        rows.append(f"| {where} | {result.case.replicas} | {result.limit} | {result.busiest_minute} "
                    f"({result.busiest_minute / result.limit:.2f}x) | {result.busiest_proxy_minute} | "
                    f"{result.attempts:,} / {result.admitted:,} | {result.seconds:.0f} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proxies", type=int, default=3)
    parser.add_argument("--limit", type=int, default=600, help="requests a minute for the developer")
    parser.add_argument("--seconds", type=float, default=65.0, help="per case (over 60: a whole minute is seen)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent clients per proxy")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/ratelimit-fleet-<date>.md)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    load_before = os.getloadavg()[0]
    cases = [Case(spread, replicas) for spread in (True, False) for replicas in (1, args.proxies)]
    results = []
    with tempfile.TemporaryDirectory(prefix="ratelimit-fleet-") as scratch:
        mock_port = free_port()
        mock_log = Path(scratch) / "mock.log"
        with process([sys.executable, str(REPO / "bench" / "mock_upstream.py"), "--port", str(mock_port)],
                     mock_log) as mock:
            wait_ready(mock_port, mock, mock_log)
            for number, case in enumerate(cases):
                workdir = Path(scratch) / f"case-{number}"
                workdir.mkdir()
                result = one_case(case, args.proxies, args.limit, args.clients, args.seconds,
                                  f"http://127.0.0.1:{mock_port}", workdir)
                results.append(result)
                print(f"{case.words(args.proxies)}: {result.busiest_minute} admitted in the busiest minute "
                      f"({result.busiest_minute / args.limit:.2f}x the limit of {args.limit})", flush=True)
    report = table(results, args.proxies)
    print("\n" + report)
    today = datetime.now(UTC).date().isoformat()
    out = args.out or RESULTS / f"ratelimit-fleet-{today}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# Rate limits across {args.proxies} proxies ({today}, commit {commit})\n\n"
        f"`python bench/ratelimit_fleet.py {' '.join(sys.argv[1:])}`; load average {load_before:.1f} before the run, "
        f"{os.getloadavg()[0]:.1f} after; {os.cpu_count()} cores shared by everything (proxies, mock, clients).\n\n"
        f"One developer limited to {args.limit} requests a minute (`rateLimits.perDeveloper`), {args.clients} "
        f"clients per proxy sending as fast as they are answered, {args.seconds:g} s a case.\n\n{report}\n\n"
        "- busiest minute: the most requests answered 200 whose arrival falls in any 60 seconds, from every "
        "proxy's ledger (the fleet) and from the busiest proxy's alone. The ledger records a request's arrival; the "
        "limiter counts it at admission, after its body was read (milliseconds later on a loaded machine), so a "
        "count by arrival can show one request more than the limiter saw in its own minute.\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
