"""Changing any part of a JSON document, for property tests of readers (ledger lines, Admin API reports)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6)
    | st.sampled_from(["", "0.1", "1e3", "2026-11-24T09:12:03Z", "2026-11-24 09:12:03", "ok", "reroute", "-0"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a decoded JSON document (the document itself first)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += paths(inner, (*prefix, index))
    return found


def changed(document: Any, path: tuple[Any, ...], replacement: Any, remove: bool = False) -> None:
    """Put `replacement` at `path` in place (or remove the key there, where it is an object's)."""
    target = document
    for part in path[:-1]:
        target = target[part]
    if remove and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = replacement
