#!/usr/bin/env bash
# A local cluster for people with Docker (`make kind-up`): kind, the image built and loaded, the
# chart with sidecar injection, the example policies, a virtual key, a dev pod with the sidecar, and
# the commands to point Claude Code at it. Without ANTHROPIC_API_KEY an Anthropic-wire mock upstream
# runs in the cluster, so it all works offline. The test suite never needs this (it runs its own
# kube-apiserver); .github/workflows/kind.yaml runs it on a host with Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=${KIND_CLUSTER:-spendgate}
image=${IMAGE:-spendgate:dev}
system=spendgate-system   # the operator, the shared gateway, the injector
policies=ai-budgets       # examples/policies
dev=spendgate-dev         # sidecar namespace: labelled spendgate.io/inject=enabled
python=${PYTHON:-.venv/bin/python}

need() { command -v "$1" >/dev/null || { echo "kind-up: $1 is not installed: $2" >&2; exit 1; }; }
need docker "https://docs.docker.com/engine/install/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/"
need kubectl "https://kubernetes.io/docs/tasks/tools/ (or make control-plane: ~/.cache/spendgate/bin)"
need helm "https://helm.sh/docs/intro/install/ (or make control-plane: ~/.cache/spendgate/bin)"
[[ -x $python ]] || { echo "kind-up: $python is missing: run make setup first" >&2; exit 1; }
step() { echo "==> $*"; }

step "kind cluster $cluster"
kind get clusters 2>/dev/null | grep -qx "$cluster" || kind create cluster --name "$cluster" --wait 120s
kubectl config use-context "kind-$cluster" >/dev/null

step "image $image"
docker build --quiet -t "$image" . >/dev/null
kind load docker-image "$image" --name "$cluster" >/dev/null

step "namespaces $system, $policies, $dev (labelled for injection)"
for namespace in "$system" "$dev"; do
  kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done
kubectl apply -f examples/policies/00-namespace.yaml >/dev/null
kubectl label namespace "$dev" spendgate.io/inject=enabled --overwrite >/dev/null

upstream=https://api.anthropic.com
upstream_key=${ANTHROPIC_API_KEY:-}
if [[ -z $upstream_key ]]; then
  step "no ANTHROPIC_API_KEY: a mock Anthropic upstream in the cluster (set the key to go live)"
  sed "s|image: spendgate:dev|image: $image|" examples/kind/mock-upstream.yaml | kubectl apply -f - >/dev/null
  kubectl -n "$system" rollout status deploy/mock-anthropic --timeout=120s >/dev/null
  upstream=http://mock-anthropic.$system.svc
  upstream_key=mock-upstream-key
fi
step "the organisation's key, in $system (shared gateway) and $dev (sidecars only)"
for namespace in "$system" "$dev"; do
  kubectl -n "$namespace" create secret generic anthropic-upstream-key --from-literal=api-key="$upstream_key" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done

step "chart (operator, shared gateway, sidecar injector)"
helm upgrade --install spendgate charts/spendgate --namespace "$system" --wait --timeout 5m \
  --set image.repository="${image%:*}" --set image.tag="${image#*:}" --set image.pullPolicy=Never \
  --set gateway.upstream="$upstream" --set gateway.replicas=1 \
  --set "operator.policyNamespaces={$policies}" --set "operator.bundleNamespaces={$dev}" \
  --set injector.enabled=true --set injector.replicas=1 >/dev/null

step "example policies (examples/policies)"
kubectl apply -f examples/policies/ >/dev/null

step "a virtual key for alice (var/kind-alice.key)"
mkdir -p var
if [[ ! -s var/kind-alice.key ]]; then
  "$python" -c 'from spendgate.adapters.keysfile import new_key; print(new_key())' > var/kind-alice.key
  chmod 600 var/kind-alice.key
fi
key=$(cat var/kind-alice.key)
# The operator reads keys in its namespace (by label); the dev pod reads the same key from its own.
kubectl -n "$system" create secret generic alice-kind --from-literal=key="$key" \
  --from-literal=developer=alice --from-literal=costCenter=platform --dry-run=client -o yaml |
  kubectl label --local -f - spendgate.io/virtual-key=true -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$dev" create secret generic alice-devpod --from-literal=key="$key" --dry-run=client -o yaml |
  kubectl apply -f - >/dev/null

step "a dev pod with the sidecar (examples/kind/devpod.yaml)"
for _ in $(seq 60); do  # the operator writes the bundle ConfigMap into each sidecar namespace
  kubectl -n "$dev" get configmap spendgate-bundle >/dev/null 2>&1 && break
  sleep 2
done
kubectl apply -f examples/kind/devpod.yaml >/dev/null
kubectl -n "$dev" wait --for=condition=Ready pod/devpod --timeout=300s >/dev/null
echo "    containers: $(kubectl -n "$dev" get pod devpod \
  -o jsonpath='{range .spec.initContainers[*]}{.name} (native sidecar) {end}{range .spec.containers[*]}{.name}{end}')"
echo "    ANTHROPIC_BASE_URL in dev: $(kubectl -n "$dev" exec devpod -c dev -- printenv ANTHROPIC_BASE_URL)"

cat <<TXT

spendgate runs in kind-$cluster. Claude Code in the dev pod, through its sidecar:
  kubectl -n $dev exec -it devpod -c dev -- npx -y @anthropic-ai/claude-code

Watch the spend arrive, in another terminal:
  kubectl get budgets -n $policies -w

From this machine, through the shared gateway instead:
  kubectl -n $system port-forward svc/spendgate-gateway 8787:80 &
  ANTHROPIC_BASE_URL=http://127.0.0.1:8787 ANTHROPIC_API_KEY=\$(cat var/kind-alice.key) claude
TXT
