"""The bundle in force, and its hot reload.

A source says cheaply whether it changed (a fingerprint) and loads a verified bundle or raises
BundleError naming the file and the problem. The holder polls the fingerprint; on a change it loads
off the event loop, and swaps only a bundle that loaded cleanly: a bad one leaves the last good
bundle in force and is reported once (an error log line naming the source and the reason,
`spendgate_bundle_load_errors_total`, `spendgate_bundle_last_load_success 0`, /readyz detail).

Nothing a source does can stop the reload: any exception from `fingerprint` or `load` (a type
nobody thought of included) is a refused load, retried every RETRY_SECONDS while it lasts, and
the time since the source first differed from what is loaded is exported as
`spendgate_bundle_stale_seconds` (the chart alerts on it: a revoked key that cannot reach the
proxy is an alert, not a silence). The watcher itself is supervised by the Proxy: if it ever ends,
/readyz and /livez fail.

Cluster mode reads the bundle from a mounted ConfigMap. Kubernetes updates such a volume
(about a minute after the ConfigMap changes; never with subPath) by swapping the `..data` symlink
atomically, so stat() of the file follows the link to a new inode. Standalone mode compiles a
policy directory and its keys file with the operator's compiler, whenever one of its files changes.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import kubernetes
import orjson

from spendgate.adapters.files import UnreadableFile, read_bounded
from spendgate.adapters.keysfile import KeysFileError
from spendgate.adapters.kube import LISTED, Kube, core_path
from spendgate.adapters.policyfiles import compile_directory, manifest_paths
from spendgate.logic.pricing import PriceBook
from spendgate.policy import bundlemap
from spendgate.policy.bundle import BundleError, KeyEntry, SignedBundle, loads
from spendgate.policy.bundlemap import GZIP_KEY, MAX_DOCUMENT_BYTES, PLAIN_KEY
from spendgate.proxy.attribution import Identity, identities
from spendgate.proxy.metrics import ProxyMetrics

logger = logging.getLogger("spendgate.proxy")
# How many policy errors a refused standalone bundle reports in full.
ERRORS_SHOWN: Final = 5
# A source that keeps failing is tried again this often even when its fingerprint stays the same
# (a transient failure: a file that vanished mid-read, an API hiccup).
RETRY_SECONDS: Final = 10.0
# The first read of a bundle ConfigMap, before serving: a hung API server must fail the start, not hang it.
FIRST_READ_TIMEOUT: Final = 10.0

Fingerprint = tuple[tuple[str, int, int, int], ...]


def _stat(path: Path) -> tuple[str, int, int, int]:
    try:
        status = os.stat(path)  # follows symlinks: a swapped ..data link gives a new inode
    except OSError:  # missing, a dangling link, a loop: all "nothing usable there", and a change when fixed
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
    outgrew a plain ConfigMap) or one bundle file (`.gz` for a compressed one).
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
        present = [path for path in self._candidates() if os.path.lexists(path)]
        if not present:
            raise BundleError(f"no bundle at {self.path} (the operator writes {PLAIN_KEY} or {GZIP_KEY})")
        path = present[0]
        try:
            data = read_bounded(path, MAX_DOCUMENT_BYTES)
            return loads(bundlemap.gunzip(data, MAX_DOCUMENT_BYTES) if path.suffix == ".gz" else data)
        except UnreadableFile as error:
            raise BundleError(str(error)) from None
        except BundleError as error:
            raise BundleError(f"{path}: {error}") from None


class ConfigMapBundle:
    """Cluster mode's fast path: the bundle ConfigMap read through the API and followed by a watch,
    so a policy change reaches the proxy in about a second instead of the kubelet's minute or so.
    Needs get/list/watch on that one ConfigMap (the chart grants it).

    The watch only keeps the ConfigMap as the API holds it; decoding it is `load`'s job, so a
    corrupt ConfigMap is a refused load like any other, never an exception in the watch."""

    def __init__(self, configuration: kubernetes.client.Configuration, namespace: str, name: str,
                 first_read_timeout: float = FIRST_READ_TIMEOUT) -> None:
        self._configuration = configuration
        self._namespace, self._name = namespace, name
        self._first_read_timeout = first_read_timeout
        self._configmap: Mapping[str, Any] | None = None  # None: not read yet
        self._deleted = False

    def describe(self) -> str:
        return f"ConfigMap {self._namespace}/{self._name}"

    def fingerprint(self) -> Fingerprint:
        if self._configmap is None or self._deleted:
            return ((self.describe(), 0, 0, 0),)
        digest = hashlib.sha256(orjson.dumps({"data": self._configmap.get("data"),
                                              "binaryData": self._configmap.get("binaryData")})).digest()
        return ((self.describe(), int.from_bytes(digest[:8]), 0, 1),)

    def load(self) -> SignedBundle:
        if self._deleted:
            raise BundleError(f"{self.describe()} was deleted; the last good bundle stays in force until it is back")
        if self._configmap is None:
            self._configmap = self._read_now()
        try:
            document = bundlemap.document(self._configmap)
            if document is None:
                raise BundleError(f"it holds neither {PLAIN_KEY} nor {GZIP_KEY}")
            return loads(document)
        except BundleError as error:
            raise BundleError(f"{self.describe()}: {error}") from None

    def _read_now(self) -> Mapping[str, Any]:
        """The first read, before the event loop runs (the proxy needs a bundle to start)."""
        api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(self._configuration))
        try:
            found = api.read_namespaced_config_map(self._name, self._namespace,
                                                   _request_timeout=self._first_read_timeout)
        except Exception as error:  # an ApiException, a connection failure: either way no bundle to start with
            raise BundleError(f"cannot read {self.describe()}: {getattr(error, 'reason', None) or error}") from None
        return {"data": found.data, "binaryData": found.binary_data}

    async def follow(self, kube: Kube) -> None:
        """Keep the ConfigMap current; the holder's polling notices the change and loads it."""
        query = {"fieldSelector": f"metadata.name={self._name}"}
        async for kind, configmaps in kube.watch(core_path("configmaps", self._namespace), query):
            if kind == LISTED and not configmaps:  # gone while the watch was down
                self._deleted = True
            for configmap in configmaps:
                self._deleted = kind == "DELETED"
                if not self._deleted:
                    self._configmap = configmap


