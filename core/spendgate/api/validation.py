"""Python-side admission: the same CEL rules the API server enforces, evaluated with cel-python.

The CEL expressions live on the API types (`cel_rules`), so standalone mode and `spendgate
validate` refuse exactly what `kubectl apply` would, with the same messages. Field constraints
(patterns, bounds, enums) are checked by pydantic when the object is parsed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from pydantic import BaseModel


@dataclass(frozen=True)
class RuleViolation:
    field: str  # e.g. spec.thresholds.alertPercent
    message: str


def violations(model: BaseModel, path: str = "spec") -> list[RuleViolation]:
    """Every CEL rule of `model` and its nested types that does not hold."""
    return list(_walk(model, path))


def _walk(model: BaseModel, path: str) -> Iterator[RuleViolation]:
    rules = getattr(model, "cel_rules", [])
    if rules:
        subject = json_to_cel(model.model_dump(mode="json", exclude_none=True))
        for rule in rules:
            if not _holds(rule["rule"], subject):
                yield RuleViolation(path + rule.get("fieldPath", ""), rule["message"])
    for name in type(model).model_fields:
        yield from _walk_value(getattr(model, name), f"{path}.{name}")


def _walk_value(value: Any, path: str) -> Iterator[RuleViolation]:
    if isinstance(value, BaseModel):
        yield from _walk(value, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk_value(item, f"{path}[{index}]")


def _holds(expression: str, subject: Any) -> bool:
    return bool(_program(expression).evaluate({"self": subject}))


@cache
def _program(expression: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(expression))
