"""Where a proxy in a cluster gets its bundle: the mounted ConfigMap directory (plain or gzip), or
the ConfigMap itself through the API, followed by a watch."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from cluster.controlplane import ControlPlane
from spendgate.adapters.kube import Kube, load_configuration
from spendgate.policy import bundlemap
from spendgate.policy.bundle import Bundle, BundleError, SignedBundle, dumps, sign
from spendgate.proxy.bundles import BundleFile, ConfigMapBundle


def bundle(cascade: str = "claude-opus-5-5") -> SignedBundle:
    return sign(Bundle(defaultCascade=[cascade, "claude-haiku-5-5"]))


def test_a_mounted_directory_with_either_key(tmp_path: Path) -> None:
    signed = bundle()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / bundlemap.PLAIN_KEY).write_text(bundlemap.render(signed, "ns")["data"][bundlemap.PLAIN_KEY])
    assert BundleFile(plain).load() == signed

    packed = tmp_path / "packed"  # what the kubelet mounts from binaryData once the bundle outgrew 1 MiB
    packed.mkdir()
    (packed / bundlemap.GZIP_KEY).write_bytes(gzip.compress(dumps(signed)))
    assert BundleFile(packed).load() == signed


def test_an_empty_or_broken_mount_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no bundle at .* \(the operator writes bundle.json or bundle.json.gz\)"):
        BundleFile(tmp_path).load()
    (tmp_path / bundlemap.GZIP_KEY).write_bytes(b"not gzip")
    with pytest.raises(BundleError, match=r"bundle\.json\.gz: the compressed bundle is corrupt"):
        BundleFile(tmp_path).load()


def publish(control_plane: ControlPlane, signed: SignedBundle, namespace: str) -> None:
    control_plane.apply(json.dumps(bundlemap.render(signed, namespace)))


async def test_the_configmap_through_the_api_follows_changes(control_plane: ControlPlane, namespace: str,
                                                              kube: Kube) -> None:
    first, second = bundle(), bundle("claude-sonnet-5-5")
    publish(control_plane, first, namespace)
    source = ConfigMapBundle(load_configuration(control_plane.kubeconfig, None), namespace, bundlemap.NAME)
    assert source.load() == first
    before = source.fingerprint()
    follower = asyncio.create_task(source.follow(kube))
    try:
        publish(control_plane, second, namespace)
        for _ in range(100):
            if source.fingerprint() != before:
                break
            await asyncio.sleep(0.05)
        assert source.load() == second
    finally:
        follower.cancel()


def test_a_missing_configmap_is_a_clear_error(control_plane: ControlPlane, namespace: str) -> None:
    configuration = load_configuration(control_plane.kubeconfig, None)
    with pytest.raises(BundleError, match=f"cannot read ConfigMap {namespace}/spendgate-bundle: Not Found"):
        ConfigMapBundle(configuration, namespace, bundlemap.NAME).load()


def test_a_hung_api_server_fails_the_first_read_instead_of_hanging_the_start() -> None:
    """A server that accepts the connection and never answers, as a frozen API server does."""
    import socket
    import time

    import kubernetes

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        configuration = kubernetes.client.Configuration()
        configuration.host = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(BundleError, match="cannot read ConfigMap ns/spendgate-bundle"):
            ConfigMapBundle(configuration, "ns", bundlemap.NAME, first_read_timeout=0.5).load()
        assert time.monotonic() - started < 5