@dataclass(frozen=True)
class PolicyDirectory:
    """Standalone mode: policy manifests on disk and the keys file beside them."""

    policies: Path
    keys_file: Path

    def describe(self) -> str:
        return f"policies {self.policies} with keys {self.keys_file}"

    def fingerprint(self) -> Fingerprint:
        files = manifest_paths(self.policies) if self.policies.is_dir() else []
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


def _reason(source: BundleSource, error: BaseException) -> str:
    """One line: a BundleError names its file and says it all; anything else was not foreseen, so it
    gets the source and the exception's type."""
    text = str(error).replace("\n", " ")
    return text if isinstance(error, BundleError) else f"{source.describe()}: {type(error).__name__}: {text}"


class BundleHolder:
    def __init__(self, source: BundleSource, metrics: ProxyMetrics, clock: Any = time.monotonic) -> None:
        """Loads the first bundle; a BundleError here means there is nothing to serve with."""
        self._source = source
        self._metrics = metrics
        self._clock = clock
        self._fingerprint = self._loaded_fingerprint = source.fingerprint()
        try:
            self.current = activate(source.load())
        except BundleError:
            raise
        except Exception as error:  # unforeseen: still a clear start-up error, not a traceback
            raise BundleError(_reason(source, error)) from error
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self._stale_since: float | None = None  # monotonic time the source first differed from `current`
        self._retry_at = 0.0
        metrics.bundle_swapped(self.current.version)
        metrics.bundle_stale_seconds.set_function(self.stale_seconds)

    def stale_seconds(self) -> float:
        """How long the source has differed from the bundle in force (0 when they agree)."""
        return 0.0 if self._stale_since is None else self._clock() - self._stale_since

    async def reload(self) -> bool:
        """Load the source if it changed (or a failed load is due a retry); True if a new bundle is now in force.

        Never raises: whatever goes wrong is a refused load."""
        try:
            fingerprint = self._source.fingerprint()
        except Exception as error:
            self._refused(f"cannot check for changes: {_reason(self._source, error)}", error)
            return False
        failing = self.last_error is not None
        if fingerprint == self._fingerprint and not (failing and self._clock() >= self._retry_at):
            return False
        self._fingerprint = fingerprint
        try:
            signed = await asyncio.to_thread(self._source.load)
        except Exception as error:
            self._refused(_reason(self._source, error), error)
            return False
        return self._accept(signed, fingerprint)

    def _accept(self, signed: SignedBundle, fingerprint: Fingerprint) -> bool:
        if self.last_error is not None:
            logger.info("%s loads again", self._source.describe())
        self.last_error = self.last_error_at = None
        self._stale_since = None
        self._loaded_fingerprint = fingerprint
        self._metrics.bundle_last_load_ok.set(1)
        if signed.contentHash == self.current.signed.contentHash:
            return False
        previous, self.current = self.current.version, activate(signed)
        self._metrics.bundle_swapped(self.current.version)
        logger.info("bundle %s replaces %s (%s)", self.current.version, previous, self._source.describe())
        return True

    def _refused(self, reason: str, error: BaseException) -> None:
        now = self._clock()
        if self._stale_since is None:
            self._stale_since = now
        self._retry_at = now + RETRY_SECONDS
        if reason != self.last_error:  # one line per distinct failure, not one per retry
            logger.error("refused the new bundle from %s, still serving %s: %s", self._source.describe(),
                         self.current.version, reason)
            if not isinstance(error, BundleError):
                logger.debug("the unexpected error in full", exc_info=error)
        self.last_error, self.last_error_at = reason, datetime.now(UTC)
        self._metrics.bundle_refused()

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.reload()
