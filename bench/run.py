"""The gateway benchmark: mock upstream, bare passthrough, spendgate and LiteLLM in one run, one table.

Layout on a 2-core machine: every gateway is pinned to core 0; the zero-delay mock upstream, wrk
and the latency client share core 1. For each gateway in turn: spawn it, time it until the first
successful request through it, check a non-streaming and a streaming response, then wrk for
throughput at 16 connections (non-streaming, streaming). Then the sequential latency client at
1 connection measures all of them (and the mock directly) interleaved, with a 2 KB body and a
~400 KB Claude Code turn. RSS is read after all the load. Last, the policy compiler benchmark.

Run it with bench/run.sh, which installs wrk and LiteLLM first.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import bodies  # noqa: E402
import machine  # noqa: E402
import report  # noqa: E402
from latency import Connection, Target, percentile, request_bytes  # noqa: E402
from litellm_config import QUIET_UVICORN_LOGGING, litellm_config  # noqa: E402
from report import RowView, WrkResult, combine  # noqa: E402

REPO = BENCH_DIR.parent
GATEWAY_CPU = "0"
LOAD_CPU = "1"
HOST = "127.0.0.1"
UPSTREAM_KEY = "sk-ant-bench-upstream"
LITELLM_MASTER_KEY = "sk-bench-litellm-master"
CLIENT_HEADERS = {"anthropic-version": "2023-06-01", "user-agent": "claude-cli/2.1.300 (external, cli)",
                  "x-claude-code-session-id": bodies.SESSION_ID}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return Path(os.environ.get("SPENDGATE_BENCH_CACHE", Path.home() / ".cache" / "spendgate" / "bench"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


@dataclass
class Service:
    """A server process we start, pinned to one core, in its own process group."""

    name: str
    argv: list[str]
    port: int
    api_key: str
    cpu: str = GATEWAY_CPU
    env: dict[str, str] = field(default_factory=dict)
    unset_env: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, workdir: Path) -> float:
        """Spawn; return the monotonic spawn time. Byte code is cached under the bench cache directory
        (PYTHONPYCACHEPREFIX), never in the source tree, and used from the second start on."""
        self.log_path = workdir / f"{self.name}.log"
        env = {**os.environ, "PYTHONPYCACHEPREFIX": str(cache_dir() / "pycache"), **self.env}
        env = {key: value for key, value in env.items() if key not in (*self.unset_env, "PYTHONDONTWRITEBYTECODE")}
        with self.log_path.open("wb") as output:
            spawned = time.monotonic()
            self.process = subprocess.Popen(["taskset", "-c", self.cpu, *self.argv], stdout=output,
                                            stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True)
        return spawned

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def signal_group(self, number: signal.Signals) -> None:
        """Signal the process group we created (the server and its workers)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, number)

    def stop(self) -> None:
        """SIGTERM (and SIGCONT, in case it is frozen) to our process group, then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig, grace in ((signal.SIGTERM, 8.0), (signal.SIGKILL, 3.0)):
            try:
                os.killpg(self.process.pid, sig)
                os.killpg(self.process.pid, signal.SIGCONT)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue

    def target(self, name: str | None = None, freezable: bool = False) -> Target:
        pgid = self.process.pid if freezable and self.process is not None else None
        return Target(name=name or self.name, host=HOST, port=self.port,
                      headers={**CLIENT_HEADERS, "x-api-key": self.api_key}, pgid=pgid)


@contextlib.contextmanager
def frozen(services: list[Service]) -> Iterator[None]:
    """The other gateways stopped (SIGSTOP) while one is started and loaded, so that their timers and
    background work stay off its core; resumed afterwards."""
    for service in services:
        service.signal_group(signal.SIGSTOP)
    try:
        yield
    finally:
        for service in services:
            service.signal_group(signal.SIGCONT)


def process_tree_rss_bytes(pid: int) -> int:
    """VmRSS of a process and all its descendants (LiteLLM's workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        pending.extend(children.get(current, []))
        total += _rss_bytes(current)
    return total


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------------------------------------
# Probes: readiness and response checks
# ---------------------------------------------------------------------------------------------


def post_once(target: Target, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    connection = Connection(target, timeout)
    try:
        response = connection.send(request_bytes(target, body), keep_body=True)
        return response.status, response.body
    finally:
        connection.close()


def wait_ready(service: Service, spawned: float, body: bytes, limit_s: float) -> float:
    """Seconds from spawn to the first 200 through the service; raises RuntimeError on failure."""
    deadline = spawned + limit_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"exited with code {service.process.returncode if service.process else '?'}")
        try:
            status, answer = post_once(service.target(), body, timeout=5.0)
            if status == 200:
                return time.monotonic() - spawned
            last = f"HTTP {status}: {answer[:200]!r}"
        except OSError as error:
            last = f"{type(error).__name__}"
        time.sleep(0.005)
    raise RuntimeError(f"not ready within {limit_s:.0f} s ({last})")


def check_responses(target: Target) -> None:
    """A non-streaming Message with usage and a complete SSE stream, or RuntimeError."""
    status, answer = post_once(target, bodies.small_body(stream=False))
    if status != 200 or b'"usage"' not in answer:
        raise RuntimeError(f"non-streaming check failed: HTTP {status} {answer[:300]!r}")
    status, answer = post_once(target, bodies.small_body(stream=True))
    events = re.findall(rb"^event: (\w+)", answer, flags=re.MULTILINE)
    if status != 200 or not events or events[0] != b"message_start" or events[-1] != b"message_stop":
        raise RuntimeError(f"streaming check failed: HTTP {status} {answer[:300]!r}")


# ---------------------------------------------------------------------------------------------
# Load: wrk for throughput, the latency client for added latency
# ---------------------------------------------------------------------------------------------


def run_wrk(target: Target, body_file: Path, seconds: float, connections: int = 16) -> WrkResult:
    env = {**os.environ, "BENCH_BODY": str(body_file), "BENCH_API_KEY": target.headers["x-api-key"],
           "BENCH_PATH": target.path}
    whole_seconds = max(1, round(seconds))  # wrk takes whole seconds
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{whole_seconds}s", "--timeout", "10s",
            "-s", str(BENCH_DIR / "post.lua"), f"http://{target.host}:{target.port}"]
    before, others_before = cpu_times(), machine.snapshot()
    completed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=whole_seconds + 60, check=False)
    busy, others = cpu_busy_percent(before, cpu_times()), machine.foreign_percent(others_before, machine.snapshot())
    match = re.search(r"^BENCH_RESULT (.*)$", completed.stdout, flags=re.MULTILINE)
    if completed.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr[-300:]}{completed.stdout[-300:]}")
    values = {key: int(value) for key, value in (pair.split("=") for pair in match.group(1).split())}
    error_kinds = ("connect", "read", "write", "status", "timeout")
    errors = sum(values[kind] for kind in error_kinds)
    detail = ", ".join(f"{values[kind]} {kind}" for kind in error_kinds if values[kind])
    return WrkResult(rps=values["requests"] / (values["duration_us"] / 1e6), requests=values["requests"],
                     duration_s=values["duration_us"] / 1e6,
                     errors=errors, error_detail=detail, p50_ms=values["p50_us"] / 1000,
                     p99_ms=values["p99_us"] / 1000, busy_percent=busy, foreign_percent=others)


