"""The Pareto front of a session's frames over all objectives (raw values, own directions)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


def dominates(
    a: Mapping[str, float], b: Mapping[str, float], directions: Mapping[str, str]
) -> bool:
    """True when ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    better = False
    for name, direction in directions.items():
        sign = 1.0 if direction == "maximize" else -1.0
        da, db = sign * a[name], sign * b[name]
        if da < db:
            return False
        better = better or da > db
    return better


def pareto_front(
    items: Sequence[T], values: Sequence[Mapping[str, float | None]], directions: Mapping[str, str]
) -> list[T]:
    """The items whose values no other item dominates; items with a missing value are left out."""
    complete = [
        (item, v)
        for item, v in zip(items, values, strict=True)
        if all(v.get(n) is not None and math.isfinite(v[n]) for n in directions)  # type: ignore[arg-type]
    ]
    return [
        item
        for item, v in complete
        if not any(dominates(other, v, directions) for _, other in complete if other is not v)  # type: ignore[arg-type]
    ]
