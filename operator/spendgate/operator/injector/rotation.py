"""Keeping the serving certificate current: self-managed through the API, or files cert-manager writes.

Self-managed (`--tls-secret`): every replica runs the same loop. It reads the TLS Secret, lets
`certificates.renew` decide, writes new material with the Secret's resourceVersion as a
precondition (two replicas renewing at once: one write wins, the other reads the winner's on its
next pass), makes every webhook of the MutatingWebhookConfiguration trust the CA bundle (also
repairing a bundle a `helm upgrade` reset), and only then serves the certificate. It wakes when
something is due and at least every `interval`, so it also picks up what another replica wrote.

cert-manager (`--tls-dir`): the mounted Secret's tls.crt and tls.key are reloaded when the kubelet
updates them; cert-manager's cainjector keeps the CA bundle.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from spendgate.adapters.kube import JSON_PATCH, Kube, KubeError, core_path
from spendgate.operator.injector import certificates
from spendgate.operator.injector.certificates import Material, MaterialError, Policy
from spendgate.operator.injector.metrics import InjectorMetrics
from spendgate.operator.injector.tls import ServingTLS

logger = logging.getLogger("spendgate.injector")

WEBHOOKS_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
RETRY_SECONDS = 5.0
CA_KEY = "ca.key"  # next to kubernetes.io/tls's tls.crt and tls.key, and the usual ca.crt


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SecretKeeper:
    kube: Kube
    namespace: str
    secret: str
    webhook_configuration: str
    policy: Policy
    tls: ServingTLS
    metrics: InjectorMetrics
    interval: float = 60.0
    ca_propagation: float = 2.0
    now: Callable[[], datetime] = _utc_now
    ca_published: bool = False

    async def run(self) -> None:
        while True:
            try:
                pause = await self.sync()
            except (KubeError, aiohttp.ClientError, OSError, ValueError) as error:  # ValueError: a garbled answer
                logger.warning("could not keep the webhook certificate current, retrying in %.0f s: %s",
                               RETRY_SECONDS, error)
                pause = RETRY_SECONDS
            await asyncio.sleep(pause)

    async def sync(self) -> float:
        """One pass; returns how long to sleep before the next."""
        stored, version = await self._read()
        material = stored
        try:
            fresh = certificates.renew(stored, self.policy, self.now())
        except MaterialError as error:
            logger.warning("the certificate in Secret %s/%s is unusable (%s): issuing a new CA and certificate",
                           self.namespace, self.secret, error)
            fresh = certificates.renew(None, self.policy, self.now())
        if fresh is not None:
            if not await self._write(fresh, version):
                return 0.5  # another replica wrote first: use its material on the next pass
            self.metrics.renewals.inc()
            logger.info("issued a webhook certificate valid until %s for %s", certificates.not_after(fresh.cert),
                        ", ".join(self.policy.hosts))
            material = fresh
        assert material is not None
        if await self._publish_ca(material.ca_bundle) and self.tls.loaded:
            # The API server learns of the new bundle through its informer: give it a moment before
            # serving a certificate that may be signed by a CA only the new bundle holds (at start
            # nothing is served yet, so there is nothing to wait for).
            await asyncio.sleep(self.ca_propagation)
        self.tls.load(material.cert, material.key)
        due = (certificates.next_check(material, self.policy, self.now()) - self.now()).total_seconds()
        return min(self.interval, max(due, 0.5))

    async def _read(self) -> tuple[Material | None, str | None]:
        try:
            found = await self.kube.request("GET", core_path("secrets", self.namespace, self.secret))
        except KubeError as error:
            if error.status == 404:
                return None, None
            self.metrics.certificate_errors.labels("read secret").inc()
            raise
        version = str(found["metadata"]["resourceVersion"])
        data = {key: base64.b64decode(value) for key, value in (found.get("data") or {}).items()}
        try:
            material = Material(ca_certs=certificates.split_pems(data["ca.crt"]), ca_key=data[CA_KEY],
                                cert=data["tls.crt"], key=data["tls.key"])
        except KeyError as missing:
            logger.warning("Secret %s/%s lacks %s: issuing a new certificate", self.namespace, self.secret, missing)
            return None, version
        return material, version

    async def _write(self, material: Material, version: str | None) -> bool:
        data = {"ca.crt": material.ca_bundle, CA_KEY: material.ca_key, "tls.crt": material.cert,
                "tls.key": material.key}
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": self.secret, "namespace": self.namespace,
                         "labels": {"app.kubernetes.io/name": "spendgate",
                                    "app.kubernetes.io/component": "injector-tls"}},
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
        }
        try:
            if version is None:
                await self.kube.request("POST", core_path("secrets", self.namespace), body)
            else:
                body["metadata"]["resourceVersion"] = version
                await self.kube.request("PUT", core_path("secrets", self.namespace, self.secret), body)
        except KubeError as error:
            if error.status == 409:
                return False
            self.metrics.certificate_errors.labels("write secret").inc()
            raise
        return True

    async def _publish_ca(self, bundle: bytes) -> bool:
        """Every webhook of our configuration trusts `bundle` (a JSON patch per webhook that differs);
        True if it changed anything."""
        wanted = base64.b64encode(bundle).decode()
        path = f"{WEBHOOKS_PATH}/{self.webhook_configuration}"
        try:
            found = await self.kube.request("GET", path)
            patch = []
            for index, webhook in enumerate(found.get("webhooks") or []):
                if (webhook.get("clientConfig") or {}).get("caBundle") != wanted:
                    patch += [{"op": "test", "path": f"/webhooks/{index}/name", "value": webhook["name"]},
                              {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": wanted}]
            if patch:
                await self.kube.request("PATCH", path, patch, content_type=JSON_PATCH)
                logger.info("updated the CA bundle of %d webhooks of %s", len(patch) // 2, self.webhook_configuration)
        except KubeError:
            self.metrics.certificate_errors.labels("publish ca bundle").inc()
            raise
        self.ca_published = True
        return bool(patch)


@dataclass
class DirectoryWatcher:
    """cert-manager's Secret, mounted: tls.crt and tls.key, reloaded when they change."""

    directory: Path
    tls: ServingTLS
    metrics: InjectorMetrics
    interval: float = 10.0

    def load(self) -> bool:
        return self.tls.load((self.directory / "tls.crt").read_bytes(), (self.directory / "tls.key").read_bytes())

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                if self.load():
                    logger.info("loaded the renewed certificate from %s", self.directory)
            except (OSError, ValueError) as error:  # mid-update or broken: keep serving the last good pair
                self.metrics.certificate_errors.labels("read files").inc()
                logger.warning("could not load the certificate from %s, keeping the last one: %s",
                               self.directory, error)