def cpu_times() -> dict[str, tuple[int, int]]:
    """Per core: (busy, total) jiffies from /proc/stat."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            user, nice, system, idle, iowait, irq, softirq, steal = (int(value) for value in fields[:8])
            busy = user + nice + system + irq + softirq + steal
            times[name.removeprefix("cpu")] = (busy, busy + idle + iowait)
    return times


def cpu_busy_percent(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
    return {core: 100.0 * (after[core][0] - before[core][0]) / max(1, after[core][1] - before[core][1])
            for core in after if core in before}


def run_latency(targets: list[Target], body_file: Path, rounds: int, block: int, workdir: Path,
                label: str) -> dict[str, Any]:
    spec = workdir / f"latency-{label}.json"
    spec.write_text(json.dumps({"targets": [vars(t) for t in targets], "body_file": str(body_file),
                                "rounds": rounds, "block": block}))
    argv = ["taskset", "-c", LOAD_CPU, sys.executable, str(BENCH_DIR / "latency.py"), "--spec", str(spec)]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"latency client failed: {completed.stderr[-500:]}")
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def latency_summary(samples: dict[str, Any]) -> dict[str, Any]:
    values: list[float] = samples["latencies_us"]
    if not values:
        return {"p50_ms": None, "p99_ms": None, "n": 0, "errors": samples["errors"], "statuses": samples["statuses"],
                "last_error": samples["last_error"]}
    return {"p50_ms": percentile(values, 0.50) / 1000, "p99_ms": percentile(values, 0.99) / 1000,
            "n": len(values), "errors": samples["errors"], "statuses": samples["statuses"],
            "last_error": samples["last_error"]}


# ---------------------------------------------------------------------------------------------
# The gateways
# ---------------------------------------------------------------------------------------------


@dataclass
class Gateway:
    """How to build one gateway's service; `prepare` may raise RuntimeError (row: not available)."""

    name: str
    label: str
    prepare: Callable[[Path, str, int], Service]
    ready_limit_s: float = 60.0


