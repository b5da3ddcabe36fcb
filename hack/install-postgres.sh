#!/usr/bin/env bash
# Install the PostgreSQL server binaries from Debian's package, only when missing.
#
# The ledger store tests start a throwaway server of their own (initdb into a temporary
# directory, loopback only, as an unprivileged user: tests/database/postgres.py); nothing here
# creates or starts a cluster (the package may set up its own system cluster; the tests never use it). Prints the
# directory holding initdb, pg_ctl and postgres on stdout; progress goes to stderr.
#
#   hack/install-postgres.sh
set -euo pipefail

# The newest server version installed, e.g. /usr/lib/postgresql/15/bin.
server_bindir() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

if bindir="$(server_bindir)"; then
    echo "$bindir"
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-postgres: run as root or install sudo" >&2; exit 1; }
    sudo=(sudo)
fi
echo "install-postgres: installing Debian's postgresql package (one time)" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >&2
"${sudo[@]}" apt-get install -y -qq --no-install-recommends postgresql >&2
bindir="$(server_bindir)" || { echo "install-postgres: postgresql installed but no initdb found" >&2; exit 1; }
echo "$bindir"
