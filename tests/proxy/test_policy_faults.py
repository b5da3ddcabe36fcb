"""The policy path never freezes silently (issue 9, section 1).

Each failure class is injected into each bundle source while traffic flows: the proxy keeps the last
good bundle and keeps serving, logs one line naming the file and the reason, reports the refusal
(metric, /readyz) and how long the source has been ahead of what is loaded; then the source is
fixed, a key is revoked, and the revocation takes effect within seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.controlplane import ControlPlane
from proxy.proxy_harness import Keys, Running, StartGateway, message_request
from spendgate.adapters.keysfile import revoke_key
from spendgate.adapters.kube import Kube, load_configuration
from spendgate.adapters.policyfiles import compile_directory
from spendgate.policy import bundlemap
from spendgate.policy.bundle import dumps
from spendgate.proxy.bundles import BundleFile, BundleHolder, ConfigMapBundle

DEEP_JSON = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
DEEP_YAML = b"a: " + b"[" * 100_000 + b"]" * 100_000 + b"\n"
# Nine levels of ten aliases each: a few hundred bytes that expand to 10^9 nodes.
ALIAS_BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]).encode()
NOT_UTF8 = b"apiVersion: spendgate.io/v1alpha1\nkind: Budget\nmetadata: {name: \xff\xfe}\n"


class Gremlin(Exception):
    """An exception type nobody thought of."""


@dataclass
class Traffic:
    """Requests with alice's key, one after another, for as long as the test runs."""

    statuses: list[int]
    task: asyncio.Task[None]

    async def stop(self) -> list[int]:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        return self.statuses


async def flowing(gateway: Running, key: str) -> Traffic:
    statuses: list[int] = []

    async def send() -> None:
        async with gateway.client(key) as client:
            while True:
                statuses.append((await client.post("/v1/messages", json=message_request())).status_code)
                await asyncio.sleep(0.005)

    traffic = Traffic(statuses, asyncio.create_task(send()))
    while not statuses:
        await asyncio.sleep(0.005)
    return traffic


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def readiness(gateway: Running) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gateway.admin_url) as admin:
        response = await admin.get("/readyz")
    assert response.status_code == 200  # a refused bundle is reported, never fatal
    detail: dict[str, Any] = response.json()
    return detail


async def survives(gateway: Running, keys: Keys, caplog: pytest.LogCaptureFixture, break_source: Callable[[], Any],
                   names: str | list[str], fix_and_revoke: Callable[[], Any]) -> None:
    """The whole story for one source and one failure class; `names` are what the log line must say."""
    words = [names] if isinstance(names, str) else names
    good = gateway.proxy.bundles.current.version
    traffic = await flowing(gateway, keys.alice)
    try:
        await _breaks_loudly(gateway, caplog, break_source, words, good)
        fixed = fix_and_revoke()
        if asyncio.iscoroutine(fixed):
            await fixed
        await eventually(lambda: gateway.proxy.bundles.current.version != good)
        async with gateway.client(keys.bob) as client:
            revoked = await client.post("/v1/messages", json=message_request())
        assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]
    finally:
        statuses = await traffic.stop()
    assert set(statuses) == {200}, "traffic must flow through the whole episode"
    detail = await readiness(gateway)
    assert detail["lastLoadError"] is None and detail["staleSeconds"] == 0
    assert "spendgate_bundle_last_load_success 1.0" in await gateway.metrics()


async def _breaks_loudly(gateway: Running, caplog: pytest.LogCaptureFixture, break_source: Callable[[], Any],
                         words: list[str], good: str) -> None:
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="spendgate.proxy"):
        broken = break_source()
        if asyncio.iscoroutine(broken):
            await broken
        await eventually(lambda: gateway.proxy.bundles.last_error is not None)
        await asyncio.sleep(0.3)  # several reload polls later ...
        refusals = [record for record in caplog.records if "refused the new bundle" in record.getMessage()]
    assert len(refusals) == 1, [record.getMessage() for record in refusals]  # ... still one line
    assert all(word in refusals[0].getMessage() for word in words), refusals[0].getMessage()
    assert gateway.proxy.bundles.current.version == good
    detail = await readiness(gateway)
    assert detail["ready"] is True and all(word in detail["lastLoadError"] for word in words)
    assert detail["staleSeconds"] > 0
    metrics = await gateway.metrics()
    assert "spendgate_bundle_last_load_success 0.0" in metrics
    assert "spendgate_bundle_stale_seconds 0.0" not in metrics
    assert not gateway.proxy.health.stopped


