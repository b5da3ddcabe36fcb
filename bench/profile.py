"""Where a gateway's time goes: py-spy samples it under wrk load; prints the heaviest functions.

The layout is the benchmark's (gateway on core 0; mock upstream, wrk and py-spy on core 1). py-spy
is installed on first use into its own virtualenv under the bench cache directory.

    python bench/profile.py spendgate                 # 2 KB non-streaming, 16 connections
    python bench/profile.py spendgate --stream
    python bench/profile.py spendgate --body large --connections 1
    python bench/profile.py bare --seconds 20 --top 40

The raw collapsed stacks are kept (default: ~/.cache/spendgate/bench/profiles/, or --out) for a
flame graph (e.g. speedscope or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import run  # noqa: E402

PY_SPY_VERSION = "0.4.3"


def py_spy() -> Path:
    venv = run.cache_dir() / "profiling"
    executable = venv / "bin" / "py-spy"
    if not executable.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", f"py-spy=={PY_SPY_VERSION}"], check=True)
    return executable


def frame_name(frame: str) -> str:
    """`function (path/to/file.py:12)` -> `function (file.py)`, so all lines of a function add up."""
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{name} ({module})" if module else name


# Where a sample's time is charged: the first frame from the leaf up that matches (file part, function
# prefix or ""), so that e.g. orjson inside pricing counts as pricing and aiohttp's own code as aiohttp.
CATEGORIES: list[tuple[str, str, str]] = [
    ("price (spendgate.logic.pricing)", "pricing.py", ""),
    ("price (genai-prices)", "genai_prices/", ""),
    ("ledger line (record, write, flush)", "proxy/ledger.py", ""),
    ("metrics", "proxy/metrics.py", ""),
    ("metrics", "proxy/settle.py", "Settler._count"),
    ("settle, other (spend sink, Spend)", "proxy/settle.py", ""),
    ("SSE usage scan", "proxy/sse.py", ""),
    ("admission", "proxy/admission.py", ""),
    ("enforcement: admission (proxy/enforce.py)", "proxy/enforce.py", ""),
    ("enforcement: decide, budgets_for (enforcement.py)", "enforcement.py", ""),
    ("enforcement: spend tracker, journal", "tracker.py", ""),
    ("enforcement: spend tracker, journal", "journal.py", ""),
    ("enforcement: windows, spend arithmetic", "windows.py", ""),
    ("enforcement: windows, spend arithmetic", "spend.py", ""),
    ("key hash + identity", "proxy/attribution.py", "identify"),
    ("attribution (tags, session)", "proxy/attribution.py", ""),
    ("request JSON parse (parse_body)", "proxy/gateway.py", "parse_body"),
    ("response JSON parse (read_message)", "proxy/gateway.py", "read_message"),
    ("header filtering (read_headers, response_headers)", "proxy/gateway.py", "read_headers"),
    ("header filtering (read_headers, response_headers)", "proxy/gateway.py", "response_headers"),
    ("header filtering (read_headers, response_headers)", "proxy/gateway.py", "encoded"),
    ("Exchange record (dataclass)", "proxy/exchange.py", ""),
    ("upstream client: aiohttp", "aiohttp/", ""),
    ("upstream client: spendgate glue (Upstream.open)", "proxy/upstream.py", ""),
    ("ASGI server: uvicorn", "uvicorn/", ""),
    ("gateway glue (Gateway.*)", "proxy/gateway.py", ""),
    ("bare passthrough glue", "bare_passthrough.py", ""),
    ("datetime / perf_counter", "", "datetime"),
]


def category(frames: list[str]) -> str:
    if frames and frames[-1].startswith("Runner.run ("):  # the loop's own C code (uvloop): polling, syscalls
        return "event loop, C code, syscalls (uvloop)"
    for frame in reversed(frames):
        function, _, where = frame.partition(" (")
        for label, path_part, function_prefix in CATEGORIES:
            if path_part and path_part not in where:
                continue
            if function_prefix and not function.startswith(function_prefix):
                continue
            return label
    return f"other ({frames[-1].partition(' (')[0] if frames else ''})"


def categories(collapsed: Path) -> str:
    shares: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            shares[category(stack.split(";"))] += int(count_text)
            total += int(count_text)
    lines = ["share  where (first matching frame from the leaf up)"]
    lines += [f"{100 * count / total:5.1f}  {label}" for label, count in shares.most_common()]
    return "\n".join(lines)


def summarize(collapsed: Path, top: int) -> str:
    """Self and inclusive sample shares per function, from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if total == 0:
        return "no samples"
    lines = [f"{total} samples", "", "self %  function"]
    lines += [f"{100 * count / total:6.1f}  {name}" for name, count in own.most_common(top)]
    lines += ["", "incl %  function"]
    lines += [f"{100 * count / total:6.1f}  {name}" for name, count in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gateway", choices=[gateway.name for gateway in run.GATEWAYS])
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--body", choices=["small", "large"], default="small")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="include C frames (py-spy pauses the process)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, help="keep the collapsed stacks here")
    args = parser.parse_args()

    spy = py_spy()
    workdir = Path(tempfile.mkdtemp(prefix="spendgate-profile-"))
    body_file = workdir / "body.json"
    body_file.write_bytes(run.bodies.large_body(args.stream) if args.body == "large"
                          else run.bodies.small_body(args.stream))
    mock = run.start_mock(workdir)
    gateway = next(g for g in run.GATEWAYS if g.name == args.gateway)
    service = gateway.prepare(workdir, f"http://{run.HOST}:{mock.port}", run.free_port())
    try:
        spawned = service.start(workdir)
        run.wait_ready(service, spawned, run.bodies.small_body(), gateway.ready_limit_s)
        run.run_wrk(service.target(), body_file, 2.0, args.connections)  # warm-up
        mode = f"{'stream' if args.stream else 'non-stream'}-{args.body}-c{args.connections}"
        collapsed = args.out or run.cache_dir() / "profiles" / f"{args.gateway}-{mode}.txt"
        collapsed.parent.mkdir(parents=True, exist_ok=True)
        assert service.process is not None
        flags = ["--native"] if args.native else ["--nonblocking"]
        spy_run = subprocess.Popen(["taskset", "-c", run.LOAD_CPU, str(spy), "record", "--pid",
                                    str(service.process.pid), "--rate", str(args.rate), "--duration",
                                    f"{args.seconds:g}", "--format", "raw", "--output", str(collapsed), *flags],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        result = run.run_wrk(service.target(), body_file, args.seconds, args.connections)
        _, spy_errors = spy_run.communicate(timeout=args.seconds + 60)
        print(f"{args.gateway}: {result.rps:,.0f} RPS under the profiler ({result.errors} errors), wrk p50 "
              f"{result.p50_ms:.3f} ms; core 0 busy {result.busy_percent.get('0', 0):.0f}%")
        if collapsed.exists():
            print(categories(collapsed), "", summarize(collapsed, args.top), sep="\n")
        else:
            print(spy_errors.decode(errors="replace"))
        print(f"\ncollapsed stacks: {collapsed}")
    finally:
        service.stop()
        mock.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
