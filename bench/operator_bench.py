"""The operator benchmark (DESIGN.md section 4): apply -> bundle, report -> status, cold start.

Against the test suite's real kube-apiserver + etcd (tests/cluster/controlplane.py), with the
operator as a subprocess (`spendgate operator`, the real clock), so its RSS is its own:

1. Cold start: 1,000 Budgets across 50 CostCenters (and 1,000 virtual keys) exist before the
   operator starts; time from spawning it until every Budget shows a status for its current
   generation and the bundle ConfigMap lists all 1,000. Target < 60 s, RSS < 200 MB.
2. `kubectl apply` of one Budget (a new limit) until the bundle ConfigMap carries it, measured
   from invoking kubectl. Target p95 < 1 s.
3. A spend report (a SpendReport compare-and-swap write) until Budget.status shows the new total.
   Target < 2 s. Each sample reports to another Budget, as a fleet of proxies would.

Usage: python bench/operator_bench.py [--budgets 1000] [--cost-centers 50] [--samples 30]
Prints a Markdown table; nothing is written to disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from cluster.controlplane import ControlPlane  # noqa: E402
from spendgate.adapters.keysecrets import LABEL  # noqa: E402
from spendgate.adapters.kube import Kube, KubeError, core_path, custom_path, load_configuration  # noqa: E402
from spendgate.adapters.reporter import SpendReporter  # noqa: E402
from spendgate.api.v1alpha1 import GROUP, VERSION, Period  # noqa: E402
from spendgate.logic.reportstate import ReportState  # noqa: E402
from spendgate.logic.windows import window_at  # noqa: E402
from spendgate.policy import bundlemap  # noqa: E402
from spendgate.policy.bundle import loads  # noqa: E402

OPERATOR_NS, POLICY_NS = "bench-system", "bench-policies"
POLL = 0.01
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


def documents(budgets: int, cost_centers: int) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for c in range(cost_centers):
        parent = {"parent": f"cc-{c // 10 * 10:02d}"} if c % 10 else {}
        docs.append({"apiVersion": f"{GROUP}/{VERSION}", "kind": "CostCenter", "metadata": {"name": f"cc-{c:02d}"},
                     "spec": {"code": f"BENCH-{c:04d}", "members": [f"dev-{c}-{m}" for m in range(20)],
                              "alertTargets": [], **parent}})
    docs.append({"apiVersion": f"{GROUP}/{VERSION}", "kind": "RoutingPolicy",
                 "metadata": {"name": "cascade", "namespace": POLICY_NS},
                 "spec": {"cascade": ["claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"], "rules": []}})
    for b in range(budgets):
        c = b % cost_centers
        docs.append(budget(b, c, "40.00"))
    return docs


def budget(number: int, cost_center: int, limit: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Budget",
            "metadata": {"name": f"budget-{number:04d}", "namespace": POLICY_NS},
            "spec": {"costCenter": f"cc-{cost_center:02d}", "scope": {"kind": "Developer",
                                                                     "name": f"dev-{cost_center}-{number % 20}"},
                     "limitUSD": limit, "window": {"period": "Daily", "timeZone": "Europe/Berlin"},
                     "routingPolicyRef": "cascade"}}


def apply(control_plane: ControlPlane, docs: list[dict[str, Any]]) -> None:
    for start in range(0, len(docs), 250):
        control_plane.apply("\n---\n".join(json.dumps(d) for d in docs[start:start + 250]))


def create_keys(control_plane: ControlPlane, count: int, cost_centers: int) -> None:
    secrets_docs = [{"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": f"key-{k:04d}", "namespace": OPERATOR_NS, "labels": {LABEL: "true"}},
                     "stringData": {"key": f"sk-sg-bench-{k}", "developer": f"dev-{k % cost_centers}-{k % 20}",
                                    "costCenter": f"cc-{k % cost_centers:02d}"}} for k in range(count)]
    apply(control_plane, secrets_docs)


class Probe:
    """Reads for the measurements, through the operator's own async client (one session)."""

    def __init__(self, control_plane: ControlPlane) -> None:
        self.kube = Kube(load_configuration(control_plane.kubeconfig, None))

    async def bundle_hash(self) -> str | None:
        """The bundle's content hash from the ConfigMap's metadata alone (cheap to poll)."""
        try:
            metadata = await self.kube.request("GET", core_path("configmaps", OPERATOR_NS, bundlemap.NAME),
                                               accept=METADATA_ONLY)
        except KubeError:
            return None
        return bundlemap.content_hash(metadata)

    async def bundle_budgets(self) -> dict[str, str]:
        try:
            configmap = await self.kube.request("GET", core_path("configmaps", OPERATOR_NS, bundlemap.NAME))
        except KubeError:
            return {}
        document = bundlemap.document(configmap)
        return {b.id: b.limitUSD for b in loads(document).bundle.budgets} if document else {}

    async def reconciled_budgets(self) -> int:
        listing = await self.kube.request("GET", custom_path("budgets", POLICY_NS))
        return sum(1 for item in listing["items"]
                   if (item.get("status") or {}).get("observedGeneration") == item["metadata"]["generation"])

    async def spent(self, name: str) -> str | None:
        found = await self.kube.request("GET", custom_path("budgets", POLICY_NS, name))
        value: str | None = (found.get("status") or {}).get("spentUSD")
        return value