def bare_service(workdir: Path, upstream: str, port: int) -> Service:
    argv = [sys.executable, str(BENCH_DIR / "bare_passthrough.py"), "--upstream", upstream, "--port", str(port)]
    return Service("bare", argv, port, api_key=UPSTREAM_KEY)


def spendgate_command() -> list[str]:
    """The `spendgate` console script beside this Python, else the CLI module run by it."""
    script = Path(sys.executable).parent / "spendgate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "spendgate.cli"]


# Rate limits per key, per developer and in total on the example cost center: far above what the run
# sends (never refusing), so each request is checked against all nine windows and counted in them.
RATE_LIMITS = ("  rateLimits:\n"
               "    perVirtualKey: {requestsPerMinute: 10000000, outputTokensPerMinute: 1000000000000}\n"
               "    perDeveloper: {requestsPerMinute: 10000000, inputTokensPerMinute: 1000000000000, "
               "outputTokensPerMinute: 1000000000000}\n"
               "    total: {requestsPerMinute: 10000000, inputTokensPerMinute: 1000000000000}\n")


def rate_limited_service(workdir: Path, upstream: str, port: int) -> Service:
    policies = workdir / "policies-rate-limits"
    shutil.copytree(REPO / "examples" / "policies", policies, dirs_exist_ok=True)
    centers = policies / "10-costcenters.yaml"
    members = "  members: [alice, bob, carol]\n"
    if members not in centers.read_text():
        raise RuntimeError(f"{centers} changed: cannot add the rate limits")
    centers.write_text(centers.read_text().replace(members, members + RATE_LIMITS))
    return spendgate_service(workdir, upstream, port, policies, "spendgate-rate-limits")


def spendgate_service(workdir: Path, upstream: str, port: int, policies: Path = REPO / "examples" / "policies",
                      name: str = "spendgate") -> Service:
    command = spendgate_command()
    probe = subprocess.run([*command, "proxy", "--help"], capture_output=True, text=True, timeout=60,
                           check=False)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"`spendgate proxy` is not available ({last})")
    home = workdir / f"spendgate-{port}"  # its keys file and ledger
    home.mkdir(parents=True, exist_ok=True)
    keys_file = home / "keys.json"
    created = subprocess.run([*command, "keys", "create", "--developer", "alice", "--cost-center", "platform",
                              "--keys-file", str(keys_file)], capture_output=True, text=True, timeout=60, check=False)
    if created.returncode != 0:
        raise RuntimeError(f"`spendgate keys create` failed: {created.stderr.strip()[-300:]}")
    key = created.stdout.strip().splitlines()[0]
    argv = [*command, "proxy", "--policies", str(policies), "--keys-file",
            str(keys_file), "--upstream", upstream, "--port", str(port), "--admin-port", str(free_port())]
    argv += spendgate_feature_flags(probe.stdout, home)
    return Service(name, argv, port, api_key=key, env={"ANTHROPIC_API_KEY": UPSTREAM_KEY})


# Processes a gateway needs beside it (the OpenTelemetry Collector), stopped with the mock at the end.
COMPANIONS: list[Service] = []
COLLECTOR_CONFIG = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: {host}:{port}
exporters:
  file:
    path: /dev/null
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces: {{receivers: [otlp], exporters: [file]}}
    metrics: {{receivers: [otlp], exporters: [file]}}
