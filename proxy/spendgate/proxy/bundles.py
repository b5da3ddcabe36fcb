"""The bundle in force, and its hot reload.

A source says cheaply whether it changed (a stat fingerprint) and loads a verified bundle or raises
BundleError. The holder polls the fingerprint; on a change it loads off the event loop, and swaps
only a bundle that loaded cleanly: a bad one leaves the last good bundle in force and is reported
(log, `spendgate_bundle_load_errors_total`, /readyz detail).

Cluster mode reads the bundle from a mounted ConfigMap. Kubernetes updates such a volume
(about a minute after the ConfigMap changes; never with subPath) by swapping the `..data` symlink
atomically, so stat() of the file follows the link to a new inode. Standalone mode compiles a
policy directory and its keys file with the operator's compiler, whenever one of its files changes.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import logging
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import kubernetes

from spendgate.adapters.keysfile import KeysFileError
from spendgate.adapters.kube import Kube, core_path
from spendgate.adapters.policyfiles import compile_directory
from spendgate.logic.pricing import PriceBook
from spendgate.policy import bundlemap
from spendgate.policy.bundle import BundleError, KeyEntry, SignedBundle, loads
from spendgate.policy.bundlemap import GZIP_KEY, PLAIN_KEY
from spendgate.proxy.attribution import Identity, identities
from spendgate.proxy.metrics import ProxyMetrics

logger = logging.getLogger("spendgate.proxy")
# How many policy errors a refused standalone bundle reports in full.
ERRORS_SHOWN = 5

Fingerprint = tuple[tuple[str, int, int, int], ...]


def _stat(path: Path) -> tuple[str, int, int, int]:
    try:
        status = os.stat(path)  # follows symlinks: a swapped ..data link gives a new inode
    except FileNotFoundError:
        return (str(path), 0, 0, 0)
    return (str(path), status.st_ino, status.st_mtime_ns, status.st_size)


class BundleSource(Protocol):
    def describe(self) -> str: ...

    def fingerprint(self) -> Fingerprint: ...

    def load(self) -> SignedBundle:
        """The bundle, verified; raises BundleError naming what is wrong."""


@dataclass(frozen=True)
class BundleFile:
    """Cluster mode: the compiled bundle the operator wrote to a ConfigMap, mounted as a volume.

    `path` is the mounted directory (it holds bundle.json, or bundle.json.gz once the bundle
    outgrew a plain ConfigMap) or one bundle file.
    """

    path: Path

    def describe(self) -> str:
        return f"bundle {self.path}"

    def _candidates(self) -> list[Path]:
        if self.path.is_dir():
            return [self.path / PLAIN_KEY, self.path / GZIP_KEY]
        return [self.path]

    def fingerprint(self) -> Fingerprint:
        return tuple(_stat(path) for path in self._candidates())

    def load(self) -> SignedBundle:
        present = [path for path in self._candidates() if path.exists()]
        if not present:
            raise BundleError(f"no bundle at {self.path} (the operator writes {PLAIN_KEY} or "
                              f"{GZIP_KEY})")
        try:
            data = present[0].read_bytes()
            return loads(gzip.decompress(data) if present[0].suffix == ".gz" else data)
        except OSError as error:  # gzip.BadGzipFile is an OSError too
            raise BundleError(f"cannot read {present[0]}: {error.strerror or error}") from error


class ConfigMapBundle:
    """Cluster mode's fast path: the bundle ConfigMap read through the API and followed by a watch,
    so a policy change reaches the proxy in about a second instead of the kubelet's minute or so.
    Needs get/list/watch on that one ConfigMap (the chart grants it)."""

    def __init__(self, configuration: kubernetes.client.Configuration, namespace: str, name: str) -> None:
        self._configuration = configuration
        self._namespace, self._name = namespace, name
        self._document: bytes | None = None

    def describe(self) -> str:
        return f"ConfigMap {self._namespace}/{self._name}"

    def fingerprint(self) -> Fingerprint:
        document = self._document or b""
        return ((self.describe(), len(document), zlib.crc32(document), 0),)

    def load(self) -> SignedBundle:
        if self._document is None:
            self._document = self._read_now()
        return loads(self._document)

    def _read_now(self) -> bytes:
        """The first read, before the event loop runs (the proxy needs a bundle to start)."""
        api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(self._configuration))
        try:
            found = api.read_namespaced_config_map(self._name, self._namespace)
        except (kubernetes.client.ApiException, OSError) as error:
            raise BundleError(f"cannot read {self.describe()}: {getattr(error, 'reason', error)}") from error
        return self._document_of({"data": found.data, "binaryData": found.binary_data})

    def _document_of(self, configmap: Mapping[str, Any]) -> bytes:
        document = bundlemap.document(configmap)
        if document is None:
            raise BundleError(f"{self.describe()} holds neither {PLAIN_KEY} nor {GZIP_KEY}")
        return document

    async def follow(self, kube: Kube) -> None:
        """Keep the document current; the holder's polling notices the change and swaps it in."""
        query = {"fieldSelector": f"metadata.name={self._name}"}
        async for kind, configmaps in kube.watch(core_path("configmaps", self._namespace), query):
            for configmap in configmaps:
                if kind != "DELETED":  # a deleted ConfigMap leaves the last good bundle in force
                    self._document = bundlemap.document(configmap) or self._document


