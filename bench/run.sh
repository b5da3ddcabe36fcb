#!/usr/bin/env bash
# The gateway benchmark in one command: installs what is missing (wrk, LiteLLM in its own venv,
# a venv with spendgate when no Python here has it), runs everything, prints the markdown table
# and writes it to bench/results/<date>.md. Options go to bench/run.py (--help).
#
#   bench/run.sh
#   BENCH_PYTHON=/path/to/venv/bin/python bench/run.sh --only bare spendgate
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$BENCH_DIR")"
CACHE_DIR="${SPENDGATE_BENCH_CACHE:-$HOME/.cache/spendgate/bench}"
NEEDED="import spendgate.cli, aiohttp, uvicorn, uvloop, httptools, yaml"

has_project() {
    [ -n "$1" ] && [ -x "$1" ] && "$1" -c "$NEEDED" >/dev/null 2>&1
}

pick_python() {
    local candidate
    for candidate in "${BENCH_PYTHON:-}" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" "$REPO/.venv/bin/python" \
                     "$(command -v python3 || true)"; do
        if has_project "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    local venv="$CACHE_DIR/venv"
    if ! has_project "$venv/bin/python"; then
        echo "installing spendgate (editable) into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --upgrade pip
        "$venv/bin/pip" install --quiet -e "$REPO"
    fi
    echo "$venv/bin/python"
}

bash "$BENCH_DIR/install.sh"
PYTHON="$(pick_python)"
echo "using $PYTHON" >&2
exec "$PYTHON" "$BENCH_DIR/run.py" "$@"
