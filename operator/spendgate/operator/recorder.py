"""Kubernetes Events for the objects the operator manages, so `kubectl describe` tells the story."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from spendgate.adapters.kube import Kube, KubeError, core_path
from spendgate.logic.windows import rfc3339
from spendgate.operator.clock import Clock
from spendgate.operator.transitions import EventNote

logger = logging.getLogger(__name__)

COMPONENT = "spendgate-operator"
CLUSTER_SCOPED_EVENTS_NAMESPACE = "default"  # where kubectl looks for events of cluster-scoped objects
MESSAGE_LIMIT = 1024


class EventRecorder:
    def __init__(self, kube: Kube, instance: str, clock: Clock) -> None:
        self._kube = kube
        self._instance = instance
        self._clock = clock

    async def record(self, reference: Mapping[str, str], note: EventNote) -> None:
        """Best effort: an Event that cannot be posted is logged, never retried or raised."""
        namespace = reference.get("namespace") or CLUSTER_SCOPED_EVENTS_NAMESPACE
        now = rfc3339(self._clock.now())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{reference['name']}.", "namespace": namespace},
            "involvedObject": dict(reference),
            "type": note.type,
            "reason": note.reason,
            "message": note.message[:MESSAGE_LIMIT],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._kube.request("POST", core_path("events", namespace), event)
        except KubeError as error:
            logger.warning("event %s for %s/%s not posted: %s", note.reason, namespace, reference["name"], error)
