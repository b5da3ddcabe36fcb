"""Policy compiler benchmark: 1,000 Budgets across 50 cost centers, compiled to one signed bundle.

The objects are built once with the spendgate.api.v1alpha1 models (validated exactly as the
loader validates a manifest), then `compile_policies` runs several times and each run is timed.

    python bench/compile_bench.py           # prints JSON
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from typing import Any

from spendgate.api import v1alpha1 as api
from spendgate.policy.bundle import KeyEntry
from spendgate.policy.compiler import compile_policies

COST_CENTERS = 50
BUDGETS = 1000
DEVELOPERS_PER_CENTER = 12
NAMESPACES = 5
TIME_ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
PERIODS = ("Daily", "Weekly", "Monthly")


def cost_center(index: int) -> api.CostCenter:
    """Ten top-level centers, each the parent of four more."""
    parent = None if index < 10 else f"cc-{index % 10:02d}"
    members = [f"dev-{index:02d}-{number:02d}" for number in range(DEVELOPERS_PER_CENTER)]
    spec: dict[str, Any] = {"code": f"ENG-{1000 + index}", "displayName": f"Team {index}", "members": members,
                            "owners": [{"name": f"Owner {index}", "email": f"owner{index}@example.com"}]}
    if parent:
        spec["parent"] = parent
    return api.CostCenter.model_validate({"metadata": {"name": f"cc-{index:02d}"}, "spec": spec})


def routing_policy(namespace: str) -> api.RoutingPolicy:
    return api.RoutingPolicy.model_validate({
        "metadata": {"name": "cascade", "namespace": namespace},
        "spec": {"cascade": ["claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"],
                 "rules": [{"name": "haiku-when-low", "when": {"remainingUSDBelow": "50", "inputTokensBelow": 10000},
                            "then": {"useModel": "claude-haiku-5-5"}},
                           {"name": "down", "when": {"stateAtLeast": "Downgrade"}, "then": {"stepDown": 1}}]},
    })


def budget(index: int) -> api.Budget:
    """Per center: one CostCenter budget, then developers, repositories and keys."""
    center = index % COST_CENTERS
    slot = index // COST_CENTERS
    if slot == 0:
        scope: dict[str, Any] = {"kind": "CostCenter"}
    elif slot <= DEVELOPERS_PER_CENTER:
        scope = {"kind": "Developer", "name": f"dev-{center:02d}-{slot - 1:02d}"}
    elif slot % 2:
        scope = {"kind": "Repository", "name": f"acme/service-{center:02d}-{slot:02d}"}
    else:
        scope = {"kind": "VirtualKey", "name": f"key-{center:02d}-{slot:02d}"}
    namespace = f"team-{center % NAMESPACES}"
    return api.Budget.model_validate({
        "metadata": {"name": f"budget-{index:04d}", "namespace": namespace, "generation": 1},
        "spec": {"costCenter": f"cc-{center:02d}", "scope": scope, "limitUSD": f"{100 + index}.00",
                 "window": {"period": PERIODS[index % 3], "timeZone": TIME_ZONES[index % len(TIME_ZONES)]},
                 "enforcement": "DryRun" if index % 7 == 0 else "Enforce", "routingPolicyRef": "cascade"},
    })


def keys() -> list[KeyEntry]:
    return [KeyEntry(hash=hashlib.sha256(f"key-{center}-{number}".encode()).hexdigest(),
                     name=f"dev-{center:02d}-{number:02d}", developer=f"dev-{center:02d}-{number:02d}",
                     costCenter=f"cc-{center:02d}")
            for center in range(COST_CENTERS) for number in range(DEVELOPERS_PER_CENTER)]


def build_objects() -> list[api.PolicyObject]:
    objects: list[api.PolicyObject] = [cost_center(index) for index in range(COST_CENTERS)]
    objects += [routing_policy(f"team-{number}") for number in range(NAMESPACES)]
    objects += [budget(index) for index in range(BUDGETS)]
    return objects


def run(repeats: int) -> dict[str, Any]:
    started = time.perf_counter()
    objects = build_objects()
    key_entries = keys()
    build_seconds = time.perf_counter() - started
    timings = []
    result = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = compile_policies(objects, key_entries)
        timings.append(time.perf_counter() - started)
    assert result is not None
    return {
        "budgets": len(result.bundle.bundle.budgets),
        "cost_centers": len(result.bundle.bundle.costCenters),
        "keys": len(result.bundle.bundle.keys),
        "errors": [str(error) for error in result.errors],
        "build_objects_s": build_seconds,
        "compile_s": timings,
        "compile_median_s": statistics.median(timings),
        "compile_min_s": min(timings),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(json.dumps(run(args.repeats)))


if __name__ == "__main__":
    main()
