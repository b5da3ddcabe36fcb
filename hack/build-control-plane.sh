#!/usr/bin/env bash
# Builds the test suite's control plane from the Go module proxy (no Docker, no dl.k8s.io):
# kube-apiserver and kubectl (k8s.io/kubernetes), etcd, helm, and promtool (the chart's alert rules
# are tested with `promtool test rules`), and an OpenTelemetry Collector (otelcol: the OTLP receiver and
# the file exporter, nothing else; the gateway's OTLP export is tested against it). Versions come from
# the go.mod files under hack/control-plane/. Each binary lands in
#   ${SPENDGATE_CACHE:-~/.cache/spendgate}/bin/<component>-<version>/<component>
# and is built only when missing, so only the first run on a machine pays (measured on 2 cores:
# about 5 minutes for all four with empty Go build and module caches, 15 ms when all are cached).
#
# Usage: hack/build-control-plane.sh [component...]   (default: all six)
# Prints one "<component>=<path>" line per component on stdout; progress goes to stderr.
set -euo pipefail

modules_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/control-plane"
bin_cache="${SPENDGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spendgate}/bin"
go_tool="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

die() {
    echo "build-control-plane: $*" >&2
    exit 1
}

# required_version <module dir> <module path>: the version that dir's go.mod requires.
required_version() {
    local version
    version="$(awk -v module="$2" '
        $1 == module && $2 ~ /^v/ { print $2; exit }
        $1 == "require" && $2 == module && $3 ~ /^v/ { print $3; exit }
    ' "$1/go.mod")"
    [[ -n $version ]] || die "$1/go.mod does not require $2"
    echo "$version"
}

# go_build <component> <version> <module dir> <package> <extra ldflags>: builds into the cache
# unless the binary is already there, then prints "<component>=<path>".
go_build() {
    local component=$1 version=$2 module_dir=$3 package=$4 ldflags=$5
    local target="$bin_cache/$component-$version/$component"
    if [[ ! -x $target ]]; then
        [[ -x $go_tool ]] || die "Go is needed to build $component (looked for '$go_tool'; set GO=)"
        mkdir -p "$(dirname "$target")"
        # Build under a temporary name and rename: an interrupted build never looks finished,
        # and concurrent runs cannot see a half-written binary.
        local partial="$target.partial.$$"
        local started=$SECONDS
        echo "build-control-plane: building $component $version (once per machine) ..." >&2
        if ! (cd "$module_dir" && CGO_ENABLED=0 GOTOOLCHAIN=local \
            "$go_tool" build -trimpath -ldflags "-s -w $ldflags" -o "$partial" "$package"); then
            rm -f "$partial"
            die "go build of $component $version failed (go output above)"
        fi
        mv -f "$partial" "$target"
        echo "build-control-plane: built $component in $((SECONDS - started))s" >&2
    fi
    echo "$component=$target"
}

# Kubernetes' own build (hack/lib/version.sh) stamps both packages; without this /version
# reports v0.0.0-master.
kube_ldflags() {
    local version=$1 major minor pkg flags=""
    major="${version#v}" major="${major%%.*}"
    minor="${version#v*.}" minor="${minor%%.*}"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitVersion=$version -X $pkg.gitTreeState=clean"
    done
    echo "$flags"
}

# Helm's Makefile stamps its version and derives the default Kubernetes version of
# `helm template` (.Capabilities.KubeVersion) from the client-go it is built with.
helm_ldflags() {
    local version=$1 client_go minor
    client_go="$(required_version "$modules_dir/helm" k8s.io/client-go)"
    minor="${client_go#v0.}" minor="${minor%%.*}"
    echo "-X helm.sh/helm/v3/internal/version.version=$version" \
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1" \
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
        "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1" \
        "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
}

# Prometheus' Makefile (promu) stamps the version that `promtool --version` prints.
promtool_ldflags() {
    echo "-X github.com/prometheus/common/version.Version=$1"
}

build_component() {
    local version
    case $1 in
    kube-apiserver | kubectl)
        version="$(required_version "$modules_dir/kube" k8s.io/kubernetes)"
        go_build "$1" "$version" "$modules_dir/kube" "k8s.io/kubernetes/cmd/$1" "$(kube_ldflags "$version")"
        ;;
    etcd)
        version="$(required_version "$modules_dir/etcd" go.etcd.io/etcd/server/v3)"
        go_build etcd "$version" "$modules_dir/etcd" . ""
        ;;
    helm)
        version="$(required_version "$modules_dir/helm" helm.sh/helm/v3)"
        go_build helm "$version" "$modules_dir/helm" helm.sh/helm/v3/cmd/helm "$(helm_ldflags "$version")"
        ;;
    promtool)
        # Prometheus v3.x.y is the Go module version v0.3xx.y.
        version="$(required_version "$modules_dir/promtool" github.com/prometheus/prometheus)"
        go_build promtool "$version" "$modules_dir/promtool" github.com/prometheus/prometheus/cmd/promtool \
            "$(promtool_ldflags "$version")"
        ;;
    otelcol)
        # The sources are what the collector's builder generates from builder-config.yaml (the
        # smallest distribution it makes); after changing a version there, regenerate them with
        #   cd hack/control-plane/otelcol && go run go.opentelemetry.io/collector/cmd/builder@<version> \
        #       --config builder-config.yaml --skip-compilation
        version="$(required_version "$modules_dir/otelcol" go.opentelemetry.io/collector/otelcol)"
        go_build otelcol "$version" "$modules_dir/otelcol" . ""
        ;;
    *)
        die "unknown component '$1' (known: kube-apiserver kubectl etcd helm promtool otelcol)"
        ;;
    esac
}

main() {
    local components=("$@")
    if ((${#components[@]} == 0)); then
        components=(kube-apiserver kubectl etcd helm promtool otelcol)
    fi
    local component
    for component in "${components[@]}"; do
        build_component "$component"
    done
}

main "$@"