"""


def start_collector(workdir: Path) -> str:
    """A real OpenTelemetry Collector (hack/build-control-plane.sh otelcol) on the load core; its OTLP/HTTP URL."""
    built = subprocess.run(["bash", str(REPO / "hack" / "build-control-plane.sh"), "otelcol"], capture_output=True,
                           text=True, check=False)
    if built.returncode != 0:
        raise RuntimeError(f"the OpenTelemetry Collector could not be built: {built.stderr.strip()[-300:]}")
    binary = built.stdout.strip().partition("=")[2]
    port = free_port()
    config = workdir / "otelcol.yaml"
    config.write_text(COLLECTOR_CONFIG.format(host=HOST, port=port))
    collector = Service("otelcol", [binary, f"--config=file:{config}"], port, api_key="", cpu=LOAD_CPU)
    collector.start(workdir)
    COMPANIONS.append(collector)
    for _ in range(200):
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return f"http://{HOST}:{port}"
        time.sleep(0.05)
    raise RuntimeError(f"the OpenTelemetry Collector did not listen: {collector.log_tail()}")


def spendgate_otlp_service(workdir: Path, upstream: str, port: int) -> Service:
    """spendgate, all features on, and every request exported to a real collector (spans and metrics)."""
    service = spendgate_service(workdir, upstream, port)
    service.name = "spendgate-otlp"
    service.argv += ["--otlp-endpoint", start_collector(workdir)]
    return service


def spendgate_feature_flags(help_text: str, workdir: Path) -> list[str]:
    """Turn on (and point into the run's directory) whatever optional features the proxy offers."""
    flags: list[str] = []
    if "--ledger " in help_text:
        flags += ["--ledger", str(workdir / "ledger.jsonl")]
    for state_flag in ("--journal", "--spend-journal", "--state-dir", "--data-dir"):
        if f"{state_flag} " in help_text:  # spend state starts empty in every run: budgets stay unspent
            flags += [state_flag, str(workdir / state_flag.strip("-"))]
    return flags


def litellm_venv() -> Path:
    return cache_dir() / f"litellm-{os.environ.get('LITELLM_VERSION', '1.100.5')}"


def litellm_service(workdir: Path, upstream: str, port: int) -> Service:
    executable = litellm_venv() / "bin" / "litellm"
    if not executable.exists():
        raise RuntimeError(f"LiteLLM is not installed at {executable} (run bench/install.sh)")
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(upstream, UPSTREAM_KEY, LITELLM_MASTER_KEY))
    log_config = workdir / "litellm-logging.json"
    log_config.write_text(json.dumps(QUIET_UVICORN_LOGGING))
    argv = [str(executable), "--config", str(config), "--host", HOST, "--port", str(port), "--num_workers", "1",
            "--log_config", str(log_config)]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR",
           "ANTHROPIC_API_KEY": UPSTREAM_KEY}
    return Service("litellm", argv, port, api_key=LITELLM_MASTER_KEY, env=env,
                   unset_env=("DATABASE_URL", "REDIS_HOST", "REDIS_URL"))


GATEWAYS = [
    Gateway("bare", "bare passthrough, raw ASGI (uvicorn, uvloop, httptools) + aiohttp client", bare_service),
    Gateway("spendgate", "spendgate proxy, all features on", spendgate_service, ready_limit_s=30.0),
    Gateway("spendgate-otlp", "spendgate proxy, all features on, OTLP export to a collector", spendgate_otlp_service,
            ready_limit_s=30.0),
    Gateway("spendgate-rate-limits", "spendgate proxy, all features on + rate limits (per key, developer, cost "
            "center)", rate_limited_service, ready_limit_s=30.0),
    Gateway("litellm", f"LiteLLM {os.environ.get('LITELLM_VERSION', '1.100.5')} proxy, 1 worker", litellm_service),
]


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class Settings:
    seconds: float
    rps_rounds: int
    warmup_seconds: float
    rounds: int
    small_block: int
    large_block: int
    only: list[str]


@dataclass
class Row:
    name: str
    label: str
    failure: str | None = None
    ready_s: float | None = None
    rps_runs: dict[str, list[WrkResult]] = field(default_factory=dict)
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    rss_bytes: int | None = None
    service: Service | None = None
    target: Target | None = None

    def live(self) -> bool:
        return self.failure is None and self.target is not None


