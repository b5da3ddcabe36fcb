#!/usr/bin/env bash
# Install the real Claude Code CLI (npm @anthropic-ai/claude-code), pinned, only when missing.
#
# The proxy's end-to-end test runs it as a client (`claude -p` with ANTHROPIC_BASE_URL at the
# gateway, and interactively in tmux, which this installs with apt-get when it is missing). It
# goes into its own prefix under the cache, so nothing global changes and every run of the suite
# reuses it. Prints the path of the `claude` executable on stdout.
#
#   hack/install-claude-code.sh                 # the pinned version
#   CLAUDE_CODE_VERSION=2.1.330 hack/install-claude-code.sh
set -euo pipefail

# DESIGN.md's measurements were made with this version; bump it deliberately, not implicitly.
VERSION="${CLAUDE_CODE_VERSION:-2.1.328}"
CACHE_DIR="${SPENDGATE_CACHE:-$HOME/.cache/spendgate}"
PREFIX="$CACHE_DIR/claude-code-$VERSION"
CLAUDE="$PREFIX/node_modules/.bin/claude"

# The interactive tests (the status line, the in-client budget warning) drive the CLI in tmux.
if ! command -v tmux >/dev/null 2>&1; then
    echo "installing tmux (apt-get)" >&2
    if ! apt-get install -y tmux >/dev/null 2>&1; then
        apt-get update >/dev/null
        apt-get install -y tmux >/dev/null
    fi
fi

if [ -x "$CLAUDE" ] && [ -f "$PREFIX/.complete" ]; then
    echo "$CLAUDE"
    exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "error: npm is needed to install Claude Code" >&2; exit 1; }
echo "installing @anthropic-ai/claude-code@$VERSION into $PREFIX (one time)" >&2
rm -rf "$PREFIX"
mkdir -p "$PREFIX"
# A throwaway package.json keeps npm from walking up to an unrelated project.
echo '{"name":"spendgate-claude-code","private":true}' > "$PREFIX/package.json"
npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@$VERSION" >&2
"$CLAUDE" --version >&2
touch "$PREFIX/.complete"
echo "$CLAUDE"
