"""The benchmark's markdown: the table, the targets as ratios from the same run, details, caveats."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from machine import QUIET_PERCENT


@dataclass
class WrkResult:
    rps: float
    requests: int
    duration_s: float
    errors: int
    error_detail: str
    p50_ms: float
    p99_ms: float
    busy_percent: dict[str, float] = field(default_factory=dict)
    foreign_percent: float = 0.0
    round_rps: list[float] = field(default_factory=list)


def combine(runs: list[WrkResult]) -> WrkResult:
    """Several wrk rounds as one figure: total requests over total time; latency and load as medians/means."""
    duration = sum(run.duration_s for run in runs)
    cores = sorted({core for run in runs for core in run.busy_percent})
    return WrkResult(
        rps=sum(run.requests for run in runs) / duration, requests=sum(run.requests for run in runs),
        duration_s=duration, errors=sum(run.errors for run in runs),
        error_detail="; ".join(run.error_detail for run in runs if run.error_detail),
        p50_ms=statistics.median(run.p50_ms for run in runs), p99_ms=statistics.median(run.p99_ms for run in runs),
        busy_percent={core: statistics.fmean(run.busy_percent.get(core, 0.0) for run in runs) for core in cores},
        foreign_percent=max(run.foreign_percent for run in runs), round_rps=[run.rps for run in runs])


@dataclass
class RowView:
    name: str
    label: str
    failure: str | None = None
    ready_s: float | None = None
    rps: dict[str, WrkResult] = field(default_factory=dict)
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    rss_bytes: int | None = None

    def errors(self) -> int:
        return sum(r.errors for r in self.rps.values()) + sum(int(s["errors"]) for s in self.latency.values())

    def ok(self) -> bool:
        return self.failure is None and self.errors() == 0


@dataclass
class Inputs:
    date: str
    rows: list[RowView]
    ceiling: RowView
    direct: dict[str, dict[str, Any]]
    compile: dict[str, Any]
    environment: dict[str, str]
    settings: dict[str, Any]


# Targets for spendgate (DESIGN.md section 4).
TARGET_RPS_VS_BARE = 0.8
TARGET_RPS_VS_LITELLM = 30.0
TARGET_STREAM_VS_BARE = 0.9
TARGET_ADDED_SMALL_MS = 0.3
TARGET_ADDED_LARGE_MS = 0.5
TARGET_RSS_MB = 80.0
TARGET_READY_S = 1.0
TARGET_COMPILE_S = 1.0


def _rps(row: RowView, mode: str) -> str:
    result = row.rps.get(mode)
    return "—" if result is None else f"{result.rps:,.0f}"


def added(row: RowView, direct: dict[str, dict[str, Any]], size: str, key: str) -> float | None:
    mine, base = row.latency.get(size, {}).get(key), direct.get(size, {}).get(key)
    return None if mine is None or base is None else float(mine) - float(base)


def _added_cell(row: RowView, direct: dict[str, dict[str, Any]], size: str) -> str:
    p50, p99 = added(row, direct, size, "p50_ms"), added(row, direct, size, "p99_ms")
    if p50 is None or p99 is None:
        return "—"
    return f"{p50:.2f} ms / {p99:.2f} ms"


def _rss(row: RowView) -> str:
    return "—" if row.rss_bytes is None else f"{row.rss_bytes / 2**20:.0f} MB"


def _ready(row: RowView) -> str:
    return "—" if row.ready_s is None else f"{row.ready_s:.2f} s"


def _errors_cell(row: RowView) -> str:
    count = row.errors()
    return "0" if count == 0 else f"**{count:,}** (not a result)"


def main_table(inputs: Inputs) -> list[str]:
    lines = ["| gateway, one core | RPS non-stream (16 conns) | RPS stream (16 conns) | added p50 / p99, 2 KB body "
             "(1 conn) | added p50 / p99, 400 KB body (1 conn) | RSS | ready | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for row in inputs.rows:
        if row.failure and not row.rps:
            lines.append(f"| {row.label} | not measured: {_one_line(row.failure)} | | | | | | |")
            continue
        lines.append(f"| {row.label} | {_rps(row, 'non-stream')} | {_rps(row, 'stream')} | "
                     f"{_added_cell(row, inputs.direct, 'small')} | {_added_cell(row, inputs.direct, 'large')} | "
                     f"{_rss(row)} | {_ready(row)} | {_errors_cell(row)} |")
    ceiling = inputs.ceiling
    lines.append(f"| {ceiling.label} | {_rps(ceiling, 'non-stream')} | {_rps(ceiling, 'stream')} | "
                 f"(direct p50 {_direct(inputs, 'small')}) | (direct p50 {_direct(inputs, 'large')}) | | | "
                 f"{_errors_cell(ceiling)} |")
    return lines


def _direct(inputs: Inputs, size: str) -> str:
    value = inputs.direct.get(size, {}).get("p50_ms")
    return "—" if value is None else f"{value:.3f} ms"


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "/")[:300]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _check(value: float | None, target: float, at_least: bool, unit: str, fmt: str = "{:.2f}") -> tuple[str, str]:
    if value is None:
        return "not measured", "—"
    passed = value >= target if at_least else value <= target
    return fmt.format(value) + unit, "pass" if passed else "**FAIL**"


def targets_table(inputs: Inputs) -> list[str]:
    rows = {row.name: row for row in inputs.rows}
    sg, bare, litellm = rows.get("spendgate"), rows.get("bare"), rows.get("litellm")
    if sg is None or sg.failure is not None:
        return ["spendgate was not measured in this run, so the targets were not checked."]

    def rps(row: RowView | None, mode: str) -> float | None:
        return row.rps[mode].rps if row is not None and mode in row.rps and row.ok() else None

    compile_s = inputs.compile.get("compile_median_s")
    checks = [
        ("non-stream RPS vs bare passthrough", f">= {TARGET_RPS_VS_BARE}x",
         _check(_ratio(rps(sg, "non-stream"), rps(bare, "non-stream")), TARGET_RPS_VS_BARE, True, "x")),
        ("non-stream RPS vs LiteLLM", f">= {TARGET_RPS_VS_LITELLM:.0f}x",
         _check(_ratio(rps(sg, "non-stream"), rps(litellm, "non-stream")), TARGET_RPS_VS_LITELLM, True, "x",
                "{:.1f}")),
        ("stream RPS vs bare passthrough", f">= {TARGET_STREAM_VS_BARE}x",
         _check(_ratio(rps(sg, "stream"), rps(bare, "stream")), TARGET_STREAM_VS_BARE, True, "x")),
        ("added p50, 2 KB body", f"<= {TARGET_ADDED_SMALL_MS} ms",
         _check(added(sg, inputs.direct, "small", "p50_ms"), TARGET_ADDED_SMALL_MS, False, " ms")),
        ("added p50, 400 KB body", f"<= {TARGET_ADDED_LARGE_MS} ms",
         _check(added(sg, inputs.direct, "large", "p50_ms"), TARGET_ADDED_LARGE_MS, False, " ms")),
        ("RSS after load", f"<= {TARGET_RSS_MB:.0f} MB",
         _check(None if sg.rss_bytes is None else sg.rss_bytes / 2**20, TARGET_RSS_MB, False, " MB", "{:.1f}")),
        ("ready (spawn to first 200)", f"<= {TARGET_READY_S:.0f} s", _check(sg.ready_s, TARGET_READY_S, False, " s")),
        ("policy compile, 1,000 Budgets / 50 cost centers", f"< {TARGET_COMPILE_S:.0f} s",
         _check(compile_s, TARGET_COMPILE_S, False, " s", "{:.3f}")),
    ]
    lines = ["| spendgate target | target | measured | result |", "|---|---|---|---|"]
    lines += [f"| {name} | {target} | {measured} | {verdict} |" for name, target, (measured, verdict) in checks]
    if not sg.ok():
        lines.append("")
        lines.append(f"spendgate had {sg.errors():,} failed requests: its figures are not a result.")
    return lines


def variants_table(inputs: Inputs) -> list[str]:
    """spendgate with an option on (rows named spendgate-<option>) against spendgate, as ratios from this run."""
    rows = {row.name: row for row in inputs.rows}
    plain = rows.get("spendgate")
    variants = [row for row in inputs.rows if row.name.startswith("spendgate-") and row.rps]
    if plain is None or not plain.rps or not variants:
        return []
    lines = ["| spendgate with | RPS non-stream vs spendgate | RPS stream vs spendgate | added p50, 2 KB: spendgate "
             "-> with it | added p50, 400 KB | RSS |", "|---|---|---|---|---|---|"]
    for row in variants:
        ratios = [_ratio(*(r.rps[mode].rps if mode in r.rps else None for r in (row, plain)))
                  for mode in ("non-stream", "stream")]
        cells = ["—" if ratio is None else f"{ratio:.2f}x" for ratio in ratios]
        latency = [" -> ".join(_ms(added(r, inputs.direct, size, "p50_ms")) for r in (plain, row))
                   for size in ("small", "large")]
        lines.append(f"| {row.label} | {cells[0]} | {cells[1]} | {latency[0]} | {latency[1]} | {_rss(row)} |")
    return lines


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def details(inputs: Inputs) -> list[str]:
    lines = ["| target | p50 / p99, 2 KB (1 conn) | p50 / p99, 400 KB (1 conn) | samples | wrk p50 / p99 non-stream "
             "(16 conns) | wrk p50 / p99 stream | RPS per round, non-stream; stream | core 0 / core 1 busy during wrk, "
             "non-stream; stream | other processes, % of a core: wrk; latency | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    direct_row = RowView("direct", "mock upstream, direct", latency=inputs.direct, rps=inputs.ceiling.rps)
    for row in [*inputs.rows, direct_row]:
        if row.failure and not row.rps:
            continue
        latency = [_pair(row.latency.get(size, {}).get("p50_ms"), row.latency.get(size, {}).get("p99_ms"))
                   for size in ("small", "large")]
        samples = "/".join(str(row.latency.get(size, {}).get("n", 0)) for size in ("small", "large"))
        wrk = [_pair(row.rps[m].p50_ms, row.rps[m].p99_ms) if m in row.rps else "—" for m in ("non-stream", "stream")]
        busy = "; ".join(_busy(row.rps[m]) for m in ("non-stream", "stream") if m in row.rps) or "—"
        rounds = "; ".join(", ".join(f"{rps:,.0f}" for rps in row.rps[m].round_rps)
                           for m in ("non-stream", "stream") if m in row.rps) or "—"
        lines.append(f"| {row.label} | {latency[0]} | {latency[1]} | {samples} | {wrk[0]} | {wrk[1]} | {rounds} | "
                     f"{busy} | {_foreign(row)} | {_error_detail(row)} |")
    return lines


def _foreign(row: RowView) -> str:
    wrk = max((result.foreign_percent for result in row.rps.values()), default=None)
    latency = [summary.get("foreign_percent") for summary in row.latency.values()]
    parts = ["—" if wrk is None else f"{wrk:.0f}",
             ", ".join(f"{value:.0f}" for value in latency if value is not None) or "—"]
    return "; ".join(parts)


def max_foreign(inputs: Inputs) -> float:
    """The most CPU other processes took during any kept measurement, in percent of one core."""
    values = [result.foreign_percent for row in [*inputs.rows, inputs.ceiling] for result in row.rps.values()]
    values += [float(summary.get("foreign_percent", 0.0)) for summary in inputs.direct.values()]
    return max(values, default=0.0)


def _busy(result: WrkResult) -> str:
    return " / ".join(f"{result.busy_percent.get(core, 0):.0f}%" for core in ("0", "1"))


def _pair(p50: float | None, p99: float | None) -> str:
    return "—" if p50 is None or p99 is None else f"{p50:.3f} / {p99:.3f} ms"


def _error_detail(row: RowView) -> str:
    parts = [f"wrk {mode}: {result.error_detail}" for mode, result in row.rps.items() if result.errors]
    for size, summary in row.latency.items():
        if summary.get("errors"):
            parts.append(f"latency {size}: {summary['errors']} ({summary.get('statuses') or ''} "
                         f"{summary.get('last_error') or ''})".strip())
    if row.failure:
        parts.append(_one_line(row.failure))
    return _one_line("; ".join(parts)) if parts else "0"


def compile_section(result: dict[str, Any]) -> list[str]:
    if "failure" in result:
        return [f"Policy compiler benchmark failed: {_one_line(str(result['failure']))}"]
    runs = ", ".join(f"{s * 1000:.1f}" for s in result["compile_s"])
    return [f"`compile_policies` on {result['budgets']:,} Budgets, {result['cost_centers']} cost centers, "
            f"{result['keys']} virtual keys (objects built once in {result['build_objects_s'] * 1000:.0f} ms): "
            f"median **{result['compile_median_s'] * 1000:.1f} ms** per compile, min "
            f"{result['compile_min_s'] * 1000:.1f} ms (runs: {runs} ms); {len(result['errors'])} policy errors."]


NOTES = [
    "Added latency = p50 (p99) through the gateway minus p50 (p99) straight to the mock, measured by one "
    "sequential client (blocking socket + httptools, one keep-alive connection per target) on core 1, in "
    "interleaved rounds: each round gives every target a block of requests, the order rotated round by round, "
    "each block after a 50 ms pause and 5 unrecorded requests (so that work a gateway does after answering, "
    "e.g. LiteLLM's background logging, is not charged to the next target); non-streaming requests.",
    "RPS: wrk -t1 -c16 on core 1, POST of the 2 KB body (with `\"stream\": true` for the stream column), after "
    "a 2 s warm-up, in interleaved rounds (all gateways and the direct ceiling, order rotated each round); the "
    "figure is all rounds' requests over their total time; the gateway alone on core 0. Whenever one gateway "
    "is started or measured (throughput and latency alike), the others are frozen with SIGSTOP, so their "
    "timers and background work stay off its core.",
    "The mock writes each SSE event separately (17 events), as a real upstream does, so the stream column is "
    "partly bound by the mock and wrk sharing core 1 (see the direct row's ceiling and core 1's load in the "
    "details): compare stream figures as ratios only; near the ceiling they understate a gateway's own cost.",
    "RSS: VmRSS of the gateway process and its children, after all the load. Ready: from spawn to the first 200 "
    "on POST /v1/messages through the gateway (polled every 5 ms), on the second start (the first warms the page "
    "cache and writes byte code to the bench's PYTHONPYCACHEPREFIX), as a restarted pod would.",
    "Other load: the CPU time of every process outside the benchmark's tree (kernel threads aside) is read "
    "around each measurement; a wrk run during which others took 10% of a core or more is repeated (up to "
    "twice) after the machine has been quiet for a second; the latency phases start on a quiet machine.",
    "The mock reports small token counts so that the example budgets (alice-daily, $40) stay below their "
    "thresholds for the whole run; the pricing and ledger work per request is the same as for large counts.",
]


def render(inputs: Inputs) -> str:
    env = inputs.environment
    failed = [row.name for row in inputs.rows if not row.ok() and row.rps]
    missing = [row.name for row in inputs.rows if not row.rps]
    lines = [f"# Gateway benchmark, {inputs.date}", "",
             f"Machine: {env['cpu']}, Linux {env['kernel']}; Python {env['python']}; {env['wrk']}; "
             f"spendgate at `{env['commit']}`. Gateways pinned to core 0; mock upstream, wrk and the latency "
             "client on core 1.", ""]
    if failed or missing:
        problems = [f"{', '.join(failed)} had errors or failed mid-run"] if failed else []
        problems += [f"{', '.join(missing)} not measured"] if missing else []
        lines += [f"**Not a complete result: {'; '.join(problems)} (see the table).**", ""]
    disturbed = max_foreign(inputs)
    if disturbed >= QUIET_PERCENT:
        lines += [f"**Other processes on the machine used up to {disturbed:.0f}% of a core during a measurement "
                  "(after retries): the figures are disturbed, compare them with care (details below).**", ""]
    lines += main_table(inputs)
    lines += ["", "## Targets (ratios from this run)", ""]
    lines += targets_table(inputs)
    variants = variants_table(inputs)
    if variants:
        lines += ["", "## spendgate's options on (ratios from this run)", "", *variants]
    lines += ["", "## Policy compiler", ""]
    lines += compile_section(inputs.compile)
    lines += ["", "## Details", ""]
    lines += details(inputs)
    lines += ["", "## How it was measured", ""]
    lines += [f"- {note}" for note in NOTES]
    settings = inputs.settings
    lines += [f"- Settings: wrk {settings['seconds']:g} s per figure in {settings['rps_rounds']} rounds; latency "
              f"{settings['rounds']} rounds of {settings['small_block']} (2 KB) and {settings['large_block']} "
              "(400 KB) requests per target.", ""]
    return "\n".join(lines)
