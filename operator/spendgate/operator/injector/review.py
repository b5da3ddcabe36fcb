"""AdmissionReview (admission.k8s.io/v1) in, AdmissionReview out, around `patch.inject`.

A review that is not one (not JSON, another version, no uid) raises ReviewError naming what is
wrong: the server answers 400 and the API server applies the webhook's failurePolicy. Anything
else is allowed, with a JSON patch when there is something to inject.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spendgate.operator.injector.patch import inject
from spendgate.operator.injector.settings import SidecarSettings

API_VERSION = "admission.k8s.io/v1"
POD = {"group": "", "version": "v1", "kind": "Pod"}


class ReviewError(ValueError):
    """Not an AdmissionReview we can answer; the message says why."""


@dataclass(frozen=True)
class Answer:
    review: dict[str, Any]
    outcome: str  # injected | updated | unchanged | not-wanted | refused | not-a-pod (a metric label)


def answer(body: bytes, settings: SidecarSettings, namespace_opted_in: bool, version: str) -> Answer:
    request = _request(body)
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    pod = request.get("object")
    if request.get("kind") != POD or request.get("operation") != "CREATE" or not isinstance(pod, Mapping):
        return Answer(_review(response), "not-a-pod")
    namespace = str(request.get("namespace") or "")
    injection = inject(pod, settings, namespace, namespace_opted_in, version)
    if injection.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(injection.patch).encode()).decode()
    if injection.warnings:
        response["warnings"] = injection.warnings
    return Answer(_review(response), injection.outcome)


def _request(body: bytes) -> Mapping[str, Any]:
    try:
        review = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReviewError(f"the body is not JSON: {error}") from None
    if not isinstance(review, Mapping):
        raise ReviewError("the body is not a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
        raise ReviewError(f"expected an AdmissionReview of {API_VERSION}, got kind {review.get('kind')!r} of "
                          f"{review.get('apiVersion')!r} (set admissionReviewVersions: [v1])")
    request = review.get("request")
    if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str) or not request["uid"]:
        raise ReviewError("the AdmissionReview has no request.uid")
    return request


def _review(response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}