def write_bodies(workdir: Path) -> dict[str, Path]:
    files = {"small": bodies.small_body(), "small-stream": bodies.small_body(stream=True),
             "large": bodies.large_body()}
    paths = {}
    for name, body in files.items():
        paths[name] = workdir / f"body-{name}.json"
        paths[name].write_bytes(body)
    return paths


def start_mock(workdir: Path) -> Service:
    port = free_port()
    mock = Service("mock", [sys.executable, str(BENCH_DIR / "mock_upstream.py"), "--port", str(port)], port,
                   api_key=UPSTREAM_KEY, cpu=LOAD_CPU)
    spawned = mock.start(workdir)
    wait_ready(mock, spawned, bodies.small_body(), limit_s=15.0)
    return mock


def warm_up(row: Row, body_files: dict[str, Path], settings: Settings) -> None:
    if settings.warmup_seconds > 0 and row.target is not None:
        run_wrk(row.target, body_files["small"], settings.warmup_seconds)


def measure_throughput(rows: list[Row], body_files: dict[str, Path], settings: Settings) -> None:
    """wrk rounds over all rows, the order rotated round by round; the other gateways frozen meanwhile."""
    seconds = settings.seconds / settings.rps_rounds
    for round_number in range(settings.rps_rounds):
        for offset in range(len(rows)):
            row = rows[(round_number + offset) % len(rows)]
            if not row.live() or row.target is None:
                continue
            others = [other.service for other in rows if other is not row and other.service is not None]
            with frozen(others):
                for mode, body in (("non-stream", "small"), ("stream", "small-stream")):
                    result = run_wrk_undisturbed(row.target, body_files[body], seconds)
                    row.rps_runs.setdefault(mode, []).append(result)
                    log(f"round {round_number + 1}/{settings.rps_rounds}, {row.name}, {mode}: "
                        f"{result.rps:,.0f} RPS, {result.errors} errors, other processes "
                        f"{result.foreign_percent:.0f}% of a core")


def run_wrk_undisturbed(target: Target, body_file: Path, seconds: float, retries: int = 2) -> WrkResult:
    """wrk, again (after waiting for quiet) when other processes took more than a little CPU meanwhile."""
    result = run_wrk(target, body_file, seconds)
    for _ in range(retries):
        if result.foreign_percent < machine.QUIET_PERCENT or not machine.budget_left():
            break
        log(f"other processes used {result.foreign_percent:.0f}% of a core during the run: waiting for quiet, "
            "then measuring again")
        machine.wait_quiet()
        result = run_wrk(target, body_file, seconds)
    return result


def bring_up(gateway: Gateway, workdir: Path, upstream: str, body_files: dict[str, Path], settings: Settings) -> Row:
    """Spawn, time until ready, check the answers, warm up; a failure is recorded in the row."""
    row = Row(gateway.name, gateway.label)
    try:
        service = gateway.prepare(workdir, upstream, free_port())
    except RuntimeError as error:
        row.failure = str(error)
        return row
    row.service = service
    log(f"{gateway.name}: starting on core {GATEWAY_CPU} (a first start to warm the caches, then the timed one)")
    try:
        for attempt in ("priming", "timed"):
            if attempt == "timed":
                machine.wait_quiet(limit_s=30.0)
            spawned = service.start(workdir)
            row.ready_s = wait_ready(service, spawned, bodies.small_body(), gateway.ready_limit_s)
            if attempt == "priming":
                service.stop()
        log(f"{gateway.name}: ready in {row.ready_s:.2f} s")
        check_responses(service.target())
        row.target = service.target()
        warm_up(row, body_files, settings)
    except RuntimeError as error:
        row.failure = f"{error}; log: {service.log_tail(8)}"
        log(f"{gateway.name}: FAILED: {row.failure}")
        service.stop()
        row.service = None
    return row


def measure_latency(rows: list[Row], mock: Service, body_files: dict[str, Path], settings: Settings,
                    workdir: Path) -> dict[str, dict[str, Any]]:
    """Interleaved latency for every running gateway plus the mock directly; returns the direct figures."""
    live = [row for row in rows if row.live() and row.service is not None]
    targets = [mock.target("direct"), *[row.service.target(freezable=True) for row in live if row.service]]
    direct: dict[str, dict[str, Any]] = {}
    for size, block in (("small", settings.small_block), ("large", settings.large_block)):
        log(f"latency, {size} body: {settings.rounds} rounds of {block} requests per target, "
            f"{len(targets)} targets, 1 connection each")
        machine.wait_quiet()
        before = machine.snapshot()
        samples = run_latency(targets, body_files[size], settings.rounds, block, workdir, size)
        others = machine.foreign_percent(before, machine.snapshot())
        log(f"latency, {size} body: other processes used {others:.0f}% of a core meanwhile")
        direct[size] = {**latency_summary(samples["direct"]), "foreign_percent": others}
        for row in live:
            row.latency[size] = {**latency_summary(samples[row.name]), "foreign_percent": others}
    return direct


