"""Structured policy errors: one per problem per resource, never an exception."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class PolicyError:
    kind: str  # CostCenter, Budget, RoutingPolicy, VirtualKey, or File
    namespace: str | None
    name: str
    reason: str  # CamelCase, becomes the Ready=False condition's reason
    message: str  # names the field and what to fix
    field: str | None = None  # e.g. spec.costCenter

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"{self.kind} {self.ref}{where}: {self.reason}: {self.message}"
