"""The pure half of injection: pod in, JSON patch out (no cluster)."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.operator.injector.patch import INJECTED, inject
from spendgate.operator.injector.review import ReviewError, answer
from spendgate.operator.injector.settings import SidecarSettings
from spendgate.operator.injector.sidecar import SIDECAR_NAME

SETTINGS = SidecarSettings(image="ghcr.io/acme/spendgate:0.1.0", reportNamespace="spendgate-system")
VERSION = "0.1.0"


def pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "dev", "annotations": annotations or {}},
            "spec": {"serviceAccountName": "default", "containers": [{"name": "app", "image": "app"}], **spec}}


def injected(source: dict[str, Any], settings: SidecarSettings = SETTINGS, opted_in: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = jsonpatch.apply_patch(source, inject(source, settings, "team", opted_in, VERSION).patch)
    return result


def test_classic_mode_adds_an_app_container_instead() -> None:
    result = injected(pod(), SETTINGS.model_copy(update={"mode": "Classic"}))

    assert [c["name"] for c in result["spec"]["containers"]] == ["app", SIDECAR_NAME]
    assert "restartPolicy" not in result["spec"]["containers"][1]
    assert "initContainers" not in result["spec"]


def test_mounted_bundle_mode_reads_the_configmap_volume() -> None:
    result = injected(pod(), SETTINGS.model_copy(update={"bundleSource": "Mount"}))
    proxy = result["spec"]["initContainers"][0]

    assert "--bundle=/etc/spendgate/bundle" in proxy["args"]
    assert {"name": "spendgate-bundle", "configMap": {"name": "spendgate-bundle"}} in result["spec"]["volumes"]


def test_the_pods_own_init_containers_keep_their_order_and_env_is_merged() -> None:
    source = pod(initContainers=[{"name": "migrate", "image": "m"}])
    source["spec"]["containers"][0]["env"] = [{"name": "ANTHROPIC_BASE_URL", "value": "https://api.anthropic.com"},
                                              {"name": "EDITOR", "value": "vim"}]
    result = injected(source)

    assert [c["name"] for c in result["spec"]["initContainers"]] == ["migrate", SIDECAR_NAME]
    assert result["spec"]["containers"][0]["env"] == [{"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:8787"},
                                                      {"name": "EDITOR", "value": "vim"}]


def test_a_container_added_after_injection_gets_its_environment_on_reinvocation() -> None:
    first = injected(pod())
    first["spec"]["containers"].append({"name": "added-later", "image": "x"})

    result = inject(first, SETTINGS, "team", True, VERSION)

    assert result.outcome == "updated"
    assert result.patch == [{"op": "add", "path": "/spec/containers/1/env",
                             "value": [{"name": "ANTHROPIC_BASE_URL", "value": "http://127.0.0.1:8787"}]}]


@pytest.mark.parametrize(("change", "reason"), [
    ({"hostNetwork": True}, "host's network"),
    ({"volumes": [{"name": "spendgate-state", "emptyDir": {}}]}, "volume named spendgate-state"),
    ({"containers": [{"name": "app", "image": "a", "ports": [{"containerPort": 8787}]}]}, "declares port 8787"),
    ({"containers": "app"}, "no containers list"),
    ({"initContainers": {"name": "x"}}, "initContainers is not a list"),
])
def test_pods_that_cannot_take_the_sidecar_are_left_alone_with_a_warning(change: dict[str, Any],
                                                                          reason: str) -> None:
    result = inject(pod(**change), SETTINGS, "team", True, VERSION)

    assert result.outcome == "refused" and result.patch == []
    assert reason in result.warnings[0]


def test_an_app_container_reading_the_organisations_key_is_warned_about() -> None:
    source = pod(volumes=[{"name": "key", "secret": {"secretName": "anthropic-upstream-key"}}])
    source["spec"]["containers"][0]["volumeMounts"] = [{"name": "key", "mountPath": "/key"}]

    warnings = inject(source, SETTINGS, "team", True, VERSION).warnings

    assert warnings and "container app reads Secret anthropic-upstream-key" in warnings[0]


def test_opt_in_rules() -> None:
    assert inject(pod(), SETTINGS, "team", False, VERSION).outcome == "not-wanted"
    assert inject(pod({"spendgate.io/inject": "true"}), SETTINGS, "team", False, VERSION).outcome == "injected"
    assert inject(pod({"spendgate.io/inject": "false"}), SETTINGS, "team", True, VERSION).outcome == "not-wanted"
    assert inject(pod({"spendgate.io/inject": "True"}), SETTINGS, "team", False, VERSION).outcome == "not-wanted"


def test_a_pod_without_a_service_account_gets_the_default_one_for_the_sidecars_token() -> None:
    source = pod()
    del source["spec"]["serviceAccountName"]

    assert injected(source)["spec"]["serviceAccountName"] == "default"


def review(obj: Any, **request: Any) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                                   "operation": "CREATE", "namespace": "team", "object": obj, **request}}).encode()


def test_the_review_answer_is_an_admission_review_with_a_base64_json_patch() -> None:
    result = answer(review(pod()), SETTINGS, True, VERSION)
    response = result.review["response"]

    assert result.review["apiVersion"] == "admission.k8s.io/v1" and result.review["kind"] == "AdmissionReview"
    assert response["uid"] == "u-1" and response["allowed"] is True and response["patchType"] == "JSONPatch"
    assert jsonpatch.apply_patch(pod(), json.loads(base64.b64decode(response["patch"])))["metadata"][
        "annotations"][INJECTED] == VERSION


def test_anything_but_a_pod_creation_is_allowed_untouched() -> None:
    for changed in ({"operation": "UPDATE"}, {"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}}):
        result = answer(review(pod(), **changed), SETTINGS, True, VERSION)
        assert result.outcome == "not-a-pod" and result.review["response"] == {"uid": "u-1", "allowed": True}


@pytest.mark.parametrize(("body", "message"), [
    (b"\xff", "not JSON"),
    (b"[]", "not a JSON object"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}).encode(),
     "admissionReviewVersions: \\[v1\\]"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}).encode(),
     "no request.uid"),
])
def test_a_body_that_is_not_an_admission_review_is_refused_by_name(body: bytes, message: str) -> None:
    with pytest.raises(ReviewError, match=message):
        answer(body, SETTINGS, True, VERSION)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=3), max_leaves=12)
containers = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["app", "side", SIDECAR_NAME])},
                                            optional={"env": st.lists(st.fixed_dictionaries(
                                                {"name": st.sampled_from(["ANTHROPIC_BASE_URL", "X"])},
                                                optional={"value": st.text(max_size=5)}), max_size=3) | json_values,
                                                      "ports": json_values}), max_size=3)
pods = st.fixed_dictionaries({}, optional={
    "metadata": st.fixed_dictionaries({}, optional={"annotations": st.dictionaries(
        st.sampled_from(["spendgate.io/inject", "spendgate.io/injected", "spendgate.io/virtual-key-secret", "a"]),
        st.sampled_from(["true", "false", "key-secret", VERSION]), max_size=3) | json_values}) | json_values,
    "spec": st.fixed_dictionaries({}, optional={"containers": containers | json_values,
                                                "initContainers": containers | json_values,
                                                "volumes": json_values, "hostNetwork": st.booleans()}) | json_values,
})


@settings(max_examples=300, deadline=None)
@given(pods, st.booleans())
def test_any_pod_gets_a_patch_that_applies_and_a_second_pass_adds_nothing(source: dict[str, Any],
                                                                          opted_in: bool) -> None:
    first = inject(source, SETTINGS, "team", opted_in, VERSION)
    patched = jsonpatch.apply_patch(source, first.patch)  # raises if the patch does not fit the pod

    second = inject(patched, SETTINGS, "team", opted_in, VERSION)

    assert second.patch == []
    if first.outcome == "injected":
        assert sum(c.get("name") == SIDECAR_NAME for kind in ("initContainers", "containers")
                   for c in patched["spec"].get(kind, [])) == 1
