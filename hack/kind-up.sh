#!/usr/bin/env bash
# A local cluster for people with Docker: kind + the image + the chart + the example policies.
# The test suite never needs this (it runs its own kube-apiserver); see README "Try it in kind".
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=${KIND_CLUSTER:-spendgate}
image=${IMAGE:-spendgate:dev}

command -v kind >/dev/null || { echo "kind is not installed: https://kind.sigs.k8s.io/docs/user/quick-start/" >&2; exit 1; }
command -v helm >/dev/null || { echo "helm is not installed (make control-plane builds one into ~/.cache/spendgate/bin)" >&2; exit 1; }

kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster"
docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"
helm upgrade --install spendgate charts/spendgate --namespace spendgate-system --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image#*:}" --set image.pullPolicy=Never --wait
kubectl apply -f examples/policies/
kubectl get spendgate -A
