#!/usr/bin/env bash
# `make run`: the gateway in standalone mode on examples/policies, no cluster needed.
# With ANTHROPIC_API_KEY set it forwards to api.anthropic.com; without, it starts the built-in
# Anthropic-wire mock upstream so everything works offline. State (keys, ledger, journal) in var/.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
port=${PORT:-8787}
admin_port=${ADMIN_PORT:-8788}
mock_port=${MOCK_PORT:-8790}
mkdir -p var

if [ ! -s var/keys.json ]; then
  key=$($bin/spendgate keys create --developer alice --cost-center platform --name alice-quickstart \
        --keys-file var/keys.json 2>/dev/null)
  echo "$key" > var/alice.key
  chmod 600 var/alice.key
fi

upstream=https://api.anthropic.com
if [ -z "${ANTHROPIC_API_KEY:-}" ]; then
  echo "No ANTHROPIC_API_KEY: using the built-in mock upstream on 127.0.0.1:$mock_port (set the key to go live)."
  $bin/python -m spendgate.testing.upstream --port "$mock_port" >var/mock-upstream.log 2>&1 &
  mock=$!
  trap 'kill $mock 2>/dev/null' EXIT
  export ANTHROPIC_API_KEY=mock-upstream-key
  upstream=http://127.0.0.1:$mock_port
fi

cat <<TXT
spendgate gateway on http://127.0.0.1:$port (admin, metrics: http://127.0.0.1:$admin_port/metrics)
Policies: examples/policies   Ledger: var/ledger.jsonl   Alice's virtual key: var/alice.key

Try it:
  curl -s http://127.0.0.1:$port/v1/messages -H "x-api-key: \$(cat var/alice.key)" \\
       -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \\
       -d '{"model":"claude-opus-5-5","max_tokens":256,"messages":[{"role":"user","content":"hi"}]}'
Claude Code:
  ANTHROPIC_BASE_URL=http://127.0.0.1:$port ANTHROPIC_API_KEY=\$(cat var/alice.key) claude
TXT

exec_args=(proxy --policies examples/policies --keys-file var/keys.json --upstream "$upstream"
           --port "$port" --admin-port "$admin_port" --ledger var/ledger.jsonl --state-dir var/state)
$bin/spendgate "${exec_args[@]}"
