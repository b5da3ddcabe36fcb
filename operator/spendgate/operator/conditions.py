"""metav1.Condition bookkeeping: a Ready condition per object, transition times kept honest."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from spendgate.api.v1alpha1 import Condition, ConditionStatus
from spendgate.logic.windows import rfc3339
from spendgate.policy.errors import PolicyError

READY = "Ready"


def ready_condition(errors: Sequence[PolicyError], generation: int, ok_reason: str, ok_message: str,
                    now: datetime) -> Condition:
    """Ready=True, or Ready=False with the first error's reason and every error's message."""
    if errors:
        return Condition(type=READY, status=ConditionStatus.FALSE, reason=errors[0].reason,
                         message="; ".join(error.message for error in errors), observedGeneration=generation,
                         lastTransitionTime=rfc3339(now))
    return Condition(type=READY, status=ConditionStatus.TRUE, reason=ok_reason, message=ok_message,
                     observedGeneration=generation, lastTransitionTime=rfc3339(now))


def set_condition(conditions: Sequence[Condition], new: Condition) -> list[Condition]:
    """Replace the condition of the same type in place (a new type goes last); its transition time
    moves only when its status does."""
    previous = find(conditions, new.type)
    if previous is None:
        return [*conditions, new]
    if previous.status == new.status:
        new = new.model_copy(update={"lastTransitionTime": previous.lastTransitionTime})
    return [new if c.type == new.type else c for c in conditions]


def without_condition(conditions: Sequence[Condition], kind: str) -> list[Condition]:
    return [c for c in conditions if c.type != kind]


def find(conditions: Sequence[Condition], kind: str) -> Condition | None:
    return next((c for c in conditions if c.type == kind), None)
