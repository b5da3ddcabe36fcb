"""What the injected sidecar looks like: one document the chart renders from its values.

`spendgate injector --settings FILE` reads it at start; a bad document stops the injector with a
message naming the field, so a broken value never reaches a pod.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# RFC 1123 names: namespaces (labels) and Secrets or ConfigMaps (subdomains).
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"

Port = Annotated[int, Field(ge=1, le=65535)]
Namespace = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]
ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]
Quantity = Annotated[str, Field(pattern=QUANTITY)]
ResourceName = Literal["cpu", "memory", "ephemeral-storage"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretKey(Strict):
    name: ObjectName
    key: Annotated[str, Field(pattern=SECRET_KEY, max_length=253)]


class Resources(Strict):
    requests: dict[ResourceName, Quantity] = Field(default_factory=dict)
    limits: dict[ResourceName, Quantity] = Field(default_factory=dict)


class SidecarSettings(Strict):
    image: Annotated[str, Field(min_length=1)]
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    # Native: an init container with restartPolicy Always (Kubernetes >= 1.29), started and ready
    # before the app. Classic: one more app container, for clusters without native sidecars.
    mode: Literal["Native", "Classic"] = "Native"
    # API: the proxy watches its namespace's bundle ConfigMap (a change arrives in about a second).
    # Mount: the ConfigMap as a volume (about a minute; no API read rights needed for the bundle).
    bundleSource: Literal["API", "Mount"] = "API"
    bundleConfigMap: ObjectName = "spendgate-bundle"
    port: Port = 8787
    adminPort: Port = 8788
    upstream: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/\S*)?$")] = "https://api.anthropic.com"
    # The organisation's key: a Secret in each injected namespace, mounted into the sidecar only.
    upstreamKeySecret: SecretKey = SecretKey(name="anthropic-upstream-key", key="api-key")
    # Where the proxy reports spend (the operator's namespace); it follows the Budgets of the
    # namespaces its bundle's budgets live in, so no list of policy namespaces can disagree.
    reportNamespace: Namespace
    resources: Resources = Resources(requests={"cpu": "50m", "memory": "96Mi"}, limits={"memory": "192Mi"})

    @model_validator(mode="after")
    def _distinct_ports(self) -> SidecarSettings:
        if self.port == self.adminPort:
            raise ValueError(f"port and adminPort must differ (both {self.port})")
        return self