# -- the policies directory (standalone) --------------------------------------------------------------------------

def _write(path: Path, data: bytes) -> Callable[[], None]:
    return lambda: path.write_bytes(data)


POLICY_FAULTS: dict[str, Callable[[Path], tuple[Callable[[], Any], str]]] = {
    "undecodable bytes": lambda d: (_write(d / "40-bad.yaml", NOT_UTF8), "not UTF-8"),
    "nesting beyond any sane depth": lambda d: (_write(d / "40-bad.yaml", DEEP_YAML), "nested deeper"),
    "an alias bomb": lambda d: (_write(d / "40-bad.yaml", ALIAS_BOMB), "aliases are not allowed"),
    "a FIFO where a file belongs": lambda d: (lambda: os.mkfifo(d / "40-bad.yaml"), "not a regular file"),
    "a dangling symlink": lambda d: (lambda: (d / "40-bad.yaml").symlink_to(d / "gone.yaml"), "does not exist"),
    "a file far too large": lambda d: (lambda: os.truncate(_touch(d / "40-bad.yaml"), 5 * 2**20),
                                      "larger than the limit of 4 MiB"),
}


def _touch(path: Path) -> Path:
    path.touch()
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink()


@pytest.mark.parametrize("fault", sorted(POLICY_FAULTS))
async def test_policies_directory(fault: str, gateway: Running, keys: Keys, policies: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    inject, names = POLICY_FAULTS[fault](policies)

    def fix_and_revoke() -> None:
        _remove(policies / "40-bad.yaml")
        revoke_key(keys.file, "bob-laptop")

    await survives(gateway, keys, caplog, inject, names, fix_and_revoke)


async def test_a_file_that_vanishes_mid_read(gateway: Running, keys: Keys, policies: Path,
                                             caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """Listed, then gone before it is read (an editor's save, a git checkout): refused and said so,
    then the next poll sees the directory as it now is and loads it."""
    from spendgate.adapters import policyfiles

    real = policyfiles.read_text_bounded
    victim = policies / "40-vanishing.yaml"

    def racing(path: Path, limit: int) -> str:
        if path == victim:
            victim.unlink(missing_ok=True)
        return real(path, limit)

    monkeypatch.setattr(policyfiles, "read_text_bounded", racing)
    good = gateway.proxy.bundles.current.version
    with caplog.at_level(logging.ERROR, logger="spendgate.proxy"):
        victim.write_text("# soon gone\n")
        revoke_key(keys.file, "bob-laptop")
        await eventually(lambda: gateway.proxy.bundles.current.version != good)
    (refusal,) = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
    assert "40-vanishing.yaml: Unreadable: does not exist (or vanished while being read)" in refusal
    async with gateway.client(keys.bob) as client:
        assert (await client.post("/v1/messages", json=message_request())).status_code == 401
    assert (await readiness(gateway))["staleSeconds"] == 0


async def test_an_exception_nobody_thought_of(gateway: Running, keys: Keys, policies: Path,
                                              caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    from spendgate.adapters import policyfiles

    real = policyfiles.compile_policies
    broken = {"on": False}

    def gremlin(*args: Any) -> Any:
        if broken["on"]:
            raise Gremlin("something new went wrong")
        return real(*args)

    monkeypatch.setattr(policyfiles, "compile_policies", gremlin)

    def inject() -> None:
        broken["on"] = True
        (policies / "40-new.yaml").write_text("# a change\n")

    def fix_and_revoke() -> None:
        broken["on"] = False
        revoke_key(keys.file, "bob-laptop")

    await survives(gateway, keys, caplog, inject, "Gremlin: something new went wrong", fix_and_revoke)


# -- the keys file ------------------------------------------------------------------------------------------------

def _replace_with_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


KEYS_FAULTS: dict[str, tuple[Callable[[Path], Any], str]] = {
    "undecodable bytes": (lambda f: f.write_bytes(b'{"keys": "\xff"}'), "keys.json"),
    "JSON nested beyond any sane depth": (lambda f: f.write_bytes(DEEP_JSON), "keys.json"),
    "truncated JSON": (lambda f: f.write_bytes(f.read_bytes()[:40]), "keys.json"),
    "a directory where the file belongs": (_replace_with_directory, "keys.json"),
}


@pytest.mark.parametrize("fault", sorted(KEYS_FAULTS))
async def test_keys_file(fault: str, gateway: Running, keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    inject, names = KEYS_FAULTS[fault]
    saved = keys.file.read_bytes()

    def fix_and_revoke() -> None:
        if keys.file.is_dir():
            keys.file.rmdir()
        keys.file.write_bytes(saved)
        revoke_key(keys.file, "bob-laptop")

    await survives(gateway, keys, caplog, lambda: inject(keys.file), names, fix_and_revoke)


# -- a bundle file, a mounted ConfigMap directory (plain or gzip) ---------------------------------------------------

def revoked_bundle(policies: Path, keys: Keys) -> bytes:
    revoke_key(keys.file, "bob-laptop")
    return dumps(compile_directory(policies, keys.file).bundle)


BUNDLE_FAULTS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "undecodable bytes": (lambda good: b"\xff\xfe" + good, "not valid JSON"),
    "JSON nested beyond any sane depth": (lambda good: DEEP_JSON, "nested too deeply"),
    "a truncated document": (lambda good: good[: len(good) // 2], "not valid JSON"),
}
GZIP_FAULTS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated compression": (lambda good: gzip.compress(good)[:-20], "truncated"),
    "corrupt compression": (lambda good: gzip.compress(good)[:10] + b"\x00" * 50, "corrupt"),
    "a compression bomb": (lambda good: gzip.compress(b" " * (65 * 2**20)), "expands past the limit"),
    "not compressed at all": (lambda good: good, "corrupt"),
}


@pytest.mark.parametrize("fault", sorted(BUNDLE_FAULTS))
async def test_bundle_file(fault: str, start_gateway: StartGateway, keys: Keys, policies: Path, tmp_path: Path,
                           caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bundle.json"
    good = dumps(compile_directory(policies, keys.file).bundle)
    path.write_bytes(good)
    gateway = await start_gateway(source=BundleFile(path))
    corrupt, names = BUNDLE_FAULTS[fault]
    await survives(gateway, keys, caplog, lambda: path.write_bytes(corrupt(good)), names,
                   lambda: path.write_bytes(revoked_bundle(policies, keys)))


@pytest.mark.parametrize("fault", sorted(GZIP_FAULTS))
async def test_mounted_compressed_bundle(fault: str, start_gateway: StartGateway, keys: Keys, policies: Path,
                                         tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    good = dumps(compile_directory(policies, keys.file).bundle)
    (mount / bundlemap.GZIP_KEY).write_bytes(gzip.compress(good))
    gateway = await start_gateway(source=BundleFile(mount))
    corrupt, names = GZIP_FAULTS[fault]
    await survives(gateway, keys, caplog, lambda: (mount / bundlemap.GZIP_KEY).write_bytes(corrupt(good)), names,
                   lambda: (mount / bundlemap.GZIP_KEY).write_bytes(gzip.compress(revoked_bundle(policies, keys))))


@pytest.mark.parametrize("fault", ["a directory where the file belongs", "a dangling symlink"])
async def test_mounted_bundle_unreadable(fault: str, start_gateway: StartGateway, keys: Keys, policies: Path,
                                         tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    plain = mount / bundlemap.PLAIN_KEY
    plain.write_bytes(dumps(compile_directory(policies, keys.file).bundle))
    gateway = await start_gateway(source=BundleFile(mount))

    def inject() -> None:
        plain.unlink()
        if fault == "a dangling symlink":
            plain.symlink_to(mount / "..2026_12_04_gone" / bundlemap.PLAIN_KEY)
        else:
            plain.mkdir()

    def fix_and_revoke() -> None:
        _remove(plain)
        plain.write_bytes(revoked_bundle(policies, keys))

    names = "is a directory" if fault.startswith("a directory") else "does not exist"
    await survives(gateway, keys, caplog, inject, names, fix_and_revoke)


# -- the bundle ConfigMap through the API -------------------------------------------------------------------------

def configmap(namespace: str, data: dict[str, str] | None = None, binary: bytes | None = None) -> str:
    manifest: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": bundlemap.NAME, "namespace": namespace}}
    if data is not None:
        manifest["data"] = data
    if binary is not None:
        manifest["binaryData"] = {bundlemap.GZIP_KEY: base64.b64encode(binary).decode()}
    return json.dumps(manifest)


CONFIGMAP_FAULTS: dict[str, tuple[Callable[[str, bytes], str], str]] = {
    "a document that is not JSON": (lambda ns, good: configmap(ns, {bundlemap.PLAIN_KEY: "{not json"}),
                                    "not valid JSON"),
    "JSON nested beyond any sane depth": (lambda ns, good: configmap(ns, {bundlemap.PLAIN_KEY: DEEP_JSON.decode()}),
                                          "nested too deeply"),
    "truncated compression": (lambda ns, good: configmap(ns, binary=gzip.compress(good)[:-20]), "truncated"),
    "corrupt compression": (lambda ns, good: configmap(ns, binary=b"\x1f\x8b" + b"\x00" * 40), "corrupt"),
    "no bundle key at all": (lambda ns, good: configmap(ns, {"other": "x"}), "holds neither"),
}


@pytest.mark.parametrize("fault", sorted(CONFIGMAP_FAULTS))
async def test_bundle_configmap(fault: str, control_plane: ControlPlane, namespace: str, kube: Kube,
                                start_gateway: StartGateway, keys: Keys, policies: Path,
                                caplog: pytest.LogCaptureFixture) -> None:
    good = compile_directory(policies, keys.file).bundle
    control_plane.apply(json.dumps(bundlemap.render(good, namespace)))
    source = ConfigMapBundle(load_configuration(control_plane.kubeconfig, None), namespace, bundlemap.NAME)
    gateway = await start_gateway(source=source)
    follower = asyncio.create_task(source.follow(kube))
    try:
        corrupt, names = CONFIGMAP_FAULTS[fault]

        def fix_and_revoke() -> None:
            revoke_key(keys.file, "bob-laptop")
            control_plane.apply(json.dumps(bundlemap.render(compile_directory(policies, keys.file).bundle,
                                                            namespace)))

        await survives(gateway, keys, caplog, lambda: control_plane.apply(corrupt(namespace, dumps(good))),
                       [f"ConfigMap {namespace}/{bundlemap.NAME}", names], fix_and_revoke)
    finally:
        follower.cancel()


async def test_a_deleted_configmap_keeps_the_last_bundle_and_says_so(
        control_plane: ControlPlane, namespace: str, kube: Kube, start_gateway: StartGateway, keys: Keys,
        policies: Path, caplog: pytest.LogCaptureFixture) -> None:
    control_plane.apply(json.dumps(bundlemap.render(compile_directory(policies, keys.file).bundle, namespace)))
    source = ConfigMapBundle(load_configuration(control_plane.kubeconfig, None), namespace, bundlemap.NAME)
    gateway = await start_gateway(source=source)
    follower = asyncio.create_task(source.follow(kube))
    try:
        def fix_and_revoke() -> None:
            revoke_key(keys.file, "bob-laptop")
            control_plane.apply(json.dumps(bundlemap.render(compile_directory(policies, keys.file).bundle,
                                                            namespace)))

        await survives(gateway, keys, caplog,
                       lambda: control_plane.kubectl("-n", namespace, "delete", "configmap", bundlemap.NAME),
                       "was deleted", fix_and_revoke)
    finally:
        follower.cancel()


# -- the watcher itself -------------------------------------------------------------------------------------------

async def test_a_background_task_that_dies_makes_the_proxy_unready(start_gateway: StartGateway,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """If the watcher ever ended, /readyz and /livez must say so instead of reporting a stale success."""
    async def dying_watch(self: BundleHolder, interval: float) -> None:
        await asyncio.sleep(0.05)
        raise Gremlin("the watcher's loop broke")

    monkeypatch.setattr(BundleHolder, "watch", dying_watch)
    gateway = await start_gateway()
    await eventually(lambda: "bundle watcher" in gateway.proxy.health.stopped)
    async with httpx.AsyncClient(base_url=gateway.admin_url) as admin:
        ready, live = await admin.get("/readyz"), await admin.get("/livez")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert "Gremlin: the watcher's loop broke" in ready.json()["stoppedTasks"]["bundle watcher"]
    assert live.status_code == 503
    assert 'spendgate_background_tasks_stopped_total{task="bundle watcher"} 1.0' in await gateway.metrics()
