"""How far past its hard cap a budget goes when several proxies spend from it at once, and whether
anyone is ever paused too early.

    python bench/overshoot.py                  # 3 proxies x 8 clients, $2.00 limit, $0.00004 a request, one run
    python bench/overshoot.py --runs 3 --limit 5.00 --proxies 3 --clients 8

A real fleet on loopback: the suite's kube-apiserver + etcd (tests/cluster/controlplane.py), the
operator and N `spendgate proxy` processes in cluster mode (tests/e2e/fleet.py; bundle mirrored by
the kubelet stand-in), a zero-delay mock upstream in its own process answering every request with
the same usage (a fixed cost per request), and C concurrent clients per proxy, all on one developer's
Daily budget. Clients request the last model of the cascade, so nothing is rerouted and every
request costs the same (by default 200 input and 40 output tokens of Haiku 5.5, $0.00004: at the
few thousand requests a second this machine manages, a $2 budget lasts about 15 s, and the
overshoot is best read in seconds of the fleet's traffic, which does not depend on the limit).
Each client sends until its proxy refuses it (429); the run ends when every client has been refused.

Measured, from the proxies' ledgers (the same figures Budget.status ends with, checked):
- overshoot: the final settled spend minus the pause threshold (110% of the limit), in dollars,
  as a share of the limit, in requests, and in seconds of the fleet's traffic at the rate it ran;
- false pauses: refusals whose arrival came before the fleet's settled spend (every ledger line
  settled, i.e. arrival + latency, before that instant) had reached the threshold. Strict: the
  refusal was decided a little after its arrival, so this can only over-count. Must be 0.

Results go to bench/results/overshoot-<date>.md. Nothing here is a test: figures vary with the
machine and its load; the design's bound is "in-flight work plus one report and fold interval".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from cluster.controlplane import ControlPlane, free_loopback_ports  # noqa: E402
from cluster.polling import eventually  # noqa: E402
from e2e.fleet import (  # noqa: E402
    HAIKU,
    Cluster,
    Fleet,
    cost_center,
    developer_budget,
    quiet_time_zone,
    routing_policy,
)

RESULTS = REPO / "bench" / "results"


@dataclass(frozen=True)
class Sent:
    proxy: str
    status: int


@dataclass
class Run:
    limit: Decimal
    cost: Decimal  # per request
    requests: int
    refused: int
    seconds: float  # first request to last refusal
    settled: Decimal  # final, from the ledgers
    status_spent: Decimal  # Budget.status.spentUSD once the reports settled
    false_pauses: int
    first_refusal_spend: Decimal  # the fleet's settled spend when the first refusal arrived
    pause_lag: float  # seconds from the threshold being crossed (settled) to the first refusal
    last_refusal_lag: float  # ... to the last proxy's first refusal

    @property
    def threshold(self) -> Decimal:
        return self.limit * Decimal("1.10")

    @property
    def overshoot(self) -> Decimal:
        return self.settled - self.threshold

    @property
    def rate(self) -> float:
        """The fleet's spend rate, dollars per second, while it ran."""
        return float(self.settled) / self.seconds if self.seconds else 0.0


def serve_mock(port: int, input_tokens: int, output_tokens: int) -> None:
    """The upstream process: the suite's mock, every Messages answer with the same usage."""
    from spendgate.testing.upstream import MockUpstream, Reply, Scenario

    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}

    async def serve() -> None:
        mock = MockUpstream(default=Reply(scenario=Scenario(content=({"type": "text", "text": "ok"},), usage=usage)))
        mock.requests = _Forgetful()
        await mock.start(port=port)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


class _Forgetful(list[Any]):
    """The mock records every request; a benchmark does not need them kept."""

    def append(self, _: Any) -> None:
        pass


