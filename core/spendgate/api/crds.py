"""Generate the CustomResourceDefinitions in crds/ from the pydantic API types.

`spendgate crds generate` writes them; tests/unit/test_crds.py fails when the committed files
differ from what the types generate, so the types stay the single source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from spendgate.api import v1alpha1 as api


@dataclass(frozen=True)
class Column:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class Kind:
    resource: type[BaseModel]
    plural: str
    short_names: list[str]
    namespaced: bool
    spec: type[BaseModel]
    status: type[BaseModel] | None
    columns: list[Column]
    categories: list[str] = field(default_factory=lambda: ["spendgate"])

    @property
    def kind(self) -> str:
        return self.resource.__name__


AGE = Column("Age", ".metadata.creationTimestamp", "date")
READY = Column("Ready", ".status.conditions[?(@.type==\"Ready\")].status")
# `kubectl get -o wide`: where the spec in force came from.
PROVENANCE = [Column("Revision", ".status.provenance.revision", description="Git revision in force", priority=1),
              Column("Application", ".status.provenance.application", description="Argo CD Application", priority=1)]

KINDS = [
    Kind(
        resource=api.CostCenter, plural="costcenters", short_names=["cc"], namespaced=False,
        spec=api.CostCenterSpec, status=api.CostCenterStatus,
        columns=[
            Column("Code", ".spec.code"),
            Column("Parent", ".spec.parent"),
            Column("Spent", ".status.spentUSDRounded", description="Spend of this window, all budgets below"),
            Column("Budgets", ".status.budgets", "integer"),
            READY,
            AGE,
            *PROVENANCE,
        ],
    ),
    Kind(
        resource=api.Budget, plural="budgets", short_names=["bgt"], namespaced=True,
        spec=api.BudgetSpec, status=api.BudgetStatus,
        columns=[
            Column("CostCenter", ".spec.costCenter"),
            Column("Scope", ".status.scope"),
            Column("Limit", ".spec.limitUSD", description="USD per window"),
            Column("Spent", ".status.spentUSDRounded", description="USD spent in this window, to the cent"),
            Column("Used", ".status.percentUsed"),
            Column("State", ".status.state"),
            Column("Resets", ".status.windowEnd", description="When this window ends"),
            AGE,
            Column("Mode", ".spec.enforcement", priority=1),
            Column("Period", ".spec.window.period", priority=1),
            Column("Ready", READY.json_path, priority=1),
            *PROVENANCE,
        ],
    ),
    Kind(
        resource=api.RoutingPolicy, plural="routingpolicies", short_names=["rp"], namespaced=True,
        spec=api.RoutingPolicySpec, status=api.RoutingPolicyStatus,
        columns=[Column("Cascade", ".spec.cascade"), READY, AGE, *PROVENANCE],
    ),
    Kind(
        resource=api.SpendReport, plural="spendreports", short_names=["sr"], namespaced=True,
        spec=api.SpendReportSpec, status=None, categories=[],
        columns=[Column("Proxy", ".spec.proxy"), Column("Reported", ".spec.reportedAt"), AGE],
    ),
    Kind(
        resource=api.FleetSpend, plural="fleetspends", short_names=["fs"], namespaced=True,
        spec=api.FleetSpendSpec, status=None, categories=[],
        columns=[Column("CostCenter", ".spec.costCenter"), Column("As Of", ".spec.asOf"), AGE],
    ),
    Kind(
        resource=api.AuditLog, plural="auditlogs", short_names=[], namespaced=True,
        spec=api.AuditLogSpec, status=api.AuditLogStatus, categories=[],
        columns=[Column("Records", ".status.records", "integer"), Column("Head", ".status.head"),
                 Column("Appended", ".status.lastAppend"), AGE],
    ),
    Kind(
        resource=api.PolicyWriters, plural="policywriters", short_names=[], namespaced=False,
        spec=api.PolicyWritersSpec, status=None, categories=[],
        columns=[Column("Repository", ".spec.policyRepository"), AGE],
    ),
]


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema as a structural OpenAPI v3 schema (no $ref, no null unions)."""
    schema = model.model_json_schema(mode="validation")
    definitions = schema.pop("$defs", {})
    structural: dict[str, Any] = _structural(schema, definitions)
    return structural


def _structural(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = definitions[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, definitions)
    if "anyOf" in node:  # Optional[X]: pydantic writes anyOf [X, null]; optional is "not required"
        options = [option for option in node["anyOf"] if option.get("type") != "null"]
        if len(options) == 1:
            rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
            return _structural({**options[0], **rest}, definitions)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key == "properties":
            result[key] = {name: _structural(prop, definitions) for name, prop in value.items()}
        else:
            result[key] = _structural(value, definitions)
    if "enum" in result and "type" not in result:
        result["type"] = "string"
    return result


def crd(kind: Kind) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": openapi_schema(kind.spec),
    }
    version: dict[str, Any] = {"name": api.VERSION, "served": True, "storage": True}
    if kind.status is not None:
        properties["status"] = openapi_schema(kind.status)
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = [_column(column) for column in kind.columns]
    version["schema"] = {
        "openAPIV3Schema": {
            "type": "object",
            "description": (kind.resource.__doc__ or kind.kind).strip(),
            "required": ["spec"],
            "properties": properties,
        }
    }
    names: dict[str, Any] = {
        "kind": kind.kind,
        "listKind": f"{kind.kind}List",
        "plural": kind.plural,
        "singular": kind.kind.lower(),
        "shortNames": kind.short_names,
    }
    if kind.categories:
        names["categories"] = kind.categories
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "names": names,
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "versions": [version],
        },
    }


def _column(column: Column) -> dict[str, Any]:
    out: dict[str, Any] = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
    if column.description:
        out["description"] = column.description
    if column.priority:
        out["priority"] = column.priority
    return out


HEADER = "# Generated by `spendgate crds generate` from spendgate.api.v1alpha1. Do not edit.\n"


def render_all() -> dict[str, str]:
    """File name -> YAML text for every CRD."""
    return {
        f"{kind.plural}.{api.GROUP}.yaml": HEADER + yaml.safe_dump(crd(kind), sort_keys=False, width=100)
        for kind in KINDS
    }


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
