"""Writes the bundle ConfigMap into every target namespace, only when its content hash changed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from spendgate.adapters.kube import Kube, KubeError, core_path
from spendgate.operator.metrics import OperatorMetrics
from spendgate.policy import bundlemap
from spendgate.policy.bundle import SignedBundle

logger = logging.getLogger(__name__)

ATTEMPTS = 3  # a 409 means someone else wrote in between: read again, then replace


class BundlePublisher:
    def __init__(self, kube: Kube, namespaces: Sequence[str], report_namespace: str, metrics: OperatorMetrics
                 ) -> None:
        self._kube = kube
        self.namespaces = tuple(dict.fromkeys(namespaces))
        self._report_namespace = report_namespace  # written beside the bundle: where proxies report
        self._metrics = metrics
        self._written: dict[str, str] = {}  # namespace -> content hash known to be there

    async def publish(self, signed: SignedBundle) -> bool:
        """True when every namespace holds this bundle; False if some write must be retried."""
        try:
            manifests = {ns: bundlemap.render(signed, ns, self._report_namespace) for ns in self.namespaces}
        except bundlemap.BundleTooLarge as error:
            logger.error("bundle %s not published: %s", signed.version, error)
            self._metrics.bundle_errors.labels("TooLarge").inc()
            return True  # retrying cannot help; the last good bundle stays in place
        document = bundlemap.document(next(iter(manifests.values()))) or b""
        self._metrics.bundle_bytes.set(len(document))
        results = [await self._ensure(ns, manifest, signed.contentHash) for ns, manifest in manifests.items()]
        return all(results)

    async def _ensure(self, namespace: str, manifest: dict[str, Any], content_hash: str) -> bool:
        if self._written.get(namespace) == content_hash:
            return True
        path = core_path("configmaps", namespace, bundlemap.NAME)
        try:
            for _ in range(ATTEMPTS):
                if await self._write(path, namespace, manifest, content_hash):
                    self._written[namespace] = content_hash
                    return True
        except KubeError as error:
            logger.error("bundle not written to namespace %s: %s", namespace, error)
            self._metrics.bundle_errors.labels(error.reason or str(error.status)).inc()
        return False

    async def _write(self, path: str, namespace: str, manifest: dict[str, Any], content_hash: str) -> bool:
        """Create, or replace with the current resourceVersion; False on a lost race (409)."""
        try:
            existing = await self._kube.request("GET", path)
        except KubeError as error:
            if error.status != 404:
                raise
            return await self._create(namespace, manifest)
        if (bundlemap.content_hash(existing), bundlemap.report_namespace(existing)) == (
                content_hash, self._report_namespace):
            return True
        metadata = {**manifest["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]}
        return await self._written_or_conflict("PUT", path, {**manifest, "metadata": metadata}, "replaced")

    async def _create(self, namespace: str, manifest: dict[str, Any]) -> bool:
        return await self._written_or_conflict("POST", core_path("configmaps", namespace), manifest, "created")

    async def _written_or_conflict(self, method: str, path: str, body: dict[str, Any], result: str) -> bool:
        try:
            await self._kube.request(method, path, body)
        except KubeError as error:
            if error.status == 409:
                return False
            raise
        self._metrics.writes.labels("ConfigMap", result).inc()
        return True