async def hammer(urls: dict[str, str], key: str, clients: int) -> list[Sent]:
    """`clients` loops per proxy, each sending until its proxy answers 429."""
    body = {"model": HAIKU, "max_tokens": 128_000, "messages": [{"role": "user", "content": "Fix the lint."}]}
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    sent: list[Sent] = []

    async def client(session: aiohttp.ClientSession, name: str, url: str) -> None:
        while True:
            async with session.post(f"{url}/v1/messages", json=body, headers=headers) as response:
                await response.read()
                sent.append(Sent(name, response.status))
                if response.status == 429:
                    return
                if response.status != 200:
                    raise RuntimeError(f"{name} answered {response.status}: {await response.text()}")

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(client(session, name, url) for name, url in urls.items() for _ in range(clients)))
    return sent


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def analyse(lines: list[dict[str, Any]], limit: Decimal) -> tuple[int, Decimal, float, float, float]:
    """(false pauses, settled spend at the first refusal, seconds from the threshold to the first and
    to the last proxy's first refusal, seconds of traffic), from every proxy's ledger lines."""
    threshold = limit * Decimal("1.10")
    settled = sorted((parse_time(line["time"]) + line["latencyMs"] / 1000, Decimal(line["costUSD"]))
                     for line in lines if line["outcome"] == "ok")
    refusals = sorted(parse_time(line["time"]) for line in lines if line["status"] == 429)
    crossed, running, spend_at = None, Decimal(0), []
    for at, cost in settled:
        running += cost
        spend_at.append((at, running))
        if crossed is None and running >= threshold:
            crossed = at

    def spend_before(instant: float) -> Decimal:
        total = Decimal(0)
        for at, cumulative in spend_at:
            if at >= instant:
                break
            total = cumulative
        return total

    false_pauses = sum(1 for refusal in refusals if spend_before(refusal) < threshold)
    first_by_proxy = {}
    for line in sorted(lines, key=lambda line: line["time"]):
        if line["status"] == 429:
            first_by_proxy.setdefault(line["proxy"], parse_time(line["time"]))
    start = min(parse_time(line["time"]) for line in lines)
    assert crossed is not None, "the threshold was never crossed"
    return (false_pauses, spend_before(refusals[0]), refusals[0] - crossed,
            max(first_by_proxy.values()) - crossed, refusals[-1] - start)


def one_run(control_plane: ControlPlane, cluster: Cluster, limit: Decimal, proxies: int, clients: int,
            upstream: str, workdir: Path) -> Run:
    run = secrets.token_hex(3)
    namespace = cluster.namespace(f"sg-overshoot-{run}")
    policies = cluster.namespace(f"sg-overshoot-budgets-{run}")
    developer, center = f"dev-{run}", f"cc-{run}"
    with Fleet.running(control_plane, workdir / run, namespace, policies, proxies, upstream_url=upstream) as fleet:
        cluster.apply(cost_center(center, f"CC-{run}", members=(developer,)),
                      routing_policy("cascade", policies),
                      developer_budget("wallet", policies, center, developer, str(limit), quiet_time_zone(), "cascade"))
        key = cluster.create_key(namespace, f"key-{run}", developer, center)
        fleet.wait_for_bundle(lambda bundle: any(k["name"] == f"key-{run}" for k in bundle["keys"])
                              and any(b["id"] == f"{policies}/wallet" for b in bundle["budgets"]), "the budget")
        fleet.wait_until_loaded()
        sent = asyncio.run(hammer({proxy.name: proxy.url for proxy in fleet.proxies}, key, clients))
        lines = []
        time.sleep(0.2)  # the last ledger batches
        for proxy in fleet.proxies:
            for line in proxy.ledger():
                if line["endpoint"] == "messages" and line["developer"] == developer:
                    lines.append({**line, "proxy": proxy.name})
        settled = sum((Decimal(line["costUSD"]) for line in lines), Decimal(0))
        status = eventually(lambda: (s := cluster.spent(policies, "wallet")) == settled and s, 30.0,
                            f"Budget.status.spentUSD equal to the ledgers' ${settled}")
        answered = [line for line in lines if line["outcome"] == "ok"]
        costs = {Decimal(line["costUSD"]) for line in answered}
        assert len(costs) == 1, f"expected one cost per request, found {costs}"
        assert len(lines) == len(sent), f"{len(sent)} requests sent, {len(lines)} ledger lines"
        false_pauses, first_spend, lag, last_lag, seconds = analyse(lines, limit)
        control_plane.kubectl("delete", "costcenter", center, "--wait=false", check=False)
    return Run(limit=limit, cost=costs.pop(), requests=len(answered), refused=len(lines) - len(answered),
               seconds=seconds, settled=settled, status_spent=status, false_pauses=false_pauses,
               first_refusal_spend=first_spend, pause_lag=lag, last_refusal_lag=last_lag)


