#!/usr/bin/env bash
# The CustomResourceDefinitions of the kinds the chart renders but does not own, generated from the
# projects' own Go API types with controller-gen (all from the Go module proxy, like
# build-control-plane.sh), so that the chart's ServiceMonitors, PrometheusRules, Certificates and
# Issuers are dry-run applied against their real schemas. Versions: hack/control-plane/crds/go.mod.
# Generated once per machine into ${SPENDGATE_CACHE:-~/.cache/spendgate}/crds/<hash of go.mod>/
# (about a minute and a half cold); prints that directory on stdout.
set -euo pipefail

module_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/control-plane/crds"
cache="${SPENDGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spendgate}/crds"
go_tool="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
target="$cache/$(sha256sum "$module_dir/go.mod" | cut -c1-16)"
# The kinds the chart renders: everything else controller-gen writes is removed.
wanted=(monitoring.coreos.com_servicemonitors monitoring.coreos.com_prometheusrules
        cert-manager.io_certificates cert-manager.io_issuers cert-manager.io_clusterissuers)

if [[ ! -d $target ]]; then
    [[ -x $go_tool ]] || { echo "third-party-crds: Go is needed (looked for '$go_tool'; set GO=)" >&2; exit 1; }
    echo "third-party-crds: generating CRDs with controller-gen (once per machine) ..." >&2
    partial="$target.partial.$$"
    mkdir -p "$partial"
    trap 'rm -rf "$partial"' EXIT
    (cd "$module_dir" && GOTOOLCHAIN=local "$go_tool" tool controller-gen crd \
        paths=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1 \
        paths=github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1 \
        output:crd:dir="$partial/all") >&2
    for name in "${wanted[@]}"; do
        mv "$partial/all/$name.yaml" "$partial/"
    done
    rm -rf "$partial/all"
    mv "$partial" "$target"
    trap - EXIT
fi
echo "$target"