async def until(probe: Callable[[], Any], timeout: float, interval: float = POLL) -> float:
    started = time.perf_counter()
    while not await probe():
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"not reached within {timeout}s")
        await asyncio.sleep(interval)
    return time.perf_counter() - started


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure_apply(control_plane: ControlPlane, probe: Probe, samples: int, budgets: int,
                        cost_centers: int) -> list[float]:
    latencies = []
    for sample in range(samples):
        number, limit = sample * 7 % budgets, f"{41 + sample}.00"
        before = await probe.bundle_hash()
        started = time.perf_counter()
        await asyncio.to_thread(apply, control_plane, [budget(number, number % cost_centers, limit)])

        async def arrived(number: int = number, limit: str = limit, before: str | None = before) -> bool:
            # Poll the hash (metadata only); read the whole bundle once it moved.
            return (await probe.bundle_hash() != before
                    and (await probe.bundle_budgets()).get(f"{POLICY_NS}/budget-{number:04d}") == limit)

        await until(arrived, 30)
        latencies.append(time.perf_counter() - started)
    return latencies


async def measure_reports(control_plane: ControlPlane, probe: Probe, samples: int, budgets: int) -> list[float]:
    kube = Kube(load_configuration(control_plane.kubeconfig, None))
    reporter = SpendReporter(kube, OPERATOR_NS, "bench-proxy", ReportState("bench-proxy"))
    window = window_at(Period.DAILY, "Europe/Berlin", datetime.now(UTC)).id
    totals: dict[str, Decimal] = {}
    latencies = []
    try:
        for sample in range(samples):
            name = f"budget-{(sample * 13 + budgets // 2) % budgets:04d}"
            totals[name] = totals.get(name, Decimal(0)) + Decimal("0.37")
            reporter.state.add(f"{POLICY_NS}/{name}", window, Decimal("0.37"))
            started = time.perf_counter()
            await reporter.report(datetime.now(UTC))

            async def shown(name: str = name, expected: str = str(totals[name])) -> bool:
                return await probe.spent(name) == expected

            await until(shown, 30)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)
    finally:
        await kube.close()
    return latencies


async def bench(control_plane: ControlPlane, args: argparse.Namespace) -> dict[str, Any]:
    for namespace in (OPERATOR_NS, POLICY_NS):
        control_plane.kubectl("create", "namespace", namespace)
    setup = time.perf_counter()
    apply(control_plane, documents(args.budgets, args.cost_centers))
    create_keys(control_plane, args.keys, args.cost_centers)
    print(f"# created {args.budgets} budgets, {args.cost_centers} cost centers, {args.keys} keys "
          f"in {time.perf_counter() - setup:.1f}s", file=sys.stderr)

    probe = Probe(control_plane)
    log = tempfile.NamedTemporaryFile(prefix="operator-bench-", suffix=".log", delete=False)  # noqa: SIM115
    command = [sys.executable, "-m", "spendgate.cli", "operator", f"--kubeconfig={control_plane.kubeconfig}",
               f"--namespace={OPERATOR_NS}", f"--policy-namespace={POLICY_NS}", "--metrics-port=0"]
    started = time.perf_counter()
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    operator = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    try:
        async def all_reconciled() -> bool:
            return (await probe.reconciled_budgets() == args.budgets
                    and len(await probe.bundle_budgets()) == args.budgets)

        await until(all_reconciled, 300, interval=0.25)  # listing 1,000 budgets is not free: poll gently
        cold = time.perf_counter() - started
        rss_after_start = rss_mb(operator.pid)
        applies = await measure_apply(control_plane, probe, args.samples, args.budgets, args.cost_centers)
        reports = await measure_reports(control_plane, probe, args.samples, args.budgets)
        rss_end = rss_mb(operator.pid)
    finally:
        operator.terminate()
        operator.wait(timeout=30)
        await probe.kube.close()
        print(f"# operator log: {log.name}", file=sys.stderr)
    return {"cold": cold, "rss_start": rss_after_start, "rss_end": rss_end, "applies": applies, "reports": reports}


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    applies, reports = results["applies"], results["reports"]
    rows = [
        ("kubectl apply of one Budget -> bundle ConfigMap", f"p50 {statistics.median(applies):.2f} s, "
         f"p95 {percentile(applies, 0.95):.2f} s, max {max(applies):.2f} s ({len(applies)} samples)", "p95 < 1 s"),
        ("spend report -> Budget.status", f"p50 {statistics.median(reports):.2f} s, "
         f"p95 {percentile(reports, 0.95):.2f} s, max {max(reports):.2f} s ({len(reports)} samples)", "< 2 s"),
        (f"{args.budgets} Budgets / {args.cost_centers} CostCenters / {args.keys} keys, cold start",
         f"{results['cold']:.1f} s", "< 60 s"),
        ("operator RSS (after cold start / peak at the end)",
         f"{results['rss_start'][0]:.0f} MB / {results['rss_end'][1]:.0f} MB", "< 200 MB"),
    ]
    lines = ["| measurement | result | target |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, default=1000)
    parser.add_argument("--cost-centers", type=int, default=50)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    run = secrets.token_hex(2)
    print(f"# operator benchmark {run}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores",
          file=sys.stderr)
    with ControlPlane.start() as control_plane:
        results = asyncio.run(bench(control_plane, args))
    print(table(results, args))


if __name__ == "__main__":
    main()