def row_view(row: Row) -> RowView:
    return RowView(name=row.name, label=row.label, failure=row.failure, ready_s=row.ready_s,
                   rps={mode: combine(runs) for mode, runs in row.rps_runs.items()}, latency=row.latency,
                   rss_bytes=row.rss_bytes)


def run_compile_benchmark() -> dict[str, Any]:
    argv = ["taskset", "-c", GATEWAY_CPU, sys.executable, str(BENCH_DIR / "compile_bench.py")]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if completed.returncode != 0:
        return {"failure": completed.stderr.strip()[-500:]}
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def environment() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                            text=True, check=False).stdout.strip()
    return {"cpu": f"{cpu} x {os.cpu_count()}", "kernel": platform.release(), "python": platform.python_version(),
            "wrk": (wrk.stdout + wrk.stderr).split("[")[0].strip(), "commit": commit or "?"}


def run(settings: Settings) -> str:
    workdir = Path(tempfile.mkdtemp(prefix="spendgate-bench-"))
    body_files = write_bodies(workdir)
    rows: list[Row] = []
    mock = start_mock(workdir)
    try:
        upstream = f"http://{HOST}:{mock.port}"
        log(f"mock upstream on core {LOAD_CPU} at {upstream}; working directory {workdir}")
        load = machine.wait_quiet()
        log(f"other processes use {load:.0f}% of a core" + (" (busy machine: waited 60 s for quiet)"
                                                            if load >= machine.QUIET_PERCENT else ""))
        ceiling = Row("mock", "mock upstream, direct (wrk and mock share core 1: the ceiling)",
                      target=mock.target("direct"))
        warm_up(ceiling, body_files, settings)
        for gateway in GATEWAYS:
            if not settings.only or gateway.name in settings.only:
                with frozen([row.service for row in rows if row.service is not None]):
                    rows.append(bring_up(gateway, workdir, upstream, body_files, settings))
        measure_throughput([ceiling, *rows], body_files, settings)
        direct = measure_latency(rows, mock, body_files, settings, workdir)
        for row in rows:
            if row.service is not None and row.service.process is not None and row.service.alive():
                row.rss_bytes = process_tree_rss_bytes(row.service.process.pid)
    finally:
        for row in rows:
            if row.service is not None:
                row.service.stop()
        for companion in COMPANIONS:
            companion.stop()
        mock.stop()
    log("policy compiler benchmark")
    compile_result = run_compile_benchmark()
    shutil.rmtree(workdir, ignore_errors=True)
    return report.render(report.Inputs(
        date=datetime.date.today().isoformat(), rows=[row_view(row) for row in rows],
        ceiling=row_view(ceiling), direct=direct, compile=compile_result, environment=environment(),
        settings=vars(settings)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk duration per throughput figure")
    parser.add_argument("--rps-rounds", type=int, default=2, help="interleaved rounds the wrk seconds are split into")
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved latency rounds")
    parser.add_argument("--small-block", type=int, default=200, help="latency requests per target per round, 2 KB")
    parser.add_argument("--large-block", type=int, default=80, help="latency requests per target per round, 400 KB")
    parser.add_argument("--only", nargs="*", default=[], choices=[g.name for g in GATEWAYS])
    parser.add_argument("--out", type=Path, help="results file (default bench/results/<date>.md)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run bench/run.sh (or bench/install.sh)")
    settings = Settings(args.seconds, args.rps_rounds, args.warmup_seconds, args.rounds, args.small_block,
                        args.large_block, args.only)
    markdown = run(settings)
    out = args.out or BENCH_DIR / "results" / f"{datetime.date.today().isoformat()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    print(markdown)
    log(f"written to {out}")


if __name__ == "__main__":
    main()
