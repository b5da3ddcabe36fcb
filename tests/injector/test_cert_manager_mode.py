"""With cert-manager, the injector serves the mounted Secret's files and follows their renewal."""

from __future__ import annotations

import json
import ssl
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import chart_release

from cluster.controlplane import LOOPBACK, ManagedProcess, answers_ok, free_loopback_ports, wait_until
from spendgate.operator.injector import certificates
from spendgate.operator.injector.certificates import Material, Policy

POLICY = Policy(hosts=(LOOPBACK,))


def write_pair(directory: Path, material: Material) -> None:
    (directory / "tls.crt").write_bytes(material.cert)
    (directory / "tls.key").write_bytes(material.key)


def presented(port: int) -> bytes:
    return ssl.get_server_certificate((LOOPBACK, port)).encode()


def same_certificate(pem: bytes, other: bytes) -> bool:
    return certificates.split_pems(pem) == certificates.split_pems(other)


def test_the_chart_mounts_cert_managers_secret_and_the_injector_reloads_it(tmp_path: Path) -> None:
    release = chart_release("cm", "sg", "operator.bundleNamespaces={team}", "injector.certificates.source=CertManager")
    args = release.injector_args
    assert "--tls-dir=/etc/spendgate/tls" in args and not [a for a in args if a.startswith("--tls-secret")]
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    first = certificates.renew(None, POLICY, datetime.now(UTC))
    assert first is not None
    write_pair(tls_dir, first)
    settings = tmp_path / "sidecar.json"
    settings.write_text(json.dumps(release.settings))
    port, admin_port = free_loopback_ports(2)
    command = [sys.executable, "-m", "spendgate.cli", "injector", f"--settings={settings}", f"--tls-dir={tls_dir}",
               f"--port={port}", f"--admin-port={admin_port}"]
    injector = ManagedProcess("injector", command, tmp_path / "injector.log")
    try:
        wait_until(lambda: answers_ok(f"http://{LOOPBACK}:{admin_port}/readyz"), injector, 30)
        assert same_certificate(presented(port), first.cert)

        renewed = certificates.renew(first, POLICY, datetime.now(UTC) + POLICY.validity)  # what cert-manager does
        assert renewed is not None
        write_pair(tls_dir, renewed)
        deadline = time.monotonic() + 30
        while not same_certificate(presented(port), renewed.cert):
            assert time.monotonic() < deadline, "the renewed certificate was not picked up"
            time.sleep(0.5)
    finally:
        injector.stop()
