"""crds/ is generated from the API types; a stale file fails here, not in a cluster."""

from pathlib import Path

import yaml

from spendgate.api.crds import KINDS, render_all

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_the_api_types() -> None:
    rendered = render_all()
    committed = {path.name for path in CRDS.glob("*.yaml")}
    assert committed == set(rendered), "crds/ has extra or missing files; run `spendgate crds generate`"
    for name, text in rendered.items():
        assert (CRDS / name).read_text() == text, f"crds/{name} is stale; run `spendgate crds generate`"


def test_schemas_are_structural() -> None:
    """No $ref, no anyOf-with-null, no additionalProperties next to properties (API server rules)."""
    for text in render_all().values():
        flat = text
        assert "$ref" not in flat
        assert "anyOf" not in flat
        assert "additionalProperties" not in flat
        assert "title:" not in flat


def test_budget_printer_columns_read_like_resourcequota() -> None:
    budget = yaml.safe_load(render_all()["budgets.spendgate.io.yaml"])
    columns = [c["name"] for c in budget["spec"]["versions"][0]["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["CostCenter", "Scope", "Limit", "Spent", "Used", "State", "Resets", "Age"]


def test_every_user_facing_kind_is_in_the_spendgate_category() -> None:
    categories = {kind.kind: kind.categories for kind in KINDS}
    assert categories["CostCenter"] == categories["Budget"] == categories["RoutingPolicy"] == ["spendgate"]
    assert categories["SpendReport"] == []  # internal plumbing stays out of `kubectl get spendgate`
