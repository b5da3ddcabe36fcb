"""Self-managed certificates on the real API server: renewed before they expire, the CA replaced
with both CAs trusted during the rollover, a reset CA bundle repaired; pods injected throughout."""

from __future__ import annotations

import base64
import json
import time

import pytest
from harness import Namespaces, Release, ca_bundles, create_pod, pod_manifest, running_injector, wait_for_injection

from cluster.controlplane import ControlPlane
from spendgate.operator.injector import certificates
from spendgate.operator.injector.sidecar import SIDECAR_NAME

# Short lives so that one test sees renewals and a CA rollover: a certificate lives 6 s and is
# renewed 3 s before it expires; a CA lives 14 s and is replaced once it would expire before a new
# certificate, so around second 8.
FAST = ("--cert-validity=6s", "--renew-before=3s", "--ca-validity=14s", "--cert-check-interval=1")
WATCH_SECONDS = 20


def serving_certificate(control_plane: ControlPlane, namespace: str) -> bytes:
    found = json.loads(control_plane.kubectl("get", "secret", "spendgate-injector-tls", "-n", namespace,
                                             "-o", "json").stdout)
    return base64.b64decode(found["data"]["tls.crt"])


def test_certificates_rotate_and_pods_are_injected_throughout(control_plane: ControlPlane, release: Release,
                                                              namespaces: Namespaces,
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    configuration = release.find("MutatingWebhookConfiguration")["metadata"]["name"]
    with running_injector(control_plane, release, tmp_path_factory.mktemp("rotation"), *FAST) as injector:
        wait_for_injection(control_plane, namespaces.other)
        served, bundle_sizes, missed = set(), set(), 0
        deadline = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < deadline:
            pod = create_pod(control_plane, pod_manifest("rotating", namespaces.other, {"spendgate.io/inject": "true"}),
                             dry_run=True)
            missed += not any(c["name"] == SIDECAR_NAME for c in pod["spec"].get("initContainers", []))
            served.add(serving_certificate(control_plane, namespaces.release))
            bundle_sizes.add(len(certificates.split_pems(ca_bundles(control_plane, configuration)[0])))
            time.sleep(0.3)

        assert missed == 0
        assert len(served) >= 4  # renewed every ~3 s
        assert 2 in bundle_sizes  # old and new CA trusted together during the rollover

        # A `helm upgrade` that blanked the CA bundle is repaired within the check interval.
        patch = [{"op": "remove", "path": f"/webhooks/{i}/clientConfig/caBundle"} for i in range(2)]
        control_plane.kubectl("patch", "mutatingwebhookconfiguration", configuration, "--type=json",
                              f"-p={json.dumps(patch)}")
        wait_for_injection(control_plane, namespaces.other, timeout=10)

        status, metrics = injector.get("/metrics")
        assert status == 200 and "spendgate_injector_certificate_renewals_total" in metrics
