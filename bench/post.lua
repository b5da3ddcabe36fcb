-- wrk script: POST the body file in $BENCH_BODY with the headers a Claude Code client sends;
-- at the end print one machine-readable line for bench/run.py.
local file = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/messages?beta=true"
wrk.body = file:read("*a")
file:close()
wrk.headers["content-type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = os.getenv("BENCH_API_KEY") or "sk-bench"
wrk.headers["x-claude-code-session-id"] = "54c1eb09-7f0e-4c2a-9a51-3d2f5b8e6a10"
wrk.headers["user-agent"] = "claude-cli/2.1.300 (external, cli)"

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH_RESULT requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d " ..
      "p50_us=%d p99_us=%d\n",
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99)))
end
