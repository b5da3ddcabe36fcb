"""The sidecar injector's latency per admission, and what it adds to creating a pod.

Against the test suite's real kube-apiserver + etcd, with the injector as a subprocess started the
way the chart starts it (tests/injector/harness.py): the chart's webhook configuration, by URL.

1. The webhook alone: AdmissionReviews POSTed over one kept-alive TLS connection, as the API server
   sends them; client-side p50/p99, and the injector's own histogram.
2. Through the API server: server-side dry-run pod creations in a namespace labelled for injection
   (the API server calls the webhook) against the same in a namespace it never calls it for.
3. The injector's RSS afterwards, and its time from spawn to ready (a CA and a certificate issued,
   the Secret written, the CA bundle published).

Usage: python bench/injector_bench.py [--reviews 2000] [--pods 300]
Prints a Markdown table; nothing is written to disk.
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "injector")]

from harness import ca_bundles, chart_release, pod_manifest, running_injector, wait_for_injection  # noqa: E402

from cluster.controlplane import LOOPBACK, ControlPlane  # noqa: E402


def quantiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return (statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000,
            statistics.mean(ordered) * 1000)


def review_latency(port: int, bundle: bytes, namespace: str, count: int) -> list[float]:
    context = ssl.create_default_context(cadata=bundle.decode())
    connection = http.client.HTTPSConnection(LOOPBACK, port, context=context)
    body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": "bench", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                                   "operation": "CREATE", "namespace": namespace,
                                   "object": pod_manifest("bench", namespace)}}).encode()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request("POST", "/inject/namespace", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        samples.append(time.perf_counter() - started)
        assert response.status == 200
    connection.close()
    return samples


def creation_latency(control_plane: ControlPlane, namespace: str, count: int) -> list[float]:
    context = ssl.create_default_context(cafile=str(control_plane.workdir / "pki" / "ca.crt"))
    host, port = control_plane.server.removeprefix("https://").split(":")
    connection = http.client.HTTPSConnection(host, int(port), context=context)
    headers = {"Authorization": f"Bearer {control_plane.token}", "Content-Type": "application/json"}
    body = json.dumps(pod_manifest("bench", namespace, serviceAccountName="default")).encode()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", body, headers)
        response = connection.getresponse()
        response.read()
        samples.append(time.perf_counter() - started)
        assert response.status == 201, response.status
    connection.close()
    return samples


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=2000)
    parser.add_argument("--pods", type=int, default=300)
    args = parser.parse_args()
    suffix = secrets.token_hex(3)
    release_ns, labelled, plain = f"bench-sg-{suffix}", f"bench-team-{suffix}", f"bench-plain-{suffix}"
    with ControlPlane.start() as control_plane, tempfile.TemporaryDirectory() as workdir:
        for namespace in (release_ns, labelled, plain):
            control_plane.kubectl("create", "namespace", namespace)
        control_plane.kubectl("label", "namespace", labelled, "spendgate.io/inject=enabled")
        release = chart_release(release_ns, release_ns, f"operator.bundleNamespaces={{{labelled}}}")
        spawned = time.perf_counter()
        with running_injector(control_plane, release, Path(workdir)) as injector:
            ready = time.perf_counter() - spawned
            wait_for_injection(control_plane, labelled)
            bundle = ca_bundles(control_plane, release.find("MutatingWebhookConfiguration")["metadata"]["name"])[0]
            direct = review_latency(injector.port, bundle, labelled, args.reviews)
            creation_latency(control_plane, labelled, 20)  # warm both paths up
            creation_latency(control_plane, plain, 20)
            injected = creation_latency(control_plane, labelled, args.pods)
            untouched = creation_latency(control_plane, plain, args.pods)
            rss = rss_mb(injector.process._popen.pid)
            metrics = injector.get("/metrics")[1]
    server_sum = sum(float(line.split()[-1]) for line in metrics.splitlines()
                     if line.startswith("spendgate_injector_admission_seconds_sum"))
    server_count = sum(float(line.split()[-1]) for line in metrics.splitlines()
                       if line.startswith("spendgate_injector_admission_seconds_count"))
    rows = [
        ("webhook alone, client-side (TLS, kept alive)", *quantiles(direct), args.reviews),
        ("pod create (dry run), injected", *quantiles(injected), args.pods),
        ("pod create (dry run), webhook not called", *quantiles(untouched), args.pods),
    ]
    print("| measurement | p50 ms | p99 ms | mean ms | samples |\n|---|---|---|---|---|")
    for name, p50, p99, mean, count in rows:
        print(f"| {name} | {p50:.2f} | {p99:.2f} | {mean:.2f} | {count} |")
    print(f"\ninjector's own time per review (its histogram): {server_sum / server_count * 1000:.3f} ms mean "
          f"over {server_count:.0f}")
    print(f"added to a pod creation (p50): {quantiles(injected)[0] - quantiles(untouched)[0]:.2f} ms")
    print(f"injector RSS after the run: {rss:.0f} MB; spawn to ready (certificate issued and published): "
          f"{ready:.2f} s")


if __name__ == "__main__":
    main()
