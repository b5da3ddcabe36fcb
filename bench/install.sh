#!/usr/bin/env bash
# Install what the benchmark needs, only when missing: wrk (apt), LiteLLM in its own virtualenv.
set -euo pipefail

LITELLM_VERSION="${LITELLM_VERSION:-1.100.5}"
CACHE_DIR="${SPENDGATE_BENCH_CACHE:-$HOME/.cache/spendgate/bench}"
LITELLM_VENV="$CACHE_DIR/litellm-$LITELLM_VERSION"
PYTHON="${BENCH_PYTHON:-python3}"

install_wrk() {
    command -v wrk >/dev/null 2>&1 && return 0
    echo "installing wrk (apt-get)" >&2
    if ! apt-get install -y wrk >/dev/null 2>&1; then
        apt-get update >/dev/null
        apt-get install -y wrk >/dev/null
    fi
}

install_litellm() {
    if [ -x "$LITELLM_VENV/bin/litellm" ] && [ -f "$LITELLM_VENV/.complete" ]; then
        return 0
    fi
    echo "installing litellm[proxy]==$LITELLM_VERSION into $LITELLM_VENV (one time, a few minutes)" >&2
    rm -rf "$LITELLM_VENV"
    mkdir -p "$CACHE_DIR"
    "$PYTHON" -m venv "$LITELLM_VENV"
    "$LITELLM_VENV/bin/pip" install --quiet --upgrade pip
    "$LITELLM_VENV/bin/pip" install --quiet "litellm[proxy]==$LITELLM_VERSION"
    touch "$LITELLM_VENV/.complete"
}

install_wrk
install_litellm