def table(runs: list[Run], proxies: int, clients: int) -> str:
    rows = ["| run | limit | pause at | settled | overshoot $ | % of limit | requests | seconds of traffic "
            "| answered / refused | req/s | threshold -> first / last proxy refusing | false pauses |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for number, run in enumerate(runs, 1):
        rows.append(
            f"| {number} | ${run.limit} | ${run.threshold:.2f} | ${run.settled} | ${run.overshoot:.4f} "
            f"| {run.overshoot / run.limit * 100:.1f}% | {run.overshoot / run.cost:.0f} "
            f"| {float(run.overshoot) / run.rate:.2f} s | {run.requests} / {run.refused} "
            f"| {(run.requests + run.refused) / run.seconds:.0f} "
            f"| {run.pause_lag:.2f} s / {run.last_refusal_lag:.2f} s "
            f"| {run.false_pauses} |")
    if len(runs) > 1:
        rows.append(f"\nmedian overshoot: {statistics.median(float(r.overshoot / r.limit * 100) for r in runs):.1f}% "
                    f"of the limit, {statistics.median(float(r.overshoot / r.cost) for r in runs):.0f} requests")
    return "\n".join([f"{proxies} proxies x {clients} concurrent clients, ${runs[0].cost} per request, "
                      "non-streaming, zero-delay mock", "", *rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=Decimal, default=Decimal("2.00"), help="the budget's limit in USD")
    parser.add_argument("--proxies", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients per proxy")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--input-tokens", type=int, default=200, help="billed per answer (Haiku 5.5)")
    parser.add_argument("--output-tokens", type=int, default=40, help="billed per answer (Haiku 5.5)")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/overshoot-<date>.md)")
    parser.add_argument("--serve-mock", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_mock:
        serve_mock(args.serve_mock, args.input_tokens, args.output_tokens)
        return 0

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    load_before = os.getloadavg()[0]
    runs: list[Run] = []
    (port,) = free_loopback_ports(1)
    mock = subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--", sys.executable, __file__, "--serve-mock",
                             str(port), "--input-tokens", str(args.input_tokens), "--output-tokens",
                             str(args.output_tokens)], stdout=subprocess.DEVNULL)
    try:
        with ControlPlane.start() as control_plane, tempfile.TemporaryDirectory(prefix="overshoot-") as workdir:
            cluster = Cluster(control_plane)
            for number in range(args.runs):
                run = one_run(control_plane, cluster, args.limit, args.proxies, args.clients,
                              f"http://127.0.0.1:{port}", Path(workdir))
                runs.append(run)
                print(f"run {number + 1}: settled ${run.settled}, overshoot ${run.overshoot:.4f} "
                      f"({run.overshoot / run.limit * 100:.1f}%), false pauses {run.false_pauses}", flush=True)
    finally:
        mock.terminate()
        mock.wait(10)
    report = table(runs, args.proxies, args.clients)
    print("\n" + report)
    today = datetime.now(UTC).date().isoformat()
    out = args.out or RESULTS / f"overshoot-{today}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# Budget overshoot with {args.proxies} proxies ({today}, commit {commit})\n\n"
        f"`python bench/overshoot.py {' '.join(sys.argv[1:])}`; load average {load_before:.1f} before the run, "
        f"{os.getloadavg()[0]:.1f} after; {os.cpu_count()} cores shared by everything (API server, etcd, operator, "
        "proxies, mock, clients).\n\n"
        f"{report}\n\n"
        "- overshoot: final settled spend (the ledgers; Budget.status.spentUSD agreed to the cent) minus the "
        "pause threshold, 110% of the limit; in requests at the fixed cost; in seconds of the fleet's traffic.\n"
        "- threshold -> refusing: from the moment the fleet's settled spend crossed the threshold to the first "
        "refusal, and to the moment the last proxy refused for the first time.\n"
        "- false pauses: refusals that arrived before the settled spend had reached the threshold (strict).\n")
    print(f"\nwritten to {out}")
    return 0 if all(run.false_pauses == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
