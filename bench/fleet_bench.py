"""The fleet benchmark (DESIGN.md sections 3 and 4): spend coordination with hundreds of proxies and
1,000 Budgets, against the real operator, kube-apiserver and etcd.

    python bench/fleet_bench.py                         # N = 10, 100, 500 proxies, 1,000 Budgets, 30 s each
    python bench/fleet_bench.py --proxies 500 --seconds 20 --spread random --label after

For each N, on a fresh control plane (tests/cluster/controlplane.py, the suite's kube-apiserver and
etcd): 1,000 Daily Budgets over 50 CostCenters (bench/operator_bench.py's documents, in a time zone
whose day does not end during the run), the operator as a subprocess (`spendgate operator`), and N
simulated proxies. A simulated proxy is the proxy's own live spend loop (spendgate.proxy.live.LiveSpend:
the real report and watch protocol with its deadlines and backoff) around a SpendTracker with no
journal, with its own API client and connections; many run in one process (--workers processes).
Each settles spend on 5-20 budgets every second: budgets of one cost center, as a sidecar serving
one team does (--spread team), or drawn from all budgets, as a shared gateway does (--spread random).

Measured:
- start-up: from spawning the fleet until every proxy has had a report accepted, and until every
  proxy's watches have listed; 429s and other failed calls meanwhile;
- steady state, over --seconds: API server requests/s by verb, 429s (apiserver_request_total), watch
  events/s and bytes/s (apiserver_watch_events_total, apiserver_watch_events_sizes), the operator's
  writes/s by kind (spendgate_operator_api_writes_total) against the budgets whose spend changed;
- report -> status: from the API server accepting a proxy's report (the reply reaching the proxy)
  until that proxy's view of the fleet's spend (what its tracker was told) includes that report and
  every report of the same budget accepted before it. p50 / p95 / max over every report entry of the
  steady state, and the share not seen within the 15 s the fleet runs on after it;
- CPU (cores) and RSS of kube-apiserver, etcd, the operator and the simulated fleet, from /proc;
- the machine: load average, and the CPU of processes outside the benchmark (bench/machine.py).

Results go to bench/results/fleet-<date>-<label>.md. Figures vary with the machine and its load:
compare rows of one run, and runs made minutes apart.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import os
import random
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from cluster.controlplane import ControlPlane, free_loopback_ports  # noqa: E402
from e2e.fleet import quiet_time_zone  # noqa: E402
from machine import snapshot as foreign_snapshot  # noqa: E402
from operator_bench import OPERATOR_NS, POLICY_NS, Probe, apply, documents, until  # noqa: E402
from spendgate.adapters.kube import LISTED, METADATA_LIST, Kube, KubeError, custom_path, load_configuration  # noqa: E402
from spendgate.api.v1alpha1 import Enforcement, Period  # noqa: E402
from spendgate.logic.tracker import SpendTracker  # noqa: E402
from spendgate.logic.windows import window_at  # noqa: E402
from spendgate.policy.bundle import BudgetEntry, Bundle, ScopeEntry, ThresholdEntry, WindowEntry  # noqa: E402
from spendgate.proxy import live  # noqa: E402

RESULTS = REPO / "bench" / "results"
TICKS = os.sysconf("SC_CLK_TCK")
SPEND_INTERVAL = 1.0  # each simulated proxy settles spend on all its budgets once a second
TAIL = 15.0  # after the steady state, the fleet runs on this long so that its last reports can be seen


# the simulated proxies (worker processes) ------------------------------------------------------


@dataclass
class Log:
    """What one worker process saw, as plain data (JSON at the end)."""

    reports: list[tuple[float, int, list[tuple[str, str]]]] = field(default_factory=list)  # accepted, changed entries
    views: list[tuple[float, int, str, str]] = field(default_factory=list)  # the fleet's spend a proxy was told
    listed: dict[int, float] = field(default_factory=dict)  # proxy -> when its first watch listing arrived
    reported: dict[int, float] = field(default_factory=dict)  # proxy -> when its first report was accepted
    calls: Counter[str] = field(default_factory=Counter)  # "PATCH 200", "GET 429", "WATCH TimeoutError" ...
    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # verb -> call durations
    events: int = 0  # watch events received (listings count their items)


class CountingKube(Kube):
    """The proxy's API client, counting what it asks and what it receives."""

    def __init__(self, configuration: Any, log: Log, proxy: int) -> None:
        super().__init__(configuration, live.REQUEST_SECONDS)
        self._log, self._proxy = log, proxy

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                      accept: str = "application/json", query: dict[str, str] | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            result = await super().request(method, path, body, content_type, accept, query)
            self._log.seconds[method].append(time.perf_counter() - started)
        except KubeError as error:
            self._log.calls[f"{method} {error.status}"] += 1
            raise
        except Exception as error:
            self._log.calls[f"{method} {type(error).__name__}"] += 1
            raise
        self._log.calls[f"{method} ok"] += 1
        return result

    async def watch(self, path: str, query: dict[str, str] | None = None, contact: Any = None
                    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        try:
            async for kind, items in super().watch(path, query, contact):
                self._log.events += len(items)
                if kind == LISTED:
                    self._log.listed.setdefault(self._proxy, time.time())
                yield kind, items
        except Exception as error:
            self._log.calls[f"WATCH {getattr(error, 'status', type(error).__name__)}"] += 1
            raise


class ObservedTracker(SpendTracker):
    """A tracker that logs what the live loop tells it about its own budgets."""

    def __init__(self, log: Log, proxy: int, budgets: set[str]) -> None:
        super().__init__()
        self._log, self._proxy, self._budgets = log, proxy, budgets
        self.last_reported: dict[tuple[str, str], Decimal] = {}

    def set_reported(self, totals: Any) -> None:
        super().set_reported(totals)
        self.last_reported = dict(totals)

    def set_global(self, budget_id: str, window_id: str, spent: Decimal | None) -> None:
        super().set_global(budget_id, window_id, spent)
        if spent is not None and budget_id in self._budgets:
            self._log.views.append((time.time(), self._proxy, budget_id, str(spent)))


def fleet_bundle(budgets: int, cost_centers: int) -> Bundle:
    """The budgets of operator_bench.documents as a bundle: what a proxy knows of them (ids, cost centers)."""
    return Bundle(budgets=[BudgetEntry(
        id=f"{POLICY_NS}/budget-{number:04d}", costCenter=f"cc-{number % cost_centers:02d}",
        scope=ScopeEntry(kind="Developer", name=f"dev-{number % cost_centers}-{number % 20}"), limitUSD="40.00",
        window=WindowEntry(period=Period.DAILY, timeZone="UTC"),
        thresholds=ThresholdEntry(alertPercent=80, downgradePercent=95, pausePercent=110),
        enforcement=Enforcement.ENFORCE) for number in range(budgets)])


class SimulatedProxy(live.LiveSpend):
    def __init__(self, kube: Kube, tracker: ObservedTracker, name: str, log: Log, proxy: int, bundle: Bundle) -> None:
        super().__init__(kube, tracker, OPERATOR_NS, name, lambda: bundle, lambda: datetime.now(UTC))
        self._observed, self._log, self._proxy = tracker, log, proxy
        self._logged: dict[tuple[str, str], Decimal] = {}

    async def report_once(self) -> bool:
        sent = await super().report_once()
        if sent:
            now = time.time()
            self._log.reported.setdefault(self._proxy, now)
            changed = [(budget, str(value)) for (budget, window), value in self._observed.last_reported.items()
                       if self._logged.get((budget, window)) != value]
            self._logged = dict(self._observed.last_reported)
            if changed:
                self._log.reports.append((now, self._proxy, changed))
        return sent


async def spend_forever(tracker: SpendTracker, charges: list[tuple[str, str]]) -> None:
    await asyncio.sleep(random.random() * SPEND_INTERVAL)  # proxies do not move in lockstep
    while True:
        amount = Decimal(random.randint(1, 100)) / 10000
        tracker.settle(tracker.reserve(charges, amount), "bench", amount)
        await asyncio.sleep(SPEND_INTERVAL)


async def run_worker(plan: dict[str, Any], out: Path) -> None:
    """Run the plan's proxies until SIGTERM, then write what they saw (at once: a fleet that
    overwhelms its API server may take minutes to wind down, and its figures are the point)."""
    log = Log()
    configuration = load_configuration(Path(plan["kubeconfig"]), None)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = []
    bundle = fleet_bundle(plan["budgets"], plan["cost_centers"])
    for proxy in plan["proxies"]:
        index, budgets = proxy["index"], proxy["budgets"]
        tracker = ObservedTracker(log, index, set(budgets))
        simulated = SimulatedProxy(CountingKube(configuration, log, index), tracker, f"sim-{index:04d}", log, index,
                                   bundle)
        charges = [(budget, plan["window"]) for budget in budgets]
        tasks += [asyncio.create_task(simulated.run()), asyncio.create_task(spend_forever(tracker, charges))]
    await stop.wait()
    out.write_text(json.dumps({"proxies": len(plan["proxies"]), "reports": log.reports, "views": log.views,
                               "listed": log.listed, "reported": log.reported, "calls": log.calls,
                               "seconds": log.seconds, "events": log.events}))


def worker_main(plan_file: Path, out: Path) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(run_worker(json.loads(plan_file.read_text()), out))
    os._exit(0)  # the connections and tasks go with the process


# the benchmark process -------------------------------------------------------------------------


def assign(proxies: int, budgets: int, cost_centers: int, spread: str, seed: int) -> list[list[str]]:
    """The budgets each proxy charges: 5-20 of one team's (its cost center's), or of all budgets."""
    chooser = random.Random(seed)
    by_team: dict[int, list[str]] = defaultdict(list)
    for number in range(budgets):
        by_team[number % cost_centers].append(f"{POLICY_NS}/budget-{number:04d}")
    everything = [name for team in by_team.values() for name in team]
    plans = []
    for proxy in range(proxies):
        pool = by_team[proxy % cost_centers] if spread == "team" else everything
        plans.append(sorted(chooser.sample(pool, min(len(pool), chooser.randint(5, 20)))))
    return plans


class Scraper:
    """Prometheus text from the API server (with the admin token) and from the operator."""

    def __init__(self, control_plane: ControlPlane, operator_port: int) -> None:
        self._apiserver = control_plane.server + "/metrics"
        self._token = control_plane.token
        self._context = ssl.create_default_context(cafile=str(control_plane.workdir / "pki" / "ca.crt"))
        self._operator = f"http://127.0.0.1:{operator_port}/metrics"

    def apiserver(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        request = urllib.request.Request(self._apiserver, headers={"Authorization": f"Bearer {self._token}"})
        with urllib.request.urlopen(request, timeout=30, context=self._context) as reply:
            return samples(reply.read().decode(), ("apiserver_request_total", "apiserver_watch_events_total",
                                                   "apiserver_watch_events_sizes_sum",
                                                   "apiserver_flowcontrol_rejected_requests_total"))

    def operator(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(self._operator, timeout=30) as reply:
            return samples(reply.read().decode(), ("spendgate_operator_api_writes_total",))


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str, names: tuple[str, ...]) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def delta(after: Samples, before: Samples, name: str, by: str | None = None,
          where: dict[str, str] | None = None) -> dict[str, float]:
    """Increase of a counter between two scrapes, summed by one label."""
    sums: dict[str, float] = defaultdict(float)
    for (metric, labels), value in after.items():
        if metric != name:
            continue
        label_map = dict(labels)
        if where and any(label_map.get(key) != wanted for key, wanted in where.items()):
            continue
        sums[label_map.get(by, "") if by else ""] += value - before.get((metric, labels), 0.0)
    return {key: value for key, value in sums.items() if value}


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@dataclass
class Fleet:
    proxies: int
    recorded: int  # proxies whose worker wrote its figures
    startup_reported: float | None  # seconds until every proxy had a report accepted (None: not within the timeout)
    startup_listed: float | None
    startup_calls: dict[str, float]  # API server answers by code during start-up
    seconds: float
    requests: dict[str, float]  # per second, by verb
    codes: dict[str, float]  # per second, by code
    rejected: float  # API priority and fairness rejections in the steady state
    events: dict[str, float]  # watch events per second, by resource
    event_bytes: dict[str, float]
    writes: dict[str, float]  # the operator's writes per second, by kind
    needed: int  # budgets whose spend changes every second
    latencies: list[float]
    unseen: int
    cpu: dict[str, float]  # cores
    rss: dict[str, tuple[float, float]]
    client_calls: dict[str, int]
    client_seconds: dict[str, list[float]]  # the simulated proxies' API calls that succeeded, by verb
    client_events: int
    foreign_cpu: float  # cores used by processes outside the benchmark
    load: tuple[float, float]


async def count_reports(kube: Kube) -> int:
    listing = await kube.request("GET", custom_path("spendreports", OPERATOR_NS), accept=METADATA_LIST)
    return len(listing.get("items") or [])


def one_fleet(proxies: int, args: argparse.Namespace, workdir: Path) -> Fleet:
    # The day must not end while this fleet runs (set-up and cold start included).
    zone = quiet_time_zone(margin=timedelta(seconds=args.startup_timeout + args.settle + args.seconds + 600))
    docs = documents(args.budgets, args.cost_centers)
    for doc in docs:
        if doc["kind"] == "Budget":
            doc["spec"]["window"]["timeZone"] = zone
    window = window_at(Period.DAILY, zone, datetime.now(UTC)).id
    plans = assign(proxies, args.budgets, args.cost_centers, args.spread, args.seed)
    with ControlPlane.start() as control_plane:
        for namespace in (OPERATOR_NS, POLICY_NS):
            control_plane.kubectl("create", "namespace", namespace)
        apply(control_plane, docs)
        (port,) = free_loopback_ports(1)
        operator_log = (workdir / f"operator-{proxies}.log").open("wb")
        operator = subprocess.Popen(  # dies with this process, whatever happens to it
            ["setpriv", "--pdeathsig", "KILL", "--", sys.executable, "-m", "spendgate.cli", "operator",
             f"--kubeconfig={control_plane.kubeconfig}",
             f"--namespace={OPERATOR_NS}", f"--policy-namespace={POLICY_NS}", f"--metrics-port={port}",
             *args.operator_arg],
            stdout=operator_log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        workers: list[tuple[subprocess.Popen[bytes], Path]] = []
        try:
            asyncio.run(_reconciled(control_plane, args.budgets))
            print(f"# N={proxies}: {args.budgets} budgets reconciled", file=sys.stderr, flush=True)
            scraper = Scraper(control_plane, port)
            before_start = scraper.apiserver()
            count = args.workers or max(1, min(4, math.ceil(proxies / 125)))
            spawned = time.time()
            for number in range(count):
                plan = {"kubeconfig": str(control_plane.kubeconfig), "window": window, "budgets": args.budgets,
                        "cost_centers": args.cost_centers,
                        "proxies": [{"index": i, "budgets": plans[i]} for i in range(number, proxies, count)]}
                plan_file, out = workdir / f"plan-{proxies}-{number}.json", workdir / f"out-{proxies}-{number}.json"
                plan_file.write_text(json.dumps(plan))
                worker_log = (workdir / f"worker-{proxies}-{number}.log").open("wb")
                workers.append((subprocess.Popen(
                    ["setpriv", "--pdeathsig", "KILL", "--", sys.executable, __file__, "--worker", str(plan_file),
                     str(out)], stdout=worker_log, stderr=subprocess.STDOUT), out))
            startup = asyncio.run(_all_reported(control_plane, proxies, args.startup_timeout))
            print(f"# N={proxies}: every proxy reported after {startup}", file=sys.stderr, flush=True)
            after_start = scraper.apiserver()
            time.sleep(args.settle)  # the first reports change every Budget's Reporting condition: 1,000 writes
            pids = {"kube-apiserver": control_plane.pid("kube-apiserver"), "etcd": control_plane.pid("etcd"),
                    "operator": operator.pid, **{f"fleet-{n}": w.pid for n, (w, _) in enumerate(workers)}}
            load_before = os.getloadavg()[0]
            ticks0, foreign0, api0, op0, started = ({k: cpu_ticks(p) for k, p in pids.items()}, foreign_snapshot(),
                                                     scraper.apiserver(), scraper.operator(), time.monotonic())
            time.sleep(args.seconds)
            ticks1, foreign1, api1, op1, ended = ({k: cpu_ticks(p) for k, p in pids.items()}, foreign_snapshot(),
                                                   scraper.apiserver(), scraper.operator(), time.monotonic())
            steady_end = time.time()
            rss = {k: rss_mb(p) for k, p in pids.items() if not k.startswith("fleet")}
            load_after = os.getloadavg()[0]
            time.sleep(TAIL)
        finally:
            try:
                stop_workers(workers)
            finally:
                operator.terminate()
                operator.wait(30)
    logs = [json.loads(out.read_text()) for _, out in workers if out.exists()]
    seconds = ended - started
    cpu = {k: (ticks1[k] - ticks0[k]) / TICKS / seconds for k in ticks0}
    fleet_cpu = sum(v for k, v in cpu.items() if k.startswith("fleet"))
    cpu = {k: v for k, v in cpu.items() if not k.startswith("fleet")} | {"simulated fleet": fleet_cpu}
    foreign = sum(foreign1.foreign_ticks.get(p, 0) - t for p, t in foreign0.foreign_ticks.items()) / TICKS / seconds
    steady_start = steady_end - seconds
    latencies, unseen = report_latencies(logs, steady_start, steady_end)
    per_second = {k: v / seconds for k, v in delta(api1, api0, "apiserver_request_total", "verb").items()}
    listed = [t for log in logs for t in log["listed"].values()]
    return Fleet(
        proxies=proxies, recorded=sum(log["proxies"] for log in logs), startup_reported=startup,
        startup_listed=(max(listed) - spawned) if len(listed) == proxies else None,
        startup_calls=delta(after_start, before_start, "apiserver_request_total", "code"),
        seconds=seconds, requests=per_second,
        codes={k: v / seconds for k, v in delta(api1, api0, "apiserver_request_total", "code").items()},
        rejected=sum(delta(api1, api0, "apiserver_flowcontrol_rejected_requests_total").values()),
        events={k: v / seconds for k, v in delta(api1, api0, "apiserver_watch_events_total", "resource").items()},
        event_bytes={k: v / seconds
                     for k, v in delta(api1, api0, "apiserver_watch_events_sizes_sum", "resource").items()},
        writes={k: v / seconds for k, v in delta(op1, op0, "spendgate_operator_api_writes_total", "kind",
                                                 {"result": "written"}).items()},
        needed=len({budget for plan in plans for budget in plan}),
        latencies=latencies, unseen=unseen, cpu=cpu, rss=rss,
        client_calls=dict(sum((Counter(log["calls"]) for log in logs), Counter())),
        client_seconds={verb: [t for log in logs for t in log["seconds"].get(verb, [])]
                        for verb in {verb for log in logs for verb in log["seconds"]}},
        client_events=sum(log["events"] for log in logs), foreign_cpu=foreign, load=(load_before, load_after))


def stop_workers(workers: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for worker, _ in workers:
        worker.send_signal(signal.SIGTERM)
    for worker, _ in workers:
        try:
            worker.wait(120)
        except subprocess.TimeoutExpired:
            worker.kill()  # its figures are lost; the row says how many proxies it held
            worker.wait()


async def _reconciled(control_plane: ControlPlane, budgets: int) -> None:
    probe = Probe(control_plane)

    async def ready() -> bool:
        return await probe.reconciled_budgets() == budgets

    try:
        await until(ready, 600, interval=1.0)
    finally:
        await probe.kube.close()


async def _all_reported(control_plane: ControlPlane, proxies: int, timeout: float) -> float | None:
    """Seconds until every proxy's SpendReport exists (its first report was accepted)."""
    kube = Kube(load_configuration(control_plane.kubeconfig, None))
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            with contextlib.suppress(KubeError, TimeoutError, OSError):
                if await count_reports(kube) >= proxies:
                    return time.monotonic() - started
            await asyncio.sleep(1.0)
        return None
    finally:
        await kube.close()


def report_latencies(logs: list[dict[str, Any]], start: float, end: float) -> tuple[list[float], int]:
    """Per accepted report entry in [start, end]: seconds until the reporting proxy's view of that
    budget held at least the sum of every proxy's latest report of it (its own included)."""
    by_budget: dict[str, list[tuple[float, int, Decimal]]] = defaultdict(list)
    for log in logs:
        for at, proxy, entries in log["reports"]:
            for budget, value in entries:
                by_budget[budget].append((at, proxy, Decimal(value)))
    views: dict[tuple[int, str], tuple[list[float], list[Decimal]]] = {}
    for at, proxy, budget, value in sorted(v for log in logs for v in log["views"]):
        times, values = views.setdefault((proxy, budget), ([], []))
        times.append(at)
        values.append(max(Decimal(value), values[-1]) if values else Decimal(value))  # a view never goes back
    latencies, unseen = [], 0
    for budget, reports in by_budget.items():
        latest: dict[int, Decimal] = {}
        for at, proxy, value in sorted(reports):
            latest[proxy] = value
            if not start <= at <= end:
                continue
            times, values = views.get((proxy, budget), ([], []))
            index = bisect.bisect_left(values, sum(latest.values()))
            if index == len(values):
                unseen += 1
            else:
                latencies.append(max(0.0, times[index] - at))
    return latencies, unseen


# the report ------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else float("nan")


def milliseconds(times: list[float]) -> str:
    return f"{statistics.median(times) * 1000:.0f} / {percentile(times, 0.95) * 1000:.0f} ms" if times else "-"


def seconds_text(value: float | None) -> str:
    return "not within the timeout" if value is None else f"{value:.1f} s"


def table(fleets: list[Fleet], args: argparse.Namespace) -> str:
    head = ["| proxies | start-up: all reported / all listed | start-up 429s | API requests/s (by verb) "
            "| watch events/s (by resource) | watch MB/s | operator writes/s (by kind) / budgets changing "
            "| report -> view p50 / p95 / max | never seen | 429s/s | CPU cores: apiserver / etcd / operator / fleet "
            "| RSS MB: apiserver / etcd / operator | other load (cores) | load avg |",
            "|" + "---|" * 14]
    rows = []
    for f in fleets:
        verbs = ", ".join(f"{verb} {rate:,.0f}" for verb, rate in sorted(f.requests.items(), key=lambda kv: -kv[1])
                          if rate >= 0.5)
        events = ", ".join(f"{res} {rate:,.0f}" for res, rate in sorted(f.events.items(), key=lambda kv: -kv[1])
                           if rate >= 0.5)
        writes = ", ".join(f"{kind} {rate:,.0f}" for kind, rate in sorted(f.writes.items()))
        total = len(f.latencies) + f.unseen
        never = f"{f.unseen / total * 100:.1f}% of {total:,}" if total else "-"
        lat = (f"{statistics.median(f.latencies):.2f} / {percentile(f.latencies, 0.95):.2f} / "
               f"{max(f.latencies):.2f} s") if f.latencies else "-"
        rows.append(
            f"| {f.proxies}{'' if f.recorded == f.proxies else f' (figures of {f.recorded})'} "
            f"| {seconds_text(f.startup_reported)} / {seconds_text(f.startup_listed)} "
            f"| {f.startup_calls.get('429', 0):,.0f} | {sum(f.requests.values()):,.0f} ({verbs}) "
            f"| {sum(f.events.values()):,.0f} ({events}) | {sum(f.event_bytes.values()) / 1e6:.1f} "
            f"| {writes or '0'} / {f.needed} | {lat} | {never} | {f.codes.get('429', 0):.1f} "
            f"| {f.cpu['kube-apiserver']:.2f} / {f.cpu['etcd']:.2f} / {f.cpu['operator']:.2f} / "
            f"{f.cpu['simulated fleet']:.2f} "
            f"| {f.rss['kube-apiserver'][0]:.0f} / {f.rss['etcd'][0]:.0f} / {f.rss['operator'][0]:.0f} "
            f"| {f.foreign_cpu:.2f} | {f.load[0]:.1f} -> {f.load[1]:.1f} |")
    calls = "\n".join(f"- N={f.proxies}: the simulated proxies' calls: "
                      + ", ".join(f"{k} {v:,}" for k, v in sorted(f.client_calls.items()))
                      + "; call durations p50 / p95: "
                      + ", ".join(f"{verb} {milliseconds(times)}" for verb, times in sorted(f.client_seconds.items()))
                      + f"; watch events received {f.client_events:,}" for f in fleets)
    return "\n".join([*head, *rows]) + "\n\n" + calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proxies", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--budgets", type=int, default=1000)
    parser.add_argument("--cost-centers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the steady-state measurement")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds between the start-up and the steady-state measurement")
    parser.add_argument("--spread", choices=("team", "random"), default="team",
                        help="each proxy charges budgets of one cost center (sidecars), or of any (shared gateway)")
    parser.add_argument("--workers", type=int, default=0, help="processes for the simulated proxies (default: "
                        "one per 125, at most 4)")
    parser.add_argument("--operator-arg", action="append", default=[], help="passed to `spendgate operator`")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--label", default="", help="names the results file, e.g. before or after")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(*args.worker)
        return 0
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    fleets = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as workdir:
        for proxies in args.proxies:
            fleets.append(one_fleet(proxies, args, Path(workdir)))
            print(table(fleets[-1:], args), file=sys.stderr, flush=True)
    report = table(fleets, args)
    today = datetime.now(UTC).date().isoformat()
    out = args.out or RESULTS / f"fleet-{today}{'-' + args.label if args.label else ''}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        f"# Fleet benchmark ({today}, commit {commit}{', ' + args.label if args.label else ''})\n\n"
        f"`python bench/fleet_bench.py {' '.join(sys.argv[1:])}`: {args.budgets} Budgets over {args.cost_centers} "
        f"CostCenters, each simulated proxy settling spend on 5-20 budgets every second ({args.spread} spread), "
        f"{args.seconds:.0f} s of steady state per row; {os.cpu_count()} cores shared by everything (API server, "
        "etcd, operator, the simulated fleet) and by other engineers' work (the 'other load' column).\n\n"
        f"{report}\n")
    print(report)
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