@dataclass(frozen=True)
class PolicyDirectory:
    """Standalone mode: policy manifests on disk and the keys file beside them."""

    policies: Path
    keys_file: Path

    def describe(self) -> str:
        return f"policies {self.policies} with keys {self.keys_file}"

    def fingerprint(self) -> Fingerprint:
        files = sorted(path for path in self.policies.rglob("*") if path.is_file()) if self.policies.is_dir() else []
        return tuple(_stat(path) for path in [*files, self.keys_file])

    def load(self) -> SignedBundle:
        try:
            result = compile_directory(self.policies, self.keys_file)
        except KeysFileError as error:
            raise BundleError(str(error)) from error
        if result.errors:
            shown = "; ".join(str(error) for error in result.errors[:ERRORS_SHOWN])
            more = len(result.errors) - ERRORS_SHOWN
            suffix = f"; and {more} more" if more > 0 else ""
            raise BundleError(f"{len(result.errors)} policy errors: {shown}{suffix}")
        return result.bundle


@dataclass(frozen=True)
class ActiveBundle:
    """A loaded bundle with what the hot path looks up in it, prepared once."""

    signed: SignedBundle
    version: str
    keys: Mapping[str, KeyEntry]  # all keys, revoked ones included, by SHA-256 hex of the plaintext key
    owners: Mapping[str, Identity]  # the active keys' owners, by the same hash
    prices: PriceBook
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def activate(signed: SignedBundle) -> ActiveBundle:
    keys = signed.bundle.keys
    active = ActiveBundle(signed=signed, version=signed.version, keys={key.hash: key for key in keys},
                          owners=identities(keys), prices=PriceBook(signed.bundle.pricing))
    _keep_out_of_the_collectors_way(active)
    return active


def _keep_out_of_the_collectors_way(active: ActiveBundle) -> None:
    """The bundle and the price tables live as long as the bundle is in force: load the prices of the
    cascade models now, then freeze everything alive so full collections stop rescanning it (they
    cost ~50 ms and showed up as p99 spikes under load)."""
    bundle = active.signed.bundle
    today = datetime.now(UTC).date()
    for model in {*bundle.defaultCascade, *(m for policy in bundle.routingPolicies for m in policy.cascade)}:
        active.prices.rates(model, today)
    gc.collect()
    gc.freeze()


class BundleHolder:
    def __init__(self, source: BundleSource, metrics: ProxyMetrics) -> None:
        """Loads the first bundle; a BundleError here means there is nothing to serve with."""
        self._source = source
        self._metrics = metrics
        self._fingerprint = source.fingerprint()
        self.current = activate(source.load())
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        metrics.bundle_swapped(self.current.version)

    async def reload(self) -> bool:
        """Load the source if it changed; True if a new bundle is now in force."""
        fingerprint = self._source.fingerprint()
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        try:
            signed = await asyncio.to_thread(self._source.load)
        except BundleError as error:
            self.last_error, self.last_error_at = str(error), datetime.now(UTC)
            self._metrics.bundle_refused()
            logger.error("refused the new bundle from %s, still serving %s: %s",
                         self._source.describe(), self.current.version, error)
            return False
        self.last_error = self.last_error_at = None
        self._metrics.bundle_last_load_ok.set(1)
        if signed.contentHash == self.current.signed.contentHash:
            return False
        previous, self.current = self.current.version, activate(signed)
        self._metrics.bundle_swapped(self.current.version)
        logger.info("bundle %s replaces %s (%s)", self.current.version, previous, self._source.describe())
        return True

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.reload()
